"""Analytic parameters and MACs of a whole detector, per component, without building it.

:func:`detector_cost` prices one fixed architecture (``hitdet info``) from the searched
positions of :mod:`search_spaces.positions` (which the FLOPs penalty of the search prices
too) plus the fixed layers around them. Counts follow docs/op-pool.md: BatchNorm affine and biases are parameters;
MACs count convolutions and linear layers only.
"""

from __future__ import annotations

from collections.abc import Mapping

from search_spaces.ops import Cost, conv_out_size, op_cost, op_output_size
from search_spaces.positions import Position, backbone_positions, detector_positions
from search_spaces.structure import DetectorStructure

# The parts a detector's cost is reported in: the searched components (positions.COMPONENTS) and the RPN.
COST_COMPONENTS = ("backbone", "neck", "rpn", "head")
RPN_ANCHORS = 3  # one size x three ratios per level
RETINA_ANCHORS = 9  # three scales x three ratios per level


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
    detector_type: str = "faster_rcnn",
) -> dict[str, Cost]:
    """Parameters and MACs per component (backbone, neck, rpn, head) and ``total``.

    The backbone includes stem and tail; the neck its fixed bottom-up convolutions. Two-stage
    ("faster_rcnn"): the RPN runs on the L neck levels plus the extra pooled level, and the
    head (RoI blocks, fc, class-specific predictor) runs ``num_rois`` times. One-stage
    ("retinanet"): no RPN; the head's two towers and its two output convolutions run on
    every level, and ``num_rois`` does not apply.
    """
    height, width = input_size
    st = structure
    cost = dict.fromkeys(COST_COMPONENTS, Cost())
    cost["backbone"] = op_cost(st.stem.op, st.in_channels, st.stem.out_channels, st.stem.stride, height, width)
    bb, sizes = backbone_positions(st, input_size)
    pyramid = sizes + [(conv_out_size(h, 1, 2, padding=0), conv_out_size(w, 1, 2, padding=0)) for h, w in sizes[-1:]]
    positions = detector_positions(st, input_size, num_rois)
    if detector_type == "retinanet":
        positions = [p for p in positions if p.component != "head"]
        c = st.neck_channels
        positions += [Position(label, "head", c, c, 1, 1, 1, levels=tuple(pyramid)) for label in st.head_labels()]
    for pos in positions:
        op = choices[pos.label]
        params = op_cost(op, pos.in_channels, pos.out_channels, pos.stride, 1, 1).params
        cost[pos.component] = cost[pos.component] + Cost(params, pos.macs(op))
    cin = st.stages[-1][-1].out_channels
    h, w = op_output_size("skip", bb[-1].stride, bb[-1].height, bb[-1].width)  # before the tail
    for layer in st.tail:
        cost["backbone"] = cost["backbone"] + op_cost(layer.op, cin, layer.out_channels, layer.stride, h, w)
        cin, (h, w) = layer.out_channels, op_output_size(layer.op, layer.stride, h, w)
    c = st.neck_channels
    for lh, lw in sizes[1:]:
        cost["neck"] = cost["neck"] + _conv(c, c, 3, lh, lw)
    if detector_type == "retinanet":
        cost["head"] = cost["head"] + _shared_over_levels(
            [_conv(c, RETINA_ANCHORS * num_classes, 3, lh, lw) + _conv(c, 4 * RETINA_ANCHORS, 3, lh, lw)
             for lh, lw in pyramid]
        )
    else:
        cost["rpn"] = _shared_over_levels(
            [_conv(c, c, 3, lh, lw) + _conv(c, RPN_ANCHORS, 1, lh, lw) + _conv(c, 4 * RPN_ANCHORS, 1, lh, lw)
             for lh, lw in pyramid]
        )
        r = st.roi_size
        per_roi = _linear(c * r * r, st.fc_channels) + _linear(st.fc_channels, num_classes)
        per_roi = per_roi + _linear(st.fc_channels, 4 * num_classes)
        cost["head"] = cost["head"] + per_roi.scale_macs(num_rois)
    total = Cost()
    for component in COST_COMPONENTS:
        total = total + cost[component]
    cost["total"] = total
    return cost


def _shared_over_levels(levels: list[Cost]) -> Cost:
    """A head applied to every pyramid level: its weights count once, its MACs once per level."""
    return Cost(levels[0].params, sum(level.macs for level in levels))
