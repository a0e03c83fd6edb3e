"""Whole detectors composed from the component skeletons (torch + torchvision only).

The two-stage Hit-Detector is a torchvision ``FasterRCNN`` with injected backbone+neck,
RPN, RoI pooling, searched box head and class-specific predictor, configured as in
shared/reference/hit-detector.md. The fixed builder and the trinity search space both call
:func:`faster_rcnn` with different block factories.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from search_spaces.components import BackboneWithNeck, BlockFactory, build_backbone, build_head, build_neck
from search_spaces.structure import DetectorStructure

ANCHOR_RATIOS = (0.5, 1.0, 2.0)


@dataclass
class DetectorSettings:
    """Input sizing, RPN and RoI settings; defaults are the paper's (hit-detector.md)."""

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


def anchor_generator(num_levels: int, base: int = 32) -> AnchorGenerator:
    """One anchor size per level (base, 2*base, ...) x three aspect ratios."""
    sizes = tuple((base * 2**i,) for i in range(num_levels))
    return AnchorGenerator(sizes=sizes, aspect_ratios=(ANCHOR_RATIOS,) * num_levels)


def faster_rcnn(
    structure: DetectorStructure, settings: DetectorSettings, make_block: BlockFactory
) -> FasterRCNN:
    """The two-stage detector: searched backbone, PANet neck, RPN on L+1 levels, searched RoI head."""
    body = build_backbone(structure, make_block)
    neck = build_neck(structure, make_block, extra_level=True)
    levels = structure.num_levels
    roi_pool = MultiScaleRoIAlign(
        featmap_names=[str(i) for i in range(levels)],
        output_size=structure.roi_size,
        sampling_ratio=settings.sampling_ratio,
    )
    box_head = build_head(structure, make_block)
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
