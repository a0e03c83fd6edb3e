"""Backbone pretraining on ImageNet-style classification data (paper Sec. 4.2).

Two targets: a backbone supernet with its architecture parameters fixed and uniform (before
screening and before the trinity search, 10 epochs in the paper) and a fixed architecture's
backbone (before retraining the detector, 300 epochs in the paper). The result is a weights
file that :func:`load_backbone_weights` loads into a supernet or a fixed detector.

Lightning is imported only by :func:`run_pretraining` (and :mod:`hitdet.pretrain.module`), NNI
only when a supernet is built.
"""

from hitdet.pretrain.config import RECIPES, PretrainConfig, load_config
from hitdet.pretrain.data import ClassificationData, load_classification_data
from hitdet.pretrain.model import (
    BackboneClassifier,
    PretrainTarget,
    UniformMixture,
    architecture_target,
    build_backbone_supernet,
    make_uniform,
    parse_space_ops,
    supernet_target,
)
from hitdet.pretrain.runner import run_pretraining
from hitdet.pretrain.synth import register_synth_cls, write_synthetic_classification
from hitdet.weights.backbone import (
    BackboneWeights,
    LoadReport,
    extract_architecture,
    load_backbone_weights,
    read_backbone_weights,
    save_backbone_weights,
)

__all__ = [
    "RECIPES",
    "BackboneClassifier",
    "BackboneWeights",
    "ClassificationData",
    "LoadReport",
    "PretrainConfig",
    "PretrainTarget",
    "UniformMixture",
    "architecture_target",
    "build_backbone_supernet",
    "extract_architecture",
    "load_backbone_weights",
    "load_classification_data",
    "load_config",
    "make_uniform",
    "parse_space_ops",
    "read_backbone_weights",
    "register_synth_cls",
    "run_pretraining",
    "save_backbone_weights",
    "supernet_target",
    "write_synthetic_classification",
]
