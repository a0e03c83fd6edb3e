"""Retraining: the Lightning DetectionModule (shared with the search), config, schedule, runner.

``DetectionModule`` and ``train`` import NNI and Lightning, so they are loaded on first use.
"""

from __future__ import annotations

from typing import Any

from hitdet.config import parse_override
from hitdet.training.config import RECIPES, TrainConfig, load_config, save_config
from hitdet.training.schedule import warmup_step_factor
from hitdet.weights.detector import load_weights, read_state_dict, save_weights

__all__ = [
    "RECIPES",
    "DetectionModule",
    "TrainConfig",
    "load_config",
    "load_weights",
    "make_eval_loader",
    "make_train_loader",
    "parse_override",
    "prepare_architecture",
    "read_state_dict",
    "save_config",
    "save_weights",
    "train",
    "warmup_step_factor",
]

_LAZY = {
    "DetectionModule": "hitdet.training.module",
    "train": "hitdet.training.runner",
    "make_train_loader": "hitdet.data.loaders",
    "make_eval_loader": "hitdet.data.loaders",
    "prepare_architecture": "hitdet.training.runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
