"""Whole detectors composed from the component skeletons (torch + torchvision only).

The two-stage Hit-Detector is a torchvision ``FasterRCNN`` with injected backbone+neck,
RPN, RoI pooling, searched box head and class-specific predictor, configured as in the paper
(Guo et al., CVPR 2020; docs/hit-detector.md). The fixed builder and the trinity search space
both call :func:`faster_rcnn` with different block factories. The one-stage variant (paper Table 6) is a
torchvision ``RetinaNet`` on the same backbone and neck with searched head towers
(:func:`retinanet`, :func:`retinanet_kwargs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from search_spaces.components import BackboneWithNeck, BlockFactory, build_backbone, build_head, build_neck
from search_spaces.kinds import DetectorKind, register_detector
from search_spaces.ops import Cost, conv_cost, linear_cost, shared_over_levels
from search_spaces.positions import Position, head_positions
from search_spaces.structure import DetectorStructure, head_label

# Upper bounds of the settings (docs/reliability.md says why): a detector cannot use more, and a value past them
# only fails later, as an out-of-memory error mid-training.
MAX_INPUT_SIZE = 4096  # pixels per side: 3x COCO's 1333; a 4096^2 image's stride-4 256-channel map alone is 1 GiB
MAX_COUNT = 100_000  # proposals, sampled RoIs, detections per image, classes: 50x COCO's 2000 proposals
MAX_CLASSES = 100_000  # LVIS has 1203 categories; ImageNet-21k 21841

ANCHOR_RATIOS = (0.5, 1.0, 2.0)
RPN_ANCHORS = len(ANCHOR_RATIOS)  # one size x three ratios per level
RETINA_ANCHORS = 9  # three scales x three ratios per level


@dataclass
class DetectorSettings:
    """Input sizing, RPN and RoI settings; defaults are the paper's (docs/hit-detector.md)."""

    num_classes: int = 81  # including background
    min_size: int = 800
    max_size: int = 1333
    size_divisible: int = 32
    anchor_base: int = 32  # anchor size at the first level; doubles per level
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    sampling_ratio: int = 2

    @classmethod
    def field_types(cls) -> dict[str, type]:
        return {f.name: (float if f.type in ("float", float) else int) for f in fields(cls)}

    def to_dict(self) -> dict:
        return asdict(self)

    def padded_size(self) -> tuple[int, int]:
        """(H, W): ``min_size`` and ``max_size`` rounded up to ``size_divisible``, the largest batch input.

        The size costs are priced at when nothing else is said (the search penalty, ``hitdet info``).
        """
        div = self.size_divisible
        return -(-self.min_size // div) * div, -(-self.max_size // div) * div

    def priced_rois(self) -> int:
        """The RoI count the RoI head's MACs are priced at everywhere (search penalty, ``hitdet info``, benchmarks).

        The test-time proposals (``rpn_post_nms_top_n_test``): what a deployed detector runs its head
        on, as the paper priced its detector at COCO's 1000 proposals. Training samples fewer RoIs per
        image (``box_batch_size_per_image``), but a detector is deployed, not trained, at its cost.
        """
        return self.rpn_post_nms_top_n_test

    def validate(self) -> None:
        """Raise ValueError ("field: why") for the first value out of range: every count and size is a
        positive integer, every fraction and threshold in [0, 1], and the classes include the background."""
        types = self.field_types()
        for f in fields(self):
            value = getattr(self, f.name)
            if types[f.name] is int and value < 1:
                raise ValueError(f"{f.name}: must be a positive integer, got {value}")
            if types[f.name] is float and not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name}: must be between 0 and 1, got {value}")
        if self.num_classes < 2:
            raise ValueError("num_classes: must count the background too, so at least 2")
        for name in ("min_size", "max_size", "size_divisible", "anchor_base"):
            if getattr(self, name) > MAX_INPUT_SIZE:
                raise ValueError(f"{name}: must be at most {MAX_INPUT_SIZE} pixels, got {getattr(self, name)}")
        for name in ("rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train",
                     "rpn_post_nms_top_n_test", "rpn_batch_size_per_image", "box_batch_size_per_image",
                     "box_detections_per_img", "num_classes", "sampling_ratio"):
            bound = MAX_CLASSES if name == "num_classes" else 64 if name == "sampling_ratio" else MAX_COUNT
            if getattr(self, name) > bound:
                raise ValueError(f"{name}: must be at most {bound}, got {getattr(self, name)}")


def anchor_generator(num_levels: int, base: int = 32) -> AnchorGenerator:
    """One anchor size per level (base, 2*base, ...) x three aspect ratios."""
    sizes = tuple((base * 2**i,) for i in range(num_levels))
    return AnchorGenerator(sizes=sizes, aspect_ratios=(ANCHOR_RATIOS,) * num_levels)


def faster_rcnn(
    structure: DetectorStructure,
    settings: DetectorSettings,
    make_block: BlockFactory,
    *,
    body: nn.Module | None = None,
    neck: nn.Module | None = None,
    box_head: nn.Module | None = None,
) -> FasterRCNN:
    """The two-stage detector: searched backbone, PANet neck, RPN on L+1 levels, searched RoI head.

    ``body``, ``neck`` and ``box_head``, when given, replace the components built from
    ``structure`` with ``make_block`` (the trinity search space passes its component spaces,
    which are the same skeletons filled with NNI choices).
    """
    body = body if body is not None else build_backbone(structure, make_block)
    neck = neck if neck is not None else build_neck(structure, make_block, extra_level=True)
    levels = structure.num_levels
    roi_pool = MultiScaleRoIAlign(
        featmap_names=[str(i) for i in range(levels)],
        output_size=structure.roi_size,
        sampling_ratio=settings.sampling_ratio,
    )
    box_head = box_head if box_head is not None else build_head(structure, make_block)
    s = settings
    return FasterRCNN(
        BackboneWithNeck(body, neck),
        num_classes=None,
        min_size=s.min_size,
        max_size=s.max_size,
        size_divisible=s.size_divisible,
        rpn_anchor_generator=anchor_generator(levels + 1, s.anchor_base),
        rpn_head=RPNHead(structure.neck_channels, len(ANCHOR_RATIOS)),
        rpn_pre_nms_top_n_train=s.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=s.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=s.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=s.rpn_post_nms_top_n_test,
        rpn_nms_thresh=s.rpn_nms_thresh,
        rpn_batch_size_per_image=s.rpn_batch_size_per_image,
        rpn_positive_fraction=s.rpn_positive_fraction,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(structure.fc_channels, s.num_classes),
        box_batch_size_per_image=s.box_batch_size_per_image,
        box_positive_fraction=s.box_positive_fraction,
        box_score_thresh=s.box_score_thresh,
        box_nms_thresh=s.box_nms_thresh,
        box_detections_per_img=s.box_detections_per_img,
    )


# ----------------------------------------------------------------------------- one-stage (RetinaNet)

RETINA_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))  # three scales per level, as torchvision's RetinaNet


def retina_anchor_generator(num_levels: int, base: int = 32) -> AnchorGenerator:
    """Three scales x three aspect ratios per level; the base size doubles per level."""
    sizes = tuple(tuple(int(round(base * 2**i * s)) for s in RETINA_SCALES) for i in range(num_levels))
    return AnchorGenerator(sizes=sizes, aspect_ratios=(ANCHOR_RATIOS,) * num_levels)


def search_retina_towers(head: RetinaNetHead, blocks_per_tower: int, make_block: BlockFactory) -> RetinaNetHead:
    """Replace the conv towers of a torchvision ``RetinaNetHead`` by searched positions (in place).

    Labels: ``head/b0``..``head/b{n-1}`` for the classification tower and ``head/b{n}``..
    ``head/b{2n-1}`` for the box-regression tower (n = ``blocks_per_tower``), so the architecture
    JSON's ``head.blocks`` lists the classification tower first. Each block maps C -> C at
    stride 1 and is shared by all pyramid levels, as the towers it replaces.
    """
    channels = head.classification_head.cls_logits.in_channels
    head.classification_head.conv = nn.Sequential(
        *(make_block(head_label(i), channels, channels, 1) for i in range(blocks_per_tower))
    )
    head.regression_head.conv = nn.Sequential(
        *(make_block(head_label(blocks_per_tower + i), channels, channels, 1) for i in range(blocks_per_tower))
    )
    return head


def retina_blocks_per_tower(structure: DetectorStructure) -> int:
    """RetinaNet uses ``structure.head_blocks`` as the two towers' total: it must be even."""
    if structure.head_blocks < 2 or structure.head_blocks % 2:
        raise ValueError(
            f"a RetinaNet head has two towers of equal depth: head_blocks must be even, got {structure.head_blocks}"
        )
    return structure.head_blocks // 2


def retinanet_kwargs(
    structure: DetectorStructure,
    settings: DetectorSettings,
    make_block: BlockFactory,
    *,
    body: nn.Module | None = None,
    neck: nn.Module | None = None,
    head: RetinaNetHead | None = None,
) -> dict[str, Any]:
    """The arguments of torchvision's ``RetinaNet`` for the one-stage Hit-Detector (paper Table 6).

    The searched backbone and PANet neck (with its extra stride-64 level: 5 levels) feed a
    RetinaNet head whose conv towers are searched (:func:`search_retina_towers`). The RoI
    settings do not apply; ``box_score_thresh``, ``box_nms_thresh`` and
    ``box_detections_per_img`` configure the post-processing.
    """
    body = body if body is not None else build_backbone(structure, make_block)
    neck = neck if neck is not None else build_neck(structure, make_block, extra_level=True)
    levels = structure.num_levels + 1
    anchors = retina_anchor_generator(levels, settings.anchor_base)
    if head is None:
        head = RetinaNetHead(structure.neck_channels, anchors.num_anchors_per_location()[0], settings.num_classes)
        search_retina_towers(head, retina_blocks_per_tower(structure), make_block)
    s = settings
    return {
        "backbone": BackboneWithNeck(body, neck),
        "num_classes": s.num_classes,
        "min_size": s.min_size,
        "max_size": s.max_size,
        "size_divisible": s.size_divisible,
        "anchor_generator": anchors,
        "head": head,
        "score_thresh": s.box_score_thresh,
        "nms_thresh": s.box_nms_thresh,
        "detections_per_img": s.box_detections_per_img,
    }


def retinanet(structure: DetectorStructure, settings: DetectorSettings, make_block: BlockFactory) -> RetinaNet:
    """The one-stage detector: searched backbone and neck, RetinaNet head with searched towers."""
    return RetinaNet(**retinanet_kwargs(structure, settings, make_block))


# ----------------------------------------------------------------------------- the two kinds, registered


class FasterRCNNKind(DetectorKind):
    """The two-stage Hit-Detector: an RPN on the neck's levels, a searched RoI head run once per RoI."""

    name = "faster_rcnn"
    two_stage = True
    space = "search_spaces.spaces:TrinitySpace"

    def head_positions(self, structure: DetectorStructure, level_sizes: Sequence[tuple[int, int]],
                       num_rois: int) -> list[Position]:
        return head_positions(structure.neck_channels, structure.roi_size, structure.head_blocks, num_rois)

    def fixed_cost(self, structure: DetectorStructure, num_classes: int, level_sizes: Sequence[tuple[int, int]],
                   num_rois: int) -> dict[str, Cost]:
        """The RPN (3x3 conv + objectness and box 1x1 convs, shared by the levels) and the fc + predictor per RoI."""
        c, r = structure.neck_channels, structure.roi_size
        rpn = shared_over_levels([conv_cost(c, c, 3, h, w) + conv_cost(c, RPN_ANCHORS, 1, h, w)
                                  + conv_cost(c, 4 * RPN_ANCHORS, 1, h, w) for h, w in level_sizes])
        per_roi = linear_cost(c * r * r, structure.fc_channels) + linear_cost(structure.fc_channels, num_classes)
        per_roi = per_roi + linear_cost(structure.fc_channels, 4 * num_classes)
        return {"rpn": rpn, "head": per_roi.scale_macs(num_rois)}

    def build(self, structure: DetectorStructure, settings: DetectorSettings, make_block: BlockFactory) -> nn.Module:
        return faster_rcnn(structure, settings, make_block)


class RetinaNetKind(DetectorKind):
    """The one-stage variant (paper Table 6): RetinaNet's head with searched towers, run on every level."""

    name = "retinanet"
    two_stage = False
    space = "search_spaces.onestage:RetinaNetSpace"

    def check(self, structure: DetectorStructure) -> None:
        if structure.head_blocks % 2:
            raise ValueError(
                "head.blocks: a RetinaNet head has two towers of equal depth (classification tower first, then "
                f"box regression): expected an even number of blocks, got {structure.head_blocks}"
            )

    def search_structure(self, structure: DetectorStructure) -> DetectorStructure:
        """A named structure's head blocks make each of the two towers."""
        return replace(structure, head_blocks=2 * structure.head_blocks)

    def head_positions(self, structure: DetectorStructure, level_sizes: Sequence[tuple[int, int]],
                       num_rois: int) -> list[Position]:
        return retina_head_positions(structure.neck_channels, structure.head_blocks // 2, list(level_sizes))

    def fixed_cost(self, structure: DetectorStructure, num_classes: int, level_sizes: Sequence[tuple[int, int]],
                   num_rois: int) -> dict[str, Cost]:
        """The classification and box output convolutions (3x3), shared by the levels; no RPN."""
        c = structure.neck_channels
        return {"head": shared_over_levels([conv_cost(c, RETINA_ANCHORS * num_classes, 3, h, w)
                                            + conv_cost(c, 4 * RETINA_ANCHORS, 3, h, w) for h, w in level_sizes])}

    def build(self, structure: DetectorStructure, settings: DetectorSettings, make_block: BlockFactory) -> nn.Module:
        return retinanet(structure, settings, make_block)

    def search_space(self, structure: DetectorStructure, ops: Any, settings: DetectorSettings, *,
                     input_size: tuple[int, int], num_rois: int) -> nn.Module:
        return self.space_class()(structure, ops, settings, input_size=input_size)  # one pass per level: no RoIs


def retina_head_positions(
    channels: int, blocks_per_tower: int, level_sizes: list[tuple[int, int]]
) -> list[Position]:
    """Each tower block runs once per pyramid level: its MACs sum over ``level_sizes``."""
    h, w = level_sizes[0]
    return [
        Position(head_label(i), "head", channels, channels, 1, h, w, levels=tuple(level_sizes))
        for i in range(2 * blocks_per_tower)
    ]


register_detector(FasterRCNNKind())
register_detector(RetinaNetKind())
