"""Hit-Detector: the detector builder, data, training, evaluation and CLI."""

from importlib.metadata import PackageNotFoundError, version

from hitdet.architecture import Architecture, ArchitectureError, load_architecture, preset_names
from hitdet.builder import build_detector

try:  # one source of truth: pyproject's version, as installed
    __version__ = version("hitdet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "Architecture", "ArchitectureError", "build_detector", "load_architecture", "preset_names"]
