"""A plain hand-made Faster R-CNN from torchvision parts: the "no search at all" reference row.

Why: a searched detector should beat not only random samples of its own space but also an
ordinary design of the same cost. This one is what anyone would put together from stock
parts, in the proportions of a small detector that learns on 128-160 px images in a few
thousand steps: a MobileNetV2-style backbone (torchvision's ``InvertedResidual`` blocks, 16 to
64 channels rising with depth, one to two blocks a stage, as the CPU-scale search structure),
torchvision's ``FeaturePyramidNetwork`` (64 channels) with a max-pooled fifth level,
torchvision's RPN, and torchvision's two-fc box head (256 wide). One width multiplier scales
every channel count, so that its multiply-accumulates can be matched to another detector's
(:func:`match_width`).

An earlier version scaled MobileNetV2 / FPN-256 / fc-1024 proportions by one multiplier: at
CPU budgets that left the backbone 5 % of the MACs and one fc 1 M parameters, a detector that
could not learn in the steps it was given, so the comparison said nothing.

MACs are counted with the project's convention (``search_spaces.costs.detector_cost``):
convolutions and linear layers only, per image, the RoI head once per RoI. Torch and
torchvision only.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

ANCHOR_RATIOS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class BaselineConfig:
    """Channels at width 1 (MobileNetV2-like) and the width multiplier applied to all of them."""

    width: float = 1.0
    stem: int = 16
    stages: tuple[tuple[int, int], ...] = ((16, 1), (32, 2), (48, 2), (64, 1))  # (channels, blocks); stride 2 first
    expand_ratio: int = 4
    fpn_channels: int = 64
    fc_channels: int = 256
    roi_size: int = 7
    divisor: int = 4
    min_channels: int = 4

    def ch(self, c: int) -> int:
        """``c`` scaled by the width, rounded to the divisor."""
        return max(self.min_channels, int(round(c * self.width / self.divisor)) * self.divisor)

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "stem": self.ch(self.stem), "stages": [[self.ch(c), n] for c, n in self.stages],
                "expand_ratio": self.expand_ratio, "fpn_channels": self.ch(self.fpn_channels),
                "fc_channels": self.ch(self.fc_channels), "roi_size": self.roi_size}


class _Body(nn.Module):
    """Stem + four stages of inverted residuals; returns C1..C4 as an OrderedDict "0".."3"."""

    def __init__(self, cfg: BaselineConfig) -> None:
        super().__init__()
        stem = cfg.ch(cfg.stem)
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6(inplace=True))
        cin = stem
        self.stages = nn.ModuleList()
        self.out_channels: list[int] = []
        for c, n in cfg.stages:
            cout = cfg.ch(c)
            blocks = []
            for b in range(n):
                blocks.append(InvertedResidual(cin, cout, 2 if b == 0 else 1, cfg.expand_ratio))
                cin = cout
            self.stages.append(nn.Sequential(*blocks))
            self.out_channels.append(cout)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.stem(x)
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feats[str(i)] = x
        return feats


class _BodyWithFPN(nn.Module):
    def __init__(self, cfg: BaselineConfig) -> None:
        super().__init__()
        self.body = _Body(cfg)
        self.out_channels = cfg.ch(cfg.fpn_channels)
        self.fpn = FeaturePyramidNetwork(self.body.out_channels, self.out_channels, extra_blocks=LastLevelMaxPool())

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def build_baseline(
    cfg: BaselineConfig, num_classes: int, *, anchor_base: int = 32, sampling_ratio: int = 2, **faster_rcnn_kwargs: Any
) -> FasterRCNN:
    """The hand-made detector; ``faster_rcnn_kwargs`` are torchvision ``FasterRCNN`` arguments
    (``min_size``, ``rpn_post_nms_top_n_train``, ``box_batch_size_per_image``, ...).

    Anchors: one size per level (``anchor_base`` doubling over the 5 levels) x 3 ratios, as the
    searched detectors use.
    """
    backbone = _BodyWithFPN(cfg)
    c, r, fc = backbone.out_channels, cfg.roi_size, cfg.ch(cfg.fc_channels)
    levels = len(cfg.stages) + 1
    anchors = AnchorGenerator(sizes=tuple((anchor_base * 2**i,) for i in range(levels)),
                              aspect_ratios=(ANCHOR_RATIOS,) * levels)
    return FasterRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(c, len(ANCHOR_RATIOS)),
        box_roi_pool=MultiScaleRoIAlign([str(i) for i in range(len(cfg.stages))], r, sampling_ratio),
        box_head=TwoMLPHead(c * r * r, fc),
        box_predictor=FastRCNNPredictor(fc, num_classes),
        **faster_rcnn_kwargs,
    )


def _out(size: int, stride: int) -> int:
    """Output size of a 3x3 conv with padding 1 (and of a 1x1 max-pool) at ``stride``."""
    return (size - 1) // stride + 1


def baseline_macs(cfg: BaselineConfig, num_classes: int, input_size: tuple[int, int], num_rois: int) -> int:
    """Multiply-accumulates per image of :func:`build_baseline`, analytically (convs and linears).

    ``input_size`` is the padded batch size entering the backbone; the box head and predictor
    count ``num_rois`` times, as ``detector_cost`` does.
    """
    h, w = _out(input_size[0], 2), _out(input_size[1], 2)
    cin = cfg.ch(cfg.stem)
    macs = 3 * cin * 9 * h * w
    sizes, chans = [], []
    for c, n in cfg.stages:
        cout = cfg.ch(c)
        for b in range(n):
            stride = 2 if b == 0 else 1
            hidden = int(round(cin * cfg.expand_ratio))
            if cfg.expand_ratio != 1:
                macs += cin * hidden * h * w
            h, w = _out(h, stride), _out(w, stride)
            macs += hidden * 9 * h * w + hidden * cout * h * w
            cin = cout
        sizes.append((h, w))
        chans.append(cout)
    c = cfg.ch(cfg.fpn_channels)
    for (lh, lw), ci in zip(sizes, chans, strict=True):
        macs += ci * c * lh * lw + c * c * 9 * lh * lw  # inner 1x1 + layer 3x3
    levels = sizes + [(_out(sizes[-1][0], 2), _out(sizes[-1][1], 2))]
    a = len(ANCHOR_RATIOS)
    for lh, lw in levels:
        macs += (c * c * 9 + c * a + c * 4 * a) * lh * lw
    fc = cfg.ch(cfg.fc_channels)
    macs += num_rois * (c * cfg.roi_size**2 * fc + fc * fc + fc * num_classes + fc * 4 * num_classes)
    return macs


def match_width(
    target_macs: float, num_classes: int, input_size: tuple[int, int], num_rois: int,
    base: BaselineConfig | None = None, widths: int = 400,
) -> tuple[BaselineConfig, int]:
    """The width (on a log grid from 1/64 to 4) whose MACs are closest to ``target_macs``."""
    base = base or BaselineConfig()
    best: tuple[float, BaselineConfig, int] | None = None
    lo, hi = math.log(1 / 64), math.log(4.0)
    for i in range(widths):
        cfg = replace(base, width=math.exp(lo + (hi - lo) * i / (widths - 1)))
        macs = baseline_macs(cfg, num_classes, input_size, num_rois)
        gap = abs(macs - target_macs)
        if best is None or gap < best[0]:
            best = (gap, cfg, macs)
    assert best is not None
    return best[1], best[2]
