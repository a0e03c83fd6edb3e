"""The fixed detector builder: architecture JSON -> torchvision ``FasterRCNN``. Needs no NNI."""

from __future__ import annotations

import os

from torch import nn

from hitdet.architecture import Architecture, load_architecture
from search_spaces.components import fixed_block_factory
from search_spaces.kinds import detector_kind


def build_detector(arch: Architecture | str | os.PathLike[str]) -> nn.Module:
    """Build the detector an architecture describes, with the op it chooses at every searched position.

    The detector kind (``detector.type``, :mod:`search_spaces.kinds`) builds it: "faster_rcnn" (the
    two-stage Hit-Detector) a torchvision ``FasterRCNN``; "retinanet" (the one-stage variant, paper
    Table 6) a ``RetinaNet`` whose head towers are ``head.blocks`` (classification tower first).

    Args:
        arch: an :class:`~hitdet.architecture.Architecture`, an architecture JSON path or a preset name.

    Returns:
        The detector (a torchvision detection model), in training mode, with fresh weights.
    """
    if not isinstance(arch, Architecture):
        arch = load_architecture(arch)
    return detector_kind(arch.detector_type).build(arch.structure, arch.settings, fixed_block_factory(arch.sample()))
