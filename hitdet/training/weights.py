"""Detector weight files: moved to :mod:`hitdet.weights.detector` (below training, pretraining and the commands).

Kept so that ``from hitdet.training.weights import load_weights`` (benchmarks, earlier scripts) still works.
"""

from hitdet.weights.detector import WEIGHTS_FORMAT, load_weights, read_state_dict, save_weights

__all__ = ["WEIGHTS_FORMAT", "load_weights", "read_state_dict", "save_weights"]
