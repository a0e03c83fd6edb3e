"""Retraining: the Lightning DetectionModule (shared with the search), config, schedule, runner.

``DetectionModule`` imports Lightning and NNI, so it is loaded on first use.
"""

from __future__ import annotations

from typing import Any

from hitdet.config import parse_override
from hitdet.data.loaders import make_eval_loader, make_train_loader
from hitdet.training.config import RECIPES, TrainConfig, load_config, save_config
from hitdet.training.runner import prepare_architecture, train
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


def __getattr__(name: str) -> Any:
    if name == "DetectionModule":
        from hitdet.training.module import DetectionModule

        return DetectionModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
