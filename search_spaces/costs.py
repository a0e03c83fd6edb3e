"""Analytic parameters and MACs of a whole detector, per component, without building it.

:func:`detector_cost` prices one fixed architecture (``hitdet info``) from the searched
positions of :mod:`search_spaces.positions` (which the FLOPs penalty of the search prices
too) plus the fixed layers around them: the backbone's stem and tail here, the neck's and the
head's own fixed layers from their kinds (:mod:`search_spaces.kinds`). Counts follow
docs/op-pool.md: BatchNorm affine and biases are parameters; MACs count convolutions and linear
layers only.
"""

from __future__ import annotations

from collections.abc import Mapping

from search_spaces.kinds import detector_kind, neck_kind
from search_spaces.ops import Cost, op_cost, op_output_size
from search_spaces.positions import backbone_positions, detector_positions
from search_spaces.structure import DetectorStructure

# The parts a detector's cost is reported in: the searched components (positions.COMPONENTS) and the RPN.
COST_COMPONENTS = ("backbone", "neck", "rpn", "head")


def detector_cost(
    structure: DetectorStructure,
    choices: Mapping[str, str],
    num_classes: int,
    input_size: tuple[int, int] = (800, 1216),
    num_rois: int = 1000,
    detector_type: str = "faster_rcnn",
) -> dict[str, Cost]:
    """Parameters and MACs per component (backbone, neck, rpn, head) and ``total``.

    The backbone includes stem and tail; the neck its fixed layers (PANet: the bottom-up
    convolutions). Two-stage ("faster_rcnn"): the RPN runs on the L neck levels plus the extra
    pooled level, and the head (RoI blocks, fc, class-specific predictor) runs ``num_rois`` times.
    One-stage ("retinanet"): no RPN; the head's two towers and its two output convolutions run on
    every level, and ``num_rois`` does not apply.
    """
    height, width = input_size
    st = structure
    cost = dict.fromkeys(COST_COMPONENTS, Cost())
    cost["backbone"] = op_cost(st.stem.op, st.in_channels, st.stem.out_channels, st.stem.stride, height, width)
    bb, sizes = backbone_positions(st, input_size)
    for pos in detector_positions(st, input_size, num_rois, detector_type):
        op = choices[pos.label]
        params = op_cost(op, pos.in_channels, pos.out_channels, pos.stride, 1, 1).params
        cost[pos.component] = cost[pos.component] + Cost(params, pos.macs(op))
    cin = st.stages[-1][-1].out_channels
    h, w = op_output_size("skip", bb[-1].stride, bb[-1].height, bb[-1].width)  # before the tail
    for layer in st.tail:
        cost["backbone"] = cost["backbone"] + op_cost(layer.op, cin, layer.out_channels, layer.stride, h, w)
        cin, (h, w) = layer.out_channels, op_output_size(layer.op, layer.stride, h, w)
    neck = neck_kind(st.neck_type)
    cost["neck"] = cost["neck"] + neck.fixed_cost(st.neck_channels, sizes)
    fixed = detector_kind(detector_type).fixed_cost(st, num_classes, neck.output_sizes(sizes), num_rois)
    for component, extra in fixed.items():
        cost[component] = cost[component] + extra
    total = Cost()
    for component in COST_COMPONENTS:
        total = total + cost[component]
    cost["total"] = total
    return cost
