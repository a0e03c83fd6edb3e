"""Where each searched position sits: channels, stride and input resolution, and its op list.

Pure Python (no torch modules are built, no NNI): the search spaces, the HPO export and the
FLOPs penalty all read the same description, so the analytic MACs of a candidate op at a
position are computed exactly as :func:`search_spaces.ops.op_cost` does for the built op.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from search_spaces.kinds import detector_kind, neck_kind
from search_spaces.ops import OP_NAMES, OPS, op_cost, op_output_size, unknown_op
from search_spaces.structure import DetectorStructure, backbone_label, head_label

COMPONENTS: tuple[str, ...] = ("backbone", "neck", "head")  # the searched components (costs add the "rpn")
DEFAULT_INPUT_SIZE: tuple[int, int] = (800, 1216)  # 800x1200 padded to a multiple of 32
DEFAULT_NUM_ROIS = 1000

OpList = Sequence[str]
OpsArg = OpList | Mapping[str, OpList] | None


class SpaceError(ValueError):
    """A sample, op list or option that does not fit a search space."""


@dataclass(frozen=True)
class Position:
    """One searched position: the op there maps ``in_channels`` to ``out_channels`` at ``stride``.

    ``height`` x ``width`` is the op's input resolution; ``multiplier`` says how many times the
    op runs per image (the number of RoIs in the RoI head, 1 elsewhere; a RetinaNet tower runs
    once per level and has one position per level in :attr:`levels`).
    """

    label: str
    component: str
    in_channels: int
    out_channels: int
    stride: int
    height: int
    width: int
    multiplier: int = 1
    levels: tuple[tuple[int, int], ...] = ()

    def macs(self, op: str) -> int:
        """MACs of ``op`` at this position for one image (multiply-accumulates, not FLOPs)."""
        sizes = self.levels or ((self.height, self.width),)
        total = sum(op_cost(op, self.in_channels, self.out_channels, self.stride, h, w).macs for h, w in sizes)
        return total * self.multiplier


def normalize_ops(ops: OpsArg, components: Sequence[str] = COMPONENTS) -> dict[str, tuple[str, ...]]:
    """Per-component op lists from ``None`` (all 32 ops), one list (all components) or a dict.

    A dict may leave components out (they get all 32 ops); unknown components, unknown ops,
    duplicates and empty lists are errors, so that a typo never silently widens a space.

    Args:
        ops: ``None``, a list of op names, or ``{component: [op names]}``.
        components: the components to fill (default ``backbone``, ``neck``, ``head``).

    Returns:
        ``{component: tuple of op names}`` for every component.

    Raises:
        SpaceError: an unknown component or op, a duplicate, an empty list, or a bare string.
    """
    if ops is None:
        return {c: OP_NAMES for c in components}
    if isinstance(ops, str):
        raise SpaceError(f"ops must be a list of op names or a dict per component, got the string {ops!r}")
    if isinstance(ops, Mapping):
        unknown = set(ops) - set(components)
        if unknown:
            raise SpaceError(f"ops: unknown component(s) {sorted(unknown)}; expected some of {list(components)}")
        return {c: check_op_list(ops.get(c, OP_NAMES), c) for c in components}
    checked = check_op_list(ops, "all components")
    return {c: checked for c in components}


def check_op_list(ops: OpList, where: str) -> tuple[str, ...]:
    """The one op-list check (spaces, configs, sub-spaces files, pretraining): pool names, distinct, non-empty."""
    if isinstance(ops, str):
        raise SpaceError(f"ops for {where}: expected a list of op names, got the string {ops!r}")
    ops = tuple(ops)
    if not ops:
        raise SpaceError(f"ops for {where}: the op list is empty")
    for op in ops:
        if op not in OPS:
            raise SpaceError(f"ops for {where}: {unknown_op(op)}; the pool has: {', '.join(OP_NAMES)}")
    dup = sorted({op for op in ops if ops.count(op) > 1})
    if dup:
        raise SpaceError(f"ops for {where}: duplicate op(s) {dup}")
    return ops


def backbone_positions(
    structure: DetectorStructure, input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
) -> tuple[list[Position], list[tuple[int, int]]]:
    """The backbone's positions, and the resolution of each output level C1..C_L."""
    h, w = input_size
    st = structure
    h, w = op_output_size(st.stem.op, st.stem.stride, h, w)
    cin = st.stem.out_channels
    positions, sizes = [], []
    for s, stage in enumerate(st.stages, start=1):
        for b, slot in enumerate(stage):
            positions.append(Position(backbone_label(s, b), "backbone", cin, slot.out_channels, slot.stride, h, w))
            # every op of the pool gives the same output size (odd kernels, "same" padding)
            h, w = op_output_size("skip", slot.stride, h, w)
            cin = slot.out_channels
        sizes.append((h, w))
    for layer in st.tail:
        h, w = op_output_size(layer.op, layer.stride, h, w)
    if st.tail:
        sizes[-1] = (h, w)
    return positions, sizes


def level_sizes(input_size: tuple[int, int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature sizes of a backbone with stride-2 "same" convolutions: ceil(size / stride)."""
    return [(math.ceil(input_size[0] / s), math.ceil(input_size[1] / s)) for s in strides]


def neck_positions(
    in_channels: Sequence[int], channels: int, sizes: Sequence[tuple[int, int]], neck_type: str = "panet"
) -> list[Position]:
    """The neck's cells, as its kind places them (PANet: the laterals C_i -> channels, then the outputs)."""
    return neck_kind(neck_type).positions(in_channels, channels, sizes)


def head_positions(channels: int, roi_size: int, num_blocks: int, num_rois: int = DEFAULT_NUM_ROIS) -> list[Position]:
    """The RoI head's blocks: ``channels`` at ``roi_size`` x ``roi_size``, once per RoI."""
    return [
        Position(head_label(i), "head", channels, channels, 1, roi_size, roi_size, multiplier=num_rois)
        for i in range(num_blocks)
    ]


def detector_positions(
    structure: DetectorStructure,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    num_rois: int = DEFAULT_NUM_ROIS,
    detector_type: str = "faster_rcnn",
) -> list[Position]:
    """Every searched position of a detector, in the structure's label order.

    The backbone's, then the neck's (its kind's, ``structure.neck_type``), then the head's (the
    detector kind's: a two-stage RoI head runs ``num_rois`` times, a one-stage head once per level).

    Args:
        structure: the detector's structure (depths, channels, strides, neck kind).
        input_size: the padded input ``(height, width)`` that resolutions and MACs are computed at.
        num_rois: the RoIs per image a two-stage head runs on.
        detector_type: a registered detector kind, ``"faster_rcnn"`` or ``"retinanet"``.

    Returns:
        One :class:`Position` per searched position (label, component, channels, stride, input size),
        each able to price any op there (``position.macs(op)``).
    """
    bb, sizes = backbone_positions(structure, input_size)
    neck = neck_kind(structure.neck_type)
    cells = neck.positions(structure.feature_channels(), structure.neck_channels, sizes)
    head = detector_kind(detector_type).head_positions(structure, neck.output_sizes(sizes), num_rois)
    return bb + cells + head


def candidate_macs(positions: Sequence[Position], ops: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """The MACs of every candidate at every position: the table the search's FLOPs penalty uses.

    Args:
        positions: the searched positions (:func:`detector_positions`).
        ops: ``{component: [op names]}`` (:func:`normalize_ops`).

    Returns:
        ``{label: {op: MACs per image}}`` for every position and every op of its component's list.
    """
    return {p.label: {op: float(p.macs(op)) for op in ops[p.component]} for p in positions}


def position_choices(positions: Sequence[Position], ops: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """``{label: [candidate ops]}``: the search space without building it."""
    return {p.label: list(ops[p.component]) for p in positions}


def detector_choices(structure: DetectorStructure | None = None, ops: OpsArg = None) -> dict[str, list[str]]:
    """The candidates of the two-stage trinity space, without building it (what ``TrinitySpace`` would hold).

    Args:
        structure: the detector's structure; default the released one.
        ops: ``None`` (all 32 ops), one list for every component, or one list per component.

    Returns:
        ``{label: [candidate ops]}`` in the structure's label order.
    """
    structure = structure or DetectorStructure()
    return position_choices(detector_positions(structure), normalize_ops(ops))
