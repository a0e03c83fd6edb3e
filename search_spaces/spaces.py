"""NNI model spaces of the Hit-Detector: backbone, neck and head spaces and the trinity detector.

Each space *is* the component skeleton of :mod:`search_spaces.components` (it subclasses it)
filled by :func:`~search_spaces.choices.layer_choice_factory`, so the supernet and every
detector decoded from it come from one piece of code: built inside
``nni.nas.space.model_context(sample)`` a space is exactly the fixed component (same module
names, same parameters) that ``build_detector`` makes from the architecture JSON.

Every space takes ``ops``: ``None`` (all 32 ops of the pool), one list (every component) or a
dict ``{"backbone": [...], "neck": [...], "head": [...]}`` (paper Table 4: one sub space per
component). Every space reports, without a forward pass, the MACs of each candidate at each
position (:meth:`SpaceInfo.candidate_macs`) for the FLOPs penalty of the search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from search_spaces.choices import ModelSpace, SpaceError, layer_choice_factory
from search_spaces.components import Backbone, BlockHead
from search_spaces.detectors import DetectorSettings, faster_rcnn
from search_spaces.kinds import neck_kind
from search_spaces.panet import PANET, PANetNeck
from search_spaces.positions import (
    DEFAULT_INPUT_SIZE,
    DEFAULT_NUM_ROIS,
    OpsArg,
    Position,
    backbone_positions,
    candidate_macs,
    head_positions,
    level_sizes,
    normalize_ops,
    position_choices,
)
from search_spaces.structure import DEFAULT_NECK, DetectorStructure

__all__ = ["SpaceInfo", "BackboneSpace", "NeckSpace", "HeadSpace", "TrinitySpace", "neck_space_class", "space_info"]


class SpaceInfo:
    """What every Hit-Detector space knows about itself without a forward pass.

    Subclasses set ``positions`` (one :class:`~search_spaces.positions.Position` per label)
    and ``ops`` (the op list of each component) before building their modules.
    """

    positions: list[Position]
    ops: dict[str, tuple[str, ...]]

    def labels(self) -> list[str]:
        """The searched positions' labels, in a stable order."""
        return [p.label for p in self.positions]

    def search_space_choices(self) -> dict[str, list[str]]:
        """``{label: [candidate ops]}`` of this space (also on a fixed model built from it)."""
        return position_choices(self.positions, self.ops)

    def candidate_macs(self) -> dict[str, dict[str, float]]:
        """``{label: {op: MACs}}``: multiply-accumulates per image of each candidate at each position.

        Computed analytically with :func:`search_spaces.ops.op_cost` for the space's
        ``input_size`` (the padded image batch that enters the backbone) and, in the RoI head,
        multiplied by ``num_rois``. Raw counts (not FLOPs, not normalised).
        """
        return candidate_macs(self.positions, self.ops)

    def hpo_search_space(self) -> dict[str, dict[str, Any]]:
        """The NNI HPO search-space JSON: ``{label: {"_type": "choice", "_value": [ops]}}``."""
        from search_spaces.hpo import hpo_search_space

        return hpo_search_space(self.search_space_choices())

    def validate_sample(self, sample: Mapping[str, Any]) -> dict[str, str]:
        """Check that ``sample`` picks one candidate at every position; returns it in label order.

        Extra labels are allowed (a trinity sample fits each component space).
        """
        choices = self.search_space_choices()
        missing = [label for label in choices if label not in sample]
        if missing:
            raise SpaceError(f"the sample has no op for {len(missing)} position(s), first {missing[0]!r}")
        for label, ops in choices.items():
            if sample[label] not in ops:
                raise SpaceError(f"{label}: op {sample[label]!r} is not a candidate here; candidates: {', '.join(ops)}")
        return {label: str(sample[label]) for label in choices}


def _structure(structure: DetectorStructure | None, half_depth: bool) -> DetectorStructure:
    structure = structure or DetectorStructure()
    return structure.half_depth() if half_depth else structure


def _record(space: Any, structure: DetectorStructure, ops: OpsArg, input_size: tuple[int, int]) -> DetectorStructure:
    """What every space keeps about itself: its structure, the op list of each component, its input size."""
    space.structure = structure
    space.ops = normalize_ops(ops)
    space.input_size = tuple(input_size)
    return structure


def _body_and_neck(space: Any) -> tuple[BackboneSpace, nn.Module]:
    """A detector space's searched backbone and neck (of its structure's neck kind), on its ops and input size."""
    st = space.structure
    return (BackboneSpace(st, space.ops, input_size=space.input_size),
            neck_space_class(st.neck_type)(st, space.ops, input_size=space.input_size))


class BackboneSpace(Backbone, SpaceInfo, ModelSpace):
    """Searched backbone: fixed stem, one ``LayerChoice`` per block of each stage, fixed tail.

    ``forward(images)`` returns ``[C1, ..., C_L]``; ``out_channels`` and ``strides`` describe them.
    The default is the released Hit-Detector structure (4+4+8+4 blocks); ``half_depth=True``
    gives the screening variant (2+2+4+2); other depths and widths come from
    ``DetectorStructure().with_depths(...)`` / ``.scaled(...)``.

    Args:
        structure: depths, channels and strides; default the released structure.
        ops: the candidates: ``None`` (all 32 ops), one list for every component, or
            ``{"backbone": [...], "neck": [...], "head": [...]}`` (a missing component keeps all 32).
        half_depth: keep every other block of each stage (the screening backbone).
        input_size: the padded input ``(height, width)`` the candidates' MACs are priced at.
    """

    def __init__(
        self,
        structure: DetectorStructure | None = None,
        ops: OpsArg = None,
        *,
        half_depth: bool = False,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    ) -> None:
        st = _record(self, _structure(structure, half_depth), ops, input_size)
        self.positions, self.level_sizes = backbone_positions(st, self.input_size)
        Backbone.__init__(self, st.stages, layer_choice_factory(self.ops), st.stem, st.tail, st.in_channels)


class _KindNeckSpace(SpaceInfo):
    """A neck kind's module as an NNI space: a ``LayerChoice`` per cell, and the cells' positions.

    Mixed in before the kind's module class (:func:`neck_space_class`), so that the space has the
    module names and parameters of the fixed neck; ``neck_type`` names the kind.
    """

    neck_type: str = DEFAULT_NECK

    def __init__(
        self,
        structure: DetectorStructure | None = None,
        ops: OpsArg = None,
        *,
        in_channels: Sequence[int] | None = None,
        channels: int | None = None,
        strides: Sequence[int] | None = None,
        extra_level: bool = True,
        half_depth: bool = False,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    ) -> None:
        st = _record(self, _structure(structure, half_depth), ops, input_size)
        channels = channels or st.neck_channels
        if in_channels is None:
            if strides is not None:
                raise SpaceError("strides is only used with in_channels (the features of another backbone)")
            in_channels = st.feature_channels()
            sizes = backbone_positions(st, self.input_size)[1]
        else:
            in_channels = list(in_channels)
            strides = list(strides) if strides is not None else [2 ** (i + 2) for i in range(len(in_channels))]
            if len(strides) != len(in_channels):
                raise SpaceError(f"strides {strides} and in_channels {in_channels} must have the same length")
            sizes = level_sizes(self.input_size, strides)
        kind = neck_kind(self.neck_type)
        self.positions = kind.positions(in_channels, channels, sizes)
        kind.module_class.__init__(self, in_channels, channels, layer_choice_factory(self.ops), extra_level)


class NeckSpace(_KindNeckSpace, PANetNeck, ModelSpace):
    """Searched PANet neck: L lateral cells and L output cells (8 for four levels).

    By default its inputs are the structure's backbone outputs; to put it behind another
    backbone give ``in_channels`` (and ``strides`` of those features, for
    :meth:`candidate_macs`; default 4, 8, 16, ...). ``forward([C1..C_L])`` returns an
    ``OrderedDict`` "0".."L-1" (+ "pool" with ``extra_level``), like torchvision's FPN.
    The space of another neck kind is :func:`neck_space_class`'s.

    Args:
        structure: the detector structure whose backbone feeds the neck; default the released one.
        ops: the candidates: ``None`` (all 32 ops), one list for every component, or
            ``{"backbone": [...], "neck": [...], "head": [...]}`` (a missing component keeps all 32).
        in_channels: the channels of the features of another backbone (default: the structure's).
        channels: the channels of every output level (default: ``structure.neck_channels``).
        strides: the strides of ``in_channels``'s features, for the MACs (default 4, 8, 16, ...).
        extra_level: add the "pool" level (a stride-2 max-pool of the last level) for the RPN.
        half_depth: price the features of the half-depth backbone.
        input_size: the padded input ``(height, width)`` the candidates' MACs are priced at.
    """

    neck_type = PANET


_NECK_SPACES: dict[str, type] = {PANET: NeckSpace}


def neck_space_class(neck_type: str) -> type:
    """The NNI space class of a registered neck kind: its module class with a choice per cell.

    Args:
        neck_type: a registered neck kind (:func:`search_spaces.neck_types`), e.g. ``"panet"``.

    Returns:
        The space class (made once per kind and reused), taking :class:`NeckSpace`'s arguments;
        ``NeckSpace`` itself for ``"panet"``.

    Raises:
        ValueError: no neck kind of that name is registered.
    """
    if neck_type not in _NECK_SPACES:
        module_class = neck_kind(neck_type).module_class
        _NECK_SPACES[neck_type] = type(f"{module_class.__name__}Space", (_KindNeckSpace, module_class, ModelSpace),
                                       {"neck_type": neck_type, "__module__": __name__})
    return _NECK_SPACES[neck_type]


class HeadSpace(BlockHead, SpaceInfo, ModelSpace):
    """Searched RoI box head: ``num_blocks`` choices at RoI resolution, flatten, fc + ReLU.

    ``forward(roi_features [R, channels, roi_size, roi_size])`` returns ``[R, fc_channels]``;
    a drop-in ``box_head`` for torchvision's ``FasterRCNN``.

    Args:
        structure: supplies the defaults of the other arguments; default the released structure.
        ops: the candidates: ``None`` (all 32), one list, or a dict whose ``"head"`` entry is used.
        channels: the RoI features' channels (default ``structure.neck_channels``).
        roi_size: the RoI features' height and width (default ``structure.roi_size``, 7).
        num_blocks: the searched blocks (default ``structure.head_blocks``, 4).
        fc_channels: the fc layer's width (default ``structure.fc_channels``).
        num_rois: the RoIs per image the MACs are priced for.
    """

    def __init__(
        self,
        structure: DetectorStructure | None = None,
        ops: OpsArg = None,
        *,
        channels: int | None = None,
        roi_size: int | None = None,
        num_blocks: int | None = None,
        fc_channels: int | None = None,
        num_rois: int = DEFAULT_NUM_ROIS,
    ) -> None:
        st = structure or DetectorStructure()
        self.structure = st
        self.ops = normalize_ops(ops)
        self.num_rois = num_rois
        channels = channels or st.neck_channels
        roi_size = roi_size or st.roi_size
        num_blocks = st.head_blocks if num_blocks is None else num_blocks
        fc_channels = fc_channels or st.fc_channels
        self.positions = head_positions(channels, roi_size, num_blocks, num_rois)
        BlockHead.__init__(self, channels, roi_size, num_blocks, fc_channels, layer_choice_factory(self.ops))


class TrinitySpace(FasterRCNN, SpaceInfo, ModelSpace):
    """The two-stage trinity space: a torchvision ``FasterRCNN`` with searched backbone, neck and head.

    ``TrinitySpace()`` is the default space: the released structure (4+4+8+4 backbone blocks,
    8 neck cells, 4 head blocks: 32 positions) with all 32 ops everywhere, so the released
    Hit-Detector is one of its samples. Its component spaces are ``self.backbone.body``
    (:class:`BackboneSpace`), ``self.backbone.neck`` (:class:`NeckSpace`) and
    ``self.roi_heads.box_head`` (:class:`HeadSpace`), at the same attribute paths as in the
    fixed detector, so a model built in ``model_context(sample)`` has the state-dict keys of
    ``build_detector(Architecture.from_sample(sample, space.structure, space.settings))``.

    Args:
        structure: depths, channels and strides; default the released structure.
        ops: the candidates: ``None`` (all 32 ops), one list for every component, or
            ``{"backbone": [...], "neck": [...], "head": [...]}`` (a missing component keeps all 32).
        settings: torchvision's Faster R-CNN settings (classes, input sizes, anchors, proposals, RoIs);
            default ``DetectorSettings()``, the paper's.
        half_depth: keep every other backbone block (the screening supernet, 2+2+4+2).
        input_size: the padded input ``(height, width)`` the candidates' MACs are priced at.
        num_rois: the RoIs per image the head's MACs are priced for.
    """

    def __init__(
        self,
        structure: DetectorStructure | None = None,
        ops: OpsArg = None,
        settings: DetectorSettings | None = None,
        *,
        half_depth: bool = False,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        num_rois: int = DEFAULT_NUM_ROIS,
    ) -> None:
        st = _record(self, _structure(structure, half_depth), ops, input_size)
        self.settings = settings or DetectorSettings()
        self.num_rois = num_rois
        body, neck = _body_and_neck(self)
        head = HeadSpace(st, self.ops, num_rois=num_rois)
        self.positions = body.positions + neck.positions + head.positions
        det = faster_rcnn(st, self.settings, layer_choice_factory(self.ops), body=body, neck=neck, box_head=head)
        # FasterRCNN.__init__ only assembles these parts; faster_rcnn() is the one place that
        # configures them, so take its parts instead of repeating its settings here.
        GeneralizedRCNN.__init__(self, det.backbone, det.rpn, det.roi_heads, det.transform)

    def forward(self, images: Any, targets: Any = None) -> Any:
        """torchvision's ``FasterRCNN.forward``; rejects NNI's shape tracing with a clear error."""
        _reject_shape_tracing(images, type(self).__name__)
        return super().forward(images, targets)

    def component_spaces(self) -> dict[str, nn.Module]:
        """``{"backbone": BackboneSpace, "neck": NeckSpace, "head": HeadSpace}`` of this detector."""
        return {"backbone": self.backbone.body, "neck": self.backbone.neck, "head": self.roi_heads.box_head}


def _reject_shape_tracing(images: Any, name: str) -> None:
    """NNI's ``FlopsProfiler`` (and so ``DARTS(penalty=...)``) cannot trace a torchvision detector."""
    first = images[0] if isinstance(images, (list, tuple)) and images else images
    if type(first).__name__ == "ShapeTensor":
        raise SpaceError(
            f"NNI's shape inference (FlopsProfiler, the penalty= of DARTS/Proxyless) cannot trace {name}: "
            "torchvision's detection transform loses the shapes. Use space.candidate_macs() (analytic MACs "
            "of every candidate at every position) for a FLOPs penalty, or profile a component space "
            "(BackboneSpace, NeckSpace, HeadSpace) on its own."
        )


def space_info(space: nn.Module) -> SpaceInfo:
    """The :class:`SpaceInfo` (structure, ops, positions, candidate MACs) of a space.

    Args:
        space: a HitDet space, or a model with one inside.

    Returns:
        ``space`` itself if it is one, else the first HitDet space among its modules.

    Raises:
        SpaceError: no HitDet space in ``space``.
    """
    if isinstance(space, SpaceInfo):
        return space
    for module in space.modules():
        if isinstance(module, SpaceInfo):
            return module
    raise SpaceError(f"{type(space).__name__} is not a Hit-Detector search space")
