"""Reusing the component spaces in other detectors (torchvision FCOS) and the one-stage RetinaNet space."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.feature_extraction import create_feature_extractor

from hitdet.architecture import Architecture, ArchitectureError, from_dict
from hitdet.builder import build_detector
from search_spaces import BackboneSpace, DetectorStructure, NeckSpace, RetinaNetSpace
from search_spaces.components import BackboneWithNeck, build_backbone, build_neck, fixed_block_factory
from search_spaces.detectors import DetectorSettings

nni_space = pytest.importorskip("nni.nas.space")
from nni.nas.nn.pytorch import ModelSpace  # noqa: E402

model_context = nni_space.model_context

TINY = DetectorStructure().scaled(0.125).half_depth()
OPS = {"backbone": ["ir_k3_e3", "skip"], "neck": ["sep_k3", "conv_k1"]}
IMAGES = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
TARGETS = [
    {"boxes": torch.tensor([[5.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
    {"boxes": torch.tensor([[10.0, 12.0, 30.0, 60.0]]), "labels": torch.tensor([2])},
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fcos(backbone: nn.Module) -> FCOS:
    anchors = AnchorGenerator(tuple((8 * 2**i,) for i in range(5)), ((1.0,),) * 5)  # one point per location
    return FCOS(backbone, num_classes=3, min_size=64, max_size=96, anchor_generator=anchors)


class FCOSWithHitDetSpaces(ModelSpace):
    """A user's own space: torchvision FCOS fed by the Hit-Detector backbone and neck spaces."""

    def __init__(self, structure: DetectorStructure) -> None:
        super().__init__()
        body = BackboneSpace(structure, OPS)
        neck = NeckSpace(structure, OPS, in_channels=body.out_channels)  # 4 levels + "pool": 5 for FCOS
        self.detector = fcos(BackboneWithNeck(body, neck))

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None) -> dict | list:
        return self.detector(images, targets)


def test_backbone_and_neck_spaces_inside_torchvision_fcos() -> None:
    space = FCOSWithHitDetSpaces(TINY)
    assert list(space.simplify()) == TINY.backbone_labels() + TINY.neck_labels()
    losses = space.train()(IMAGES, TARGETS)  # the supernet's dry run trains
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    sample = {label: m.values[-1] for label, m in space.simplify().items()}
    with model_context(sample):
        fixed = FCOSWithHitDetSpaces(TINY)
    # built independently from the torch-only skeletons with the chosen ops
    make_block = fixed_block_factory(sample)
    reference = fcos(BackboneWithNeck(build_backbone(TINY, make_block), build_neck(TINY, make_block)))
    assert n_params(fixed) == n_params(reference) == n_params(space.freeze(sample))
    assert [tuple(v.shape) for v in fixed.state_dict().values()] == [
        tuple(v.shape) for v in reference.state_dict().values()
    ]
    fixed.eval()
    with torch.no_grad():
        assert fixed(IMAGES)[0]["boxes"].shape[1] == 4


class ListFeatures(nn.Module):
    """torchvision feature extractor (dict) -> list, the input NeckSpace takes."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.extractor(x).values())


class ResNetWithHitDetNeck(ModelSpace):
    """Only the neck is searched: behind a torchvision ResNet-18."""

    def __init__(self) -> None:
        super().__init__()
        nodes = {f"layer{i}": str(i - 1) for i in range(1, 5)}
        body = ListFeatures(create_feature_extractor(resnet18(weights=None), return_nodes=nodes))
        neck = NeckSpace(None, OPS, in_channels=[64, 128, 256, 512], channels=32, strides=[4, 8, 16, 32],
                         input_size=(64, 96))
        self.detector = fcos(BackboneWithNeck(body, neck))

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None) -> dict | list:
        return self.detector(images, targets)


def test_neck_space_behind_a_torchvision_resnet() -> None:
    space = ResNetWithHitDetNeck()
    assert list(space.simplify()) == TINY.neck_labels()
    assert set(space.train()(IMAGES, TARGETS)) == {"classification", "bbox_regression", "bbox_ctrness"}
    neck = space.detector.backbone.neck
    assert list(neck.candidate_macs()) == TINY.neck_labels()
    assert neck.candidate_macs()["neck/lateral4"]["conv_k1"] == 512 * 32 * 2 * 3  # 1x1 conv at 64x96 / 32


# ----------------------------------------------------------------------------- one-stage RetinaNet

RETINA = replace(TINY, head_blocks=4)  # two towers of two blocks
RETINA_OPS = {**OPS, "head": ["sep_k3", "skip", "ir_k3_e1"]}
SETTINGS = DetectorSettings(num_classes=3, min_size=64, max_size=96, box_detections_per_img=20)


def test_retinanet_space_labels_training_and_default() -> None:
    space = RetinaNetSpace(RETINA, RETINA_OPS, SETTINGS, input_size=(64, 96))
    labels = TINY.backbone_labels() + TINY.neck_labels() + ["head/b0", "head/b1", "head/b2", "head/b3"]
    assert list(space.simplify()) == labels == space.labels()
    head = space.component_spaces()["head"]
    assert list(head.simplify()) == ["head/b0", "head/b1", "head/b2", "head/b3"]
    assert set(space.train()(IMAGES, TARGETS)) == {"classification", "bbox_regression"}
    with torch.device("meta"):
        default = RetinaNetSpace()
    assert len(default.simplify()) == 20 + 8 + 8
    assert default.structure.head_blocks == 8


def test_retinanet_sample_architecture_json_and_detector_agree() -> None:
    space = RetinaNetSpace(RETINA, RETINA_OPS, SETTINGS, input_size=(64, 96))
    sample = {label: ops[i % len(ops)] for i, (label, ops) in enumerate(space.search_space_choices().items())}
    with model_context(sample):
        fixed = RetinaNetSpace(RETINA, RETINA_OPS, SETTINGS, input_size=(64, 96))
    arch = Architecture.from_sample(sample, RETINA, SETTINGS, detector_type="retinanet")
    data = json.loads(json.dumps(arch.to_dict()))
    assert data["detector"]["type"] == "retinanet" and len(data["head"]["blocks"]) == 4
    arch = from_dict(data, "retinanet round trip")
    assert arch.sample() == sample
    built = build_detector(arch)
    assert type(built).__name__ == "RetinaNet"
    assert {k: v.shape for k, v in fixed.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}
    assert n_params(fixed) == n_params(built)
    built.load_state_dict(fixed.state_dict())
    odd = dict(data, head={**data["head"], "blocks": data["head"]["blocks"][:3]})
    with pytest.raises(ArchitectureError, match="even number"):
        from_dict(odd, "odd")


def test_retinanet_head_macs_sum_over_levels() -> None:
    space = RetinaNetSpace(RETINA, RETINA_OPS, SETTINGS, input_size=(64, 96))
    table = space.candidate_macs()
    sample = {label: ops[0] for label, ops in space.search_space_choices().items()}
    with model_context(sample):
        fixed = RetinaNetSpace(RETINA, RETINA_OPS, SETTINGS, input_size=(64, 96))
    macs = {"head/b0": 0}

    def count(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        k = module.kernel_size[0] * module.kernel_size[1]
        macs["head/b0"] += output.numel() * (module.in_channels // module.groups) * k

    block = fixed.head.classification_head.conv[0]
    handles = [m.register_forward_hook(count) for m in block.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        features = fixed.backbone(torch.rand(1, 3, 64, 96))
        assert len(features) == 5
        fixed.head(list(features.values()))
    for h in handles:
        h.remove()
    assert table["head/b0"]["sep_k3"] == macs["head/b0"] > 0
