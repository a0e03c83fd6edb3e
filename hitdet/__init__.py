"""Hit-Detector: the detector builder, data, training, evaluation and CLI."""

from hitdet.architecture import Architecture, ArchitectureError, load_architecture, preset_names
from hitdet.builder import build_detector

__all__ = ["Architecture", "ArchitectureError", "build_detector", "load_architecture", "preset_names"]
