"""The fixed skeleton of each detector component, with its searched positions left to a factory.

The skeletons are torch only. A *block factory* ``make_block(label, in_channels,
out_channels, stride)`` fills each searched position: the fixed builder passes one that
builds the chosen pool op, a search space one that builds an NNI ``LayerChoice`` over its
candidates. One piece of code therefore defines both the supernet and every detector
decoded from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.kinds import neck_kind
from search_spaces.ops import build_op
from search_spaces.panet import PANetNeck as PANetNeck  # re-exported: the PANet neck's skeleton, in its kind's file
from search_spaces.structure import DetectorStructure, FixedLayer, Slot, backbone_label, head_label

BlockFactory = Callable[[str, int, int, int], nn.Module]


def fixed_block_factory(choices: Mapping[str, str]) -> BlockFactory:
    """A factory that builds the op ``choices[label]`` at each position."""

    def make_block(label: str, cin: int, cout: int, stride: int) -> nn.Module:
        try:
            op = choices[label]
        except KeyError:
            raise KeyError(f"no op chosen for searched position {label!r}") from None
        return build_op(op, cin, cout, stride)

    return make_block


class Backbone(nn.Module):
    """Stem, searched stages and an optional fixed tail; returns the output of every stage (C1..C_L).

    Attributes ``out_channels`` (per level) and ``strides`` describe the taps.
    """

    def __init__(
        self,
        stages: Sequence[Sequence[Slot]],
        make_block: BlockFactory,
        stem: FixedLayer,
        tail: Sequence[FixedLayer] = (),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.stem = build_op(stem.op, in_channels, stem.out_channels, stem.stride)
        cin, stride = stem.out_channels, stem.stride
        self.stages = nn.ModuleList()
        self.out_channels: list[int] = []
        self.strides: list[int] = []
        for s, stage in enumerate(stages, start=1):
            blocks = []
            for b, slot in enumerate(stage):
                blocks.append(make_block(backbone_label(s, b), cin, slot.out_channels, slot.stride))
                cin, stride = slot.out_channels, stride * slot.stride
            self.stages.append(nn.Sequential(*blocks))
            self.out_channels.append(cin)
            self.strides.append(stride)
        tail_layers = []
        for layer in tail:
            tail_layers.append(build_op(layer.op, cin, layer.out_channels, layer.stride))
            cin, stride = layer.out_channels, stride * layer.stride
        self.tail = nn.Sequential(*tail_layers)
        if tail:
            self.out_channels[-1], self.strides[-1] = cin, stride

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        feats[-1] = self.tail(feats[-1])
        return feats


class BlockHead(nn.Module):
    """RoI box head: searched blocks at RoI resolution, flatten, one fc + ReLU (the paper's 4c1fc)."""

    def __init__(
        self, channels: int, roi_size: int, num_blocks: int, fc_channels: int, make_block: BlockFactory
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(make_block(head_label(i), channels, channels, 1) for i in range(num_blocks)))
        self.fc = nn.Linear(channels * roi_size * roi_size, fc_channels)
        self.out_channels = fc_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.blocks(x).flatten(1)))


class BackboneWithNeck(nn.Module):
    """What torchvision detectors call the backbone: image -> named pyramid levels."""

    def __init__(self, body: nn.Module, neck: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.neck = neck
        self.out_channels = neck.out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.neck(self.body(x))


def build_backbone(structure: DetectorStructure, make_block: BlockFactory) -> Backbone:
    return Backbone(structure.stages, make_block, structure.stem, structure.tail, structure.in_channels)


def build_neck(structure: DetectorStructure, make_block: BlockFactory, extra_level: bool = True) -> nn.Module:
    """The neck of the structure's kind (``structure.neck_type``; PANet by default)."""
    return neck_kind(structure.neck_type).module(structure.feature_channels(), structure.neck_channels, make_block,
                                                 extra_level)


def build_head(structure: DetectorStructure, make_block: BlockFactory) -> BlockHead:
    return BlockHead(
        structure.neck_channels, structure.roi_size, structure.head_blocks, structure.fc_channels, make_block
    )
