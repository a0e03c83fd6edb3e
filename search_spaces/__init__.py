"""Hit-Detector search spaces: the 32-op pool, component skeletons and NNI spaces.

The op pool, the structures and the component skeletons need only torch/torchvision (the
fixed detector builder uses them); the NNI spaces are imported on first use, so that
``import search_spaces`` does not import NNI: ``search_spaces.TrinitySpace`` (and the other
names in ``_LAZY``) import it on first access, with NNI's import-time warnings filtered.

Kinds of necks and detectors are registered by name (:mod:`search_spaces.kinds`); importing this
package registers the built-in ones: the PANet neck (:mod:`search_spaces.panet`) and the
``faster_rcnn`` and ``retinanet`` detectors (:mod:`search_spaces.detectors`).
"""

from __future__ import annotations

import importlib
from typing import Any

from search_spaces import detectors as _detectors  # noqa: F401 - registers faster_rcnn and retinanet
from search_spaces import panet as _panet  # noqa: F401 - registers the PANet neck
from search_spaces.kinds import (
    DetectorKind,
    NeckKind,
    detector_kind,
    detector_types,
    neck_kind,
    neck_types,
    register_detector,
    register_neck,
)
from search_spaces.ops import OP_NAMES, OPS, Cost, OpSpec, build_op, op_cost
from search_spaces.positions import (
    Position,
    SpaceError,
    candidate_macs,
    detector_choices,
    detector_positions,
    normalize_ops,
)
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
    "Position",
    "candidate_macs",
    "detector_choices",
    "detector_positions",
    "normalize_ops",
    "SpaceError",
    "NeckKind",
    "DetectorKind",
    "register_neck",
    "register_detector",
    "neck_kind",
    "detector_kind",
    "neck_types",
    "detector_types",
]

# name -> module that defines it, imported on first access. The NNI spaces import NNI (so they
# stay out of __all__); the HPO export is lazy so that `python -m search_spaces.hpo` runs cleanly.
_LAZY: dict[str, str] = {
    "hpo_search_space": "search_spaces.hpo",
    "detector_hpo_search_space": "search_spaces.hpo",
    "write_hpo_search_space": "search_spaces.hpo",
    "sample_from_hpo": "search_spaces.hpo",
    "SpaceInfo": "search_spaces.spaces",
    "BackboneSpace": "search_spaces.spaces",
    "NeckSpace": "search_spaces.spaces",
    "neck_space_class": "search_spaces.spaces",
    "HeadSpace": "search_spaces.spaces",
    "TrinitySpace": "search_spaces.spaces",
    "space_info": "search_spaces.spaces",
    "RetinaNetSpace": "search_spaces.onestage",
    "RetinaHeadSpace": "search_spaces.onestage",
    "layer_choice_factory": "search_spaces.choices",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")
