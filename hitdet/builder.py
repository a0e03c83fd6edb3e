"""The fixed detector builder: architecture JSON -> torchvision ``FasterRCNN``. Needs no NNI."""

from __future__ import annotations

import os

from torchvision.models.detection import FasterRCNN, RetinaNet

from hitdet.architecture import Architecture, load_architecture
from search_spaces.components import fixed_block_factory
from search_spaces.detectors import faster_rcnn, retinanet


def build_detector(arch: Architecture | str | os.PathLike[str]) -> FasterRCNN | RetinaNet:
    """Build the detector an architecture describes (a loaded one, a JSON path or a preset name).

    ``detector.type`` "faster_rcnn" (the two-stage Hit-Detector) gives a ``FasterRCNN``;
    "retinanet" (the one-stage variant, paper Table 6) a ``RetinaNet`` whose head towers are
    ``head.blocks`` (classification tower first, then box regression).
    """
    if not isinstance(arch, Architecture):
        arch = load_architecture(arch)
    make_block = fixed_block_factory(arch.sample())
    if arch.detector_type == "retinanet":
        return retinanet(arch.structure, arch.settings, make_block)
    return faster_rcnn(arch.structure, arch.settings, make_block)
