"""Retraining hyper-parameters: a dataclass, built-in recipes, YAML files and ``key=value`` overrides.

Learning rate: the paper retrains with lr 0.04 for 32 images per step (0.02 for 16), so by
default ``lr = base_lr * total_batch / base_batch`` with ``base_lr = 0.04``,
``base_batch = 32`` and ``total_batch = batch_size x devices`` (the linear scaling rule).
Set ``lr`` to use a fixed value instead.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hitdet.config import coerce, did_you_mean, is_int, is_real, load, require
from hitdet.errors import UserError
from hitdet.io import write_yaml_atomic
from search_spaces.detectors import DetectorSettings

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")  # what --precision offers (Lightning's names)


@dataclass
class TrainConfig:
    """Hyper-parameters of a retraining run; the defaults are the paper's 1x schedule."""

    epochs: int = 12
    batch_size: int = 2  # images per device per step
    lr: float | None = None  # None: base_lr * batch_size * devices / base_batch
    base_lr: float = 0.04
    base_batch: int = 32
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500  # linear warm-up, in optimiser steps (mmdetection's 1x default)
    warmup_ratio: float = 1.0 / 3  # lr factor at step 0 of the warm-up
    schedule: str = "step"  # "step": x gamma at the milestones (retraining); "cosine": to 0 (the search)
    milestones: list[int] = field(default_factory=lambda: [8, 11])  # epochs where lr *= gamma
    gamma: float = 0.1
    grad_clip_norm: float = 35.0  # max gradient L2 norm; 0 disables clipping
    hflip_prob: float = 0.5
    # A channel multiplier, only where asked for: None trains an architecture JSON at the channels it states.
    width: float | None = None
    # The multiplier of a shipped preset (released channels, sized for COCO) when ``width`` is not set;
    # synth-cpu: 0.125, so that `hitdet train hit-detector --config synth-cpu` fits a CPU. Presets only.
    preset_width: float = 1.0
    half_depth: bool = False  # keep every other backbone block (4+4+8+4 -> 2+2+4+2), like screening
    num_workers: int = 0
    seed: int = 0
    eval_batch_size: int = 4
    keep_checkpoints: int = 3  # per-epoch checkpoints kept (the newest); -1 keeps all
    backend: str = "pycocotools"  # COCO evaluation backend for validation
    precision: str = "32-true"  # Lightning precision: 32-true, bf16-mixed or 16-mixed (GPUs; bf16 on CPU)
    steps_per_epoch: int | None = None  # cap on batches per epoch (Lightning's limit_train_batches)
    log_every_n_steps: int = 20  # a line in RUN/log.txt every N steps (and TensorBoard's step scalars, at most)
    # DetectorSettings overrides (min_size, max_size, rpn_post_nms_top_n_train,
    # box_batch_size_per_image, ...): fewer proposals and RoIs train much faster on CPU.
    detector: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every range, checked once here: ``ValueError("field: why, got value")`` (the loader names the source)."""
        for key in ("epochs", "batch_size", "base_batch", "eval_batch_size", "log_every_n_steps"):
            require(self, key, "must be a positive integer", lambda v: is_int(v) and v >= 1)
        for key in ("lr", "base_lr", "width", "preset_width", "momentum", "weight_decay", "warmup_ratio", "gamma",
                    "grad_clip_norm", "hflip_prob"):
            require(self, key, "must be a finite number", is_real, optional=key in ("lr", "width"))
        for key in ("width", "preset_width", "lr", "base_lr"):
            require(self, key, "must be positive", lambda v: v > 0, optional=key in ("lr", "width"))
        for key in ("momentum", "weight_decay", "gamma", "grad_clip_norm", "warmup_iters", "num_workers"):
            require(self, key, "must be >= 0", lambda v: v >= 0)
        require(self, "seed", "must be in [0, 2**32)", lambda v: is_int(v) and 0 <= v < 2**32)
        require(self, "precision", f"expected one of {', '.join(PRECISIONS)}", lambda v: v in PRECISIONS)
        require(self, "steps_per_epoch", "must be a positive integer", lambda v: is_int(v) and v >= 1,
                 optional=True)
        require(self, "keep_checkpoints", "must be positive or -1 (all)", lambda v: v == -1 or v >= 1)
        require(self, "hflip_prob", "must be between 0 and 1", lambda v: 0.0 <= v <= 1.0)
        require(self, "milestones", "must be increasing", lambda v: sorted(v) == list(v))
        require(self, "schedule", "expected 'step' or 'cosine'", lambda v: v in ("step", "cosine"))
        require(self, "backend", "unknown evaluation backend", lambda v: v in ("pycocotools", "faster-coco-eval"))
        self.detector = self.__config_check__("detector", self.detector)

    @staticmethod
    def __config_check__(key: str, value: Any) -> Any:
        """``detector``: each key a DetectorSettings field, its type and range DetectorSettings' own."""
        if key != "detector":
            return value
        types_ = DetectorSettings.field_types()
        out = {}
        for name, item in dict(value).items():
            if name not in types_:
                raise ValueError(f"detector.{name}: unknown detector setting{did_you_mean(name, types_)} "
                                 f"(known: {', '.join(types_)})")
            try:
                out[name] = coerce(item, types_[name], f"detector.{name}")
            except UserError as exc:
                raise ValueError(str(exc)) from None
            try:  # the ranges are DetectorSettings' own (the architecture JSON is checked by the same)
                dataclasses.replace(DetectorSettings(), **{name: out[name]}).validate()
            except ValueError as exc:
                if not str(exc).startswith("num_classes"):  # the data decides the classes (checked later)
                    raise ValueError(f"detector.{exc}") from None
        try:
            dataclasses.replace(DetectorSettings(), **out).validate()  # the keys together (min_size <= max_size)
        except ValueError as exc:
            if not str(exc).startswith("num_classes"):
                raise ValueError(f"detector.{exc}") from None
        return out

    def total_lr(self, world_size: int = 1) -> float:
        """The learning rate after linear scaling by the total batch size."""
        if self.lr is not None:
            return self.lr
        return self.base_lr * self.batch_size * world_size / self.base_batch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def apply_to_settings(self, settings: DetectorSettings) -> DetectorSettings:
        """The architecture's detector settings with this config's ``detector`` overrides."""
        return dataclasses.replace(settings, **self.detector)


# Built-in recipes, by name: ``--config NAME`` (or a YAML path).
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    # The small-input CPU recipe of the synthetic dataset (benchmarks/train_synth.py, the demo):
    # 128-px inputs, few proposals and RoIs, 16 short epochs; a shipped preset (the released 27M-parameter
    # detector) at 1/8 width. An architecture JSON (a search's) keeps the channels it states. Tuned on the
    # synthetic set: lr 0.02 at 4 images per step (5x the paper's linear scaling, fine from scratch with
    # BN) and 64 RoIs per image learn; lr 0.04 with 32 RoIs per image did not.
    "synth-cpu": {
        "epochs": 16,
        "batch_size": 4,
        "lr": 0.02,
        "warmup_iters": 100,
        "warmup_ratio": 0.1,
        "milestones": [12, 15],
        "preset_width": 0.125,  # presets only (see TrainConfig.preset_width)
        "eval_batch_size": 8,
        "detector": {
            "min_size": 128,
            "max_size": 160,
            "anchor_base": 16,
            "rpn_pre_nms_top_n_train": 600,
            "rpn_post_nms_top_n_train": 300,
            "rpn_pre_nms_top_n_test": 300,
            "rpn_post_nms_top_n_test": 100,
            "rpn_batch_size_per_image": 128,
            "box_batch_size_per_image": 64,
            "box_detections_per_img": 50,
        },
    },
}


def load_config(
    config: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    *,
    flags: dict[str, tuple[str, Any]] | None = None,
    **explicit: Any,
) -> TrainConfig:
    """A config from a recipe name or YAML file, then ``--set`` overrides, then explicit flags.

    The loader is :func:`hitdet.config.load` (the one every command uses): unknown keys and wrong
    types raise UserError naming the key and where it came from. ``explicit`` values that are None
    are ignored (flags not given).

    Args:
        config: a built-in recipe (``"paper"``, ``"synth-cpu"``), a YAML file, or None (the defaults, the
            paper's 1x schedule).
        overrides: ``--set`` strings, ``["epochs=2", "detector.min_size=128"]``.
        flags: the command's flags, ``{"--epochs": ("epochs", 2)}``, named by the flag in errors.
        **explicit: fields set last (``epochs=2``).

    Returns:
        The resolved, range-checked :class:`TrainConfig`.

    Raises:
        UserError: an unknown recipe or key, a wrong type or a value out of range (one line, naming where).
    """
    return load(TrainConfig, RECIPES, config, overrides or [], explicit=explicit, flags=flags)


def save_config(cfg: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (atomically), so a run says exactly how it was trained."""
    return write_yaml_atomic(path, cfg.to_dict())
