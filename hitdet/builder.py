"""The fixed detector builder: architecture JSON -> torchvision ``FasterRCNN``. Needs no NNI."""

from __future__ import annotations

import os

from torchvision.models.detection import FasterRCNN

from hitdet.architecture import Architecture, load_architecture
from search_spaces.components import fixed_block_factory
from search_spaces.detectors import faster_rcnn


def build_detector(arch: Architecture | str | os.PathLike[str]) -> FasterRCNN:
    """Build the detector an architecture describes (a loaded one, a JSON path or a preset name)."""
    if not isinstance(arch, Architecture):
        arch = load_architecture(arch)
    return faster_rcnn(arch.structure, arch.settings, fixed_block_factory(arch.sample()))
