"""Hit-Detector search spaces: the 32-op pool, component skeletons and NNI spaces.

The op pool, the structures and the component skeletons need only torch/torchvision (the
fixed detector builder uses them); the NNI spaces are imported on first use, so that
``import search_spaces`` does not import NNI.
"""

from __future__ import annotations

import importlib
from typing import Any

from search_spaces.ops import OP_NAMES, OPS, Cost, OpSpec, build_op, op_cost
from search_spaces.structure import DetectorStructure, FixedLayer, Slot

__all__ = [
    "OPS",
    "OP_NAMES",
    "OpSpec",
    "Cost",
    "build_op",
    "op_cost",
    "DetectorStructure",
    "FixedLayer",
    "Slot",
]

# name -> module that defines it; these modules import NNI.
_LAZY: dict[str, str] = {}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")
