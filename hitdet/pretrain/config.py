"""Hyper-parameters of a pretraining run: the paper's recipes as defaults, YAML files, overrides.

The paper fixes only the epochs (Sec. 4.2): the backbone supernet is pretrained on ImageNet
for 10 epochs with the architecture parameters fixed, the searched backbone for 300 epochs.
It uses SGD with momentum 0.9 and a cosine schedule for every weight update of the search;
we use the same optimiser and schedule for pretraining. Batch size, learning rate, weight
decay, augmentation and label smoothing are not stated for pretraining: ours, documented here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from hitdet.config import config_layers, parse_override, update_values
from hitdet.errors import UserError


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

def _update(values: dict[str, Any], updates: Any, source: str) -> None:
    update_values(PretrainConfig, values, updates, source)


def load_config(
    config: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    *,
    recipe: str = "supernet",
    **explicit: Any,
) -> PretrainConfig:
    """Recipe ``recipe`` (or ``config`` when it names a recipe), then a YAML file ``config``, ``--set``, flags.

    A YAML file is a flat mapping of :class:`PretrainConfig` keys on top of ``recipe``;
    ``recipe: NAME`` in it starts from that recipe instead. Unknown keys and wrong types raise UserError naming the
    key and the file (or option) they came from. ``explicit`` values that are None are ignored.
    """
    layers = config_layers(config, RECIPES)
    if layers and layers[0][1].startswith("recipe "):
        recipe = layers[0][1].removeprefix("recipe ")
        layers = layers[1:]
    values = PretrainConfig().to_dict()
    _update(values, RECIPES[recipe], f"recipe {recipe}")
    for data, source in layers:
        _update(values, data, source)
    for text in overrides or []:
        key, value = parse_override(text)
        _update(values, {key: value}, "--set")
    _update(values, {k: v for k, v in explicit.items() if v is not None}, "option")
    cfg = PretrainConfig(**values)
    validate_config(cfg)
    return cfg


def validate_config(cfg: PretrainConfig) -> None:
    """Range checks that a type check cannot do."""
    for key in ("epochs", "batch_size", "image_size", "log_every_n_steps"):
        if getattr(cfg, key) < 1:
            raise UserError(f"config: {key}: must be a positive integer, got {getattr(cfg, key)}")
    if cfg.num_workers < 0:
        raise UserError(f"config: num_workers: must be >= 0, got {cfg.num_workers}")
    if cfg.lr <= 0:
        raise UserError(f"config: lr: must be positive, got {cfg.lr}")
    for key in ("momentum", "label_smoothing"):
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise UserError(f"config: {key}: must be in [0, 1), got {getattr(cfg, key)}")
    for key in ("crop_scale", "val_crop_ratio"):
        if not 0.0 < getattr(cfg, key) <= 1.0:
            raise UserError(f"config: {key}: must be in (0, 1], got {getattr(cfg, key)}")
    if cfg.weight_decay < 0 or cfg.min_lr < 0 or cfg.warmup_epochs < 0:
        raise UserError("config: weight_decay, min_lr and warmup_epochs must be >= 0")
    if cfg.warmup_epochs >= cfg.epochs:
        raise UserError(f"config: warmup_epochs ({cfg.warmup_epochs}) must be less than epochs ({cfg.epochs})")
    if cfg.keep_checkpoints == 0 or cfg.keep_checkpoints < -1:
        raise UserError(f"config: keep_checkpoints: must be positive or -1 (all), got {cfg.keep_checkpoints}")
