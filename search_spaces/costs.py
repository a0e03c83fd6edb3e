"""Analytic parameters and MACs of a whole detector, per component, without building it.

:func:`searched_positions` walks a structure at a given input size and yields, for every
searched label, the shape of the op there; the FLOPs penalty of the search prices each
candidate at these positions, and :func:`detector_cost` prices one fixed architecture
(``hitdet info``). Counts follow op-pool.md: BatchNorm affine and biases are parameters;
MACs count convolutions and linear layers only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from search_spaces.ops import Cost, conv_out_size, op_cost, op_output_size
from search_spaces.structure import DetectorStructure

COMPONENTS = ("backbone", "neck", "rpn", "head")
RPN_ANCHORS = 3


@dataclass(frozen=True)
class Position:
    """Where a searched op sits: its label, channels, stride, input size and how often it runs."""

    label: str
    in_channels: int
    out_channels: int
    stride: int
    height: int
    width: int
    repeat: int = 1  # head ops run once per RoI

    def cost(self, op: str) -> Cost:
        return op_cost(op, self.in_channels, self.out_channels, self.stride, self.height, self.width).scale_macs(
            self.repeat
        )


def _stage_sizes(structure: DetectorStructure, height: int, width: int) -> list[tuple[int, int]]:
    """Spatial size at the end of each stage, before the tail (every op keeps size at stride 1)."""
    h, w = op_output_size(structure.stem.op, structure.stem.stride, height, width)
    sizes = []
    for stage in structure.stages:
        for slot in stage:
            h, w = conv_out_size(h, 1, slot.stride), conv_out_size(w, 1, slot.stride)
        sizes.append((h, w))
    return sizes


def level_sizes(structure: DetectorStructure, height: int, width: int) -> list[tuple[int, int]]:
    """Spatial size of C1..C_L, the backbone outputs, for an input of ``height x width``."""
    sizes = _stage_sizes(structure, height, width)
    h, w = sizes[-1]
    for layer in structure.tail:
        h, w = op_output_size(layer.op, layer.stride, h, w)
    sizes[-1] = (h, w)
    return sizes


def searched_positions(
    structure: DetectorStructure, input_size: tuple[int, int] = (800, 1216), num_rois: int = 1000
) -> list[Position]:
    """Every searched position of the structure, in label order, at ``input_size`` (H, W)."""
    height, width = input_size
    positions = []
    cin = structure.stem.out_channels
    h, w = op_output_size(structure.stem.op, structure.stem.stride, height, width)
    labels = iter(structure.backbone_labels())
    for stage in structure.stages:
        for slot in stage:
            positions.append(Position(next(labels), cin, slot.out_channels, slot.stride, h, w))
            cin = slot.out_channels
            h, w = conv_out_size(h, 1, slot.stride), conv_out_size(w, 1, slot.stride)
    sizes = level_sizes(structure, height, width)
    c = structure.neck_channels
    lateral, out = structure.neck_labels()[: structure.num_levels], structure.neck_labels()[structure.num_levels :]
    for label, cf, (lh, lw) in zip(lateral, structure.feature_channels(), sizes, strict=True):
        positions.append(Position(label, cf, c, 1, lh, lw))
    for label, (lh, lw) in zip(out, sizes, strict=True):
        positions.append(Position(label, c, c, 1, lh, lw))
    r = structure.roi_size
    positions += [Position(label, c, c, 1, r, r, num_rois) for label in structure.head_labels()]
    return positions


def _conv(cin: int, cout: int, k: int, h: int, w: int, bias: bool = True) -> Cost:
    weights = cin * cout * k * k
    return Cost(weights + (cout if bias else 0), weights * h * w)


def _linear(cin: int, cout: int) -> Cost:
    return Cost(cin * cout + cout, cin * cout)


def detector_cost(
    structure: DetectorStructure,
    choices: Mapping[str, str],
    num_classes: int,
    input_size: tuple[int, int] = (800, 1216),
    num_rois: int = 1000,
) -> dict[str, Cost]:
    """Parameters and MACs per component (backbone, neck, rpn, head) and ``total``.

    The backbone includes stem and tail; the neck its fixed bottom-up convolutions; the
    RPN runs on the L neck levels plus the extra pooled level; the head (RoI blocks, fc
    and the class-specific predictor) runs ``num_rois`` times.
    """
    height, width = input_size
    st = structure
    cost = dict.fromkeys(COMPONENTS, Cost())
    cost["backbone"] = op_cost(st.stem.op, st.in_channels, st.stem.out_channels, st.stem.stride, height, width)
    for pos in searched_positions(st, input_size, num_rois):
        component = pos.label.split("/")[0]
        cost[component] = cost[component] + pos.cost(choices[pos.label])
    sizes = level_sizes(st, height, width)
    cin = st.stages[-1][-1].out_channels
    h, w = _stage_sizes(st, height, width)[-1]
    for layer in st.tail:
        cost["backbone"] = cost["backbone"] + op_cost(layer.op, cin, layer.out_channels, layer.stride, h, w)
        cin, (h, w) = layer.out_channels, op_output_size(layer.op, layer.stride, h, w)
    c = st.neck_channels
    for lh, lw in sizes[1:]:
        cost["neck"] = cost["neck"] + _conv(c, c, 3, lh, lw)
    rpn_sizes = sizes + [(conv_out_size(sizes[-1][0], 1, 2, padding=0), conv_out_size(sizes[-1][1], 1, 2, padding=0))]
    for lh, lw in rpn_sizes:
        level = _conv(c, c, 3, lh, lw) + _conv(c, RPN_ANCHORS, 1, lh, lw) + _conv(c, 4 * RPN_ANCHORS, 1, lh, lw)
        # the RPN head's weights are shared across levels: count them once
        cost["rpn"] = Cost(level.params, cost["rpn"].macs + level.macs)
    r = st.roi_size
    per_roi = _linear(c * r * r, st.fc_channels) + _linear(st.fc_channels, num_classes)
    per_roi = per_roi + _linear(st.fc_channels, 4 * num_classes)
    cost["head"] = cost["head"] + per_roi.scale_macs(num_rois)
    total = Cost()
    for component in COMPONENTS:
        total = total + cost[component]
    cost["total"] = total
    return cost
