"""The one-stage trinity space: torchvision ``RetinaNet`` with searched backbone, neck and head towers.

Paper Table 6 runs the same search on RetinaNet. Here the searched backbone and PANet neck
(:class:`~search_spaces.spaces.BackboneSpace`, :class:`~search_spaces.spaces.NeckSpace`) feed
a RetinaNet head whose two conv towers are searched positions (:class:`RetinaHeadSpace`):
``head/b0``..``head/b{n-1}`` is the classification tower, ``head/b{n}``..``head/b{2n-1}`` the
box-regression tower, n = ``structure.head_blocks // 2`` (default 4, as RetinaNet's towers).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torchvision.models.detection import RetinaNet
from torchvision.models.detection.retinanet import RetinaNetHead

from search_spaces.choices import ModelSpace, layer_choice_factory
from search_spaces.detectors import (
    DetectorSettings,
    retina_anchor_generator,
    retina_blocks_per_tower,
    retina_head_positions,
    retinanet_kwargs,
    search_retina_towers,
)
from search_spaces.kinds import neck_kind
from search_spaces.positions import DEFAULT_INPUT_SIZE, OpsArg, backbone_positions, normalize_ops
from search_spaces.spaces import SpaceInfo, _body_and_neck, _record, _reject_shape_tracing, _structure
from search_spaces.structure import DetectorStructure

__all__ = ["RetinaHeadSpace", "RetinaNetSpace", "retina_structure", "retina_level_sizes"]

RETINA_HEAD_BLOCKS = 8  # two towers of four, as torchvision's RetinaNet head


def retina_structure(structure: DetectorStructure | None = None) -> DetectorStructure:
    """The default one-stage structure: the released backbone and neck, two 4-block towers."""
    return structure if structure is not None else replace(DetectorStructure(), head_blocks=RETINA_HEAD_BLOCKS)


def retina_level_sizes(structure: DetectorStructure, input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Sizes of the levels the RetinaNet head runs on: the neck's L levels and the stride-2 "pool" level."""
    return neck_kind(structure.neck_type).output_sizes(backbone_positions(structure, input_size)[1])


class RetinaHeadSpace(RetinaNetHead, SpaceInfo, ModelSpace):
    """torchvision's ``RetinaNetHead`` with searched classification and box-regression towers."""

    def __init__(
        self,
        channels: int,
        num_anchors: int,
        num_classes: int,
        blocks_per_tower: int = 4,
        ops: OpsArg = None,
        *,
        level_sizes: list[tuple[int, int]] | None = None,
    ) -> None:
        self.ops = normalize_ops(ops)
        sizes = level_sizes or [(1, 1)]
        self.positions = retina_head_positions(channels, blocks_per_tower, sizes)
        RetinaNetHead.__init__(self, channels, num_anchors, num_classes)
        search_retina_towers(self, blocks_per_tower, layer_choice_factory(self.ops))


class RetinaNetSpace(RetinaNet, SpaceInfo, ModelSpace):
    """The one-stage trinity space (paper Table 6): searched backbone, neck and RetinaNet head towers.

    ``RetinaNetSpace()`` is the released backbone and neck structure with two 4-block towers
    (``head_blocks=8``) and all 32 ops at each of the 36 positions. A sample converts to an
    architecture JSON with ``detector.type = "retinanet"``.

    Args:
        structure: depths, channels and strides; default the released structure with two 4-block towers.
        ops: the candidates: ``None`` (all 32 ops), one list for every component, or
            ``{"backbone": [...], "neck": [...], "head": [...]}`` (a missing component keeps all 32).
        settings: torchvision's RetinaNet settings (classes, input sizes, anchors); default ``DetectorSettings()``.
        half_depth: keep every other backbone block.
        input_size: the padded input ``(height, width)`` the candidates' MACs are priced at.
    """

    def __init__(
        self,
        structure: DetectorStructure | None = None,
        ops: OpsArg = None,
        settings: DetectorSettings | None = None,
        *,
        half_depth: bool = False,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    ) -> None:
        st = _record(self, _structure(retina_structure(structure), half_depth), ops, input_size)
        self.settings = settings or DetectorSettings()
        body, neck = _body_and_neck(self)
        levels = st.num_levels + 1
        anchors = retina_anchor_generator(levels, self.settings.anchor_base)
        head = RetinaHeadSpace(
            st.neck_channels,
            anchors.num_anchors_per_location()[0],
            self.settings.num_classes,
            retina_blocks_per_tower(st),
            self.ops,
            level_sizes=retina_level_sizes(st, self.input_size),
        )
        self.positions = body.positions + neck.positions + head.positions
        kwargs = retinanet_kwargs(st, self.settings, layer_choice_factory(self.ops), body=body, neck=neck, head=head)
        RetinaNet.__init__(self, **kwargs)

    def forward(self, images: Any, targets: Any = None) -> Any:
        """torchvision's ``RetinaNet.forward``; rejects NNI's shape tracing with a clear error."""
        _reject_shape_tracing(images, type(self).__name__)
        return super().forward(images, targets)

    def component_spaces(self) -> dict[str, Any]:
        """``{"backbone": BackboneSpace, "neck": NeckSpace, "head": RetinaHeadSpace}``."""
        return {"backbone": self.backbone.body, "neck": self.backbone.neck, "head": self.head}
