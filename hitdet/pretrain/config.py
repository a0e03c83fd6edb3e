"""Hyper-parameters of a pretraining run: the paper's recipes as defaults, YAML files, overrides.

The paper fixes only the epochs (Sec. 4.2): the backbone supernet is pretrained on ImageNet
for 10 epochs with the architecture parameters fixed, the searched backbone for 300 epochs.
It uses SGD with momentum 0.9 and a cosine schedule for every weight update of the search;
we use the same optimiser and schedule for pretraining. Batch size, learning rate, weight
decay, augmentation and label smoothing are not stated for pretraining: ours, documented here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from hitdet.config import load, require
from hitdet.training.config import PRECISIONS


@dataclass
class PretrainConfig:
    """One pretraining run. ``lr`` is for 256 images per step and scales with the total batch."""

    epochs: int = 10  # paper: 10 for the supernet ("supernet" recipe), 300 for the searched backbone
    batch_size: int = 64  # images per device per step
    lr: float = 0.1  # for a total batch of 256 images; the run uses lr * batch_size * devices / 256
    momentum: float = 0.9  # paper (all weight updates)
    nesterov: bool = False
    weight_decay: float = 4e-5
    label_smoothing: float = 0.0  # 0 disables; 0.1 is the usual value for long runs
    warmup_epochs: float = 0.0  # linear warm-up before the cosine decay (fractions allowed)
    min_lr: float = 0.0  # the cosine schedule ends at this learning rate
    image_size: int = 224  # training crop and validation centre crop, in pixels
    val_crop_ratio: float = 0.875  # validation: resize the shorter side to image_size / ratio, centre crop
    crop_scale: float = 0.08  # smallest area fraction of the RandomResizedCrop (1.0: whole image)
    hflip: bool = True
    num_workers: int = 8
    seed: int = 0
    precision: str = "32-true"  # Lightning precision, e.g. "16-mixed" or "bf16-mixed" on GPUs
    sync_batchnorm: bool = False  # with DDP: BatchNorm statistics over all devices
    keep_checkpoints: int = 3  # per-epoch checkpoints kept (the newest); -1 keeps all
    log_every_n_steps: int = 50
    max_steps: int = -1  # stop after this many optimiser steps (-1: run all epochs); smoke runs

    def __post_init__(self) -> None:
        """Every range, checked once here: ``ValueError("field: why, got value")`` (the loader names the source)."""
        for key in ("epochs", "batch_size", "image_size", "log_every_n_steps"):
            require(self, key, "must be a positive integer", lambda v: v >= 1)
        for key in ("lr", "momentum", "weight_decay", "label_smoothing", "warmup_epochs", "min_lr", "val_crop_ratio",
                    "crop_scale"):
            require(self, key, "must be a finite number", lambda v: math.isfinite(v))
        require(self, "num_workers", "must be >= 0", lambda v: v >= 0)
        require(self, "lr", "must be positive", lambda v: v > 0)
        for key in ("momentum", "label_smoothing"):
            require(self, key, "must be in [0, 1)", lambda v: 0.0 <= v < 1.0)
        for key in ("crop_scale", "val_crop_ratio"):
            require(self, key, "must be in (0, 1]", lambda v: 0.0 < v <= 1.0)
        for key in ("weight_decay", "min_lr", "warmup_epochs"):
            require(self, key, "must be >= 0", lambda v: v >= 0)
        require(self, "warmup_epochs", f"must be less than epochs ({self.epochs})", lambda v: v < self.epochs)
        require(self, "keep_checkpoints", "must be positive or -1 (all)", lambda v: v == -1 or v >= 1)
        require(self, "seed", "must be in [0, 2**32)", lambda v: 0 <= v < 2**32)
        require(self, "max_steps", "must be positive or -1 (all epochs)", lambda v: v == -1 or v >= 1)
        require(self, "precision", f"expected one of {', '.join(PRECISIONS)}", lambda v: v in PRECISIONS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def total_lr(self, world_size: int = 1) -> float:
        """The learning rate after linear scaling by the total batch size."""
        return self.lr * self.batch_size * world_size / 256


# Built-in recipes: ``--config NAME``. "supernet" and "searched" are the paper's two
# pretraining runs; the CLI picks one by target when no config is given.
RECIPES: dict[str, dict[str, Any]] = {
    "supernet": {"epochs": 10},
    "searched": {"epochs": 300},
    # Tiny CPU smoke runs on `hitdet data synth-cls` (the demo, the tests).
    "synth-cpu": {
        "epochs": 8,
        "batch_size": 16,
        "lr": 0.8,
        "image_size": 32,
        "crop_scale": 0.5,
        "num_workers": 0,
        "log_every_n_steps": 5,
        "label_smoothing": 0.0,
        "warmup_epochs": 0.0,
    },
}


def load_config(
    config: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    *,
    recipe: str = "supernet",
    flags: dict[str, tuple[str, Any]] | None = None,
    **explicit: Any,
) -> PretrainConfig:
    """Recipe ``recipe`` (or ``config`` when it names a recipe), then a YAML file ``config``, ``--set``, flags.

    A YAML file is a flat mapping of :class:`PretrainConfig` keys on top of ``recipe``;
    ``recipe: NAME`` in it starts from that recipe instead. The loader is :func:`hitdet.config.load`:
    unknown keys and wrong types raise UserError naming the key and the file (or option) they came
    from. ``explicit`` values that are None are ignored.
    """
    return load(PretrainConfig, RECIPES, config, overrides or [], explicit=explicit, flags=flags,
                default_recipe=recipe)
