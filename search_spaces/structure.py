"""The shape of a Hit-Detector: channels, strides and depths, with a label per searched position.

A structure says *where* the searched positions are; an architecture adds one op per label,
a search space one op list per label. Both are built by the same component code
(:mod:`search_spaces.components`), so a sample of a space and the architecture JSON made
from it give the same modules. The neck's cells are its kind's (:mod:`search_spaces.kinds`; PANet by
default). Pure Python: no torch, no NNI.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from search_spaces.kinds import neck_kind

DEFAULT_NECK = "panet"


@dataclass(frozen=True)
class FixedLayer:
    """A layer that is not searched (the stem, the tail): an op of the pool."""

    op: str
    out_channels: int
    stride: int = 1


@dataclass(frozen=True)
class Slot:
    """A searched position of the backbone: its output channels and stride."""

    out_channels: int
    stride: int = 1


def backbone_label(stage: int, block: int) -> str:
    """Label of block ``block`` (0-based) of stage ``stage`` (1-based, stage i produces C_i)."""
    return f"backbone/s{stage}_b{block}"


def head_label(block: int) -> str:
    return f"head/b{block}"


def _stage(channels: int, depth: int, stride: int = 2) -> tuple[Slot, ...]:
    return tuple(Slot(channels, stride if i == 0 else 1) for i in range(depth))


# The released Hit-Detector (Guo et al., CVPR 2020; docs/hit-detector.md): 4+4+8+4 searched blocks, the
# stride-16 stage widening from 184 to 256 channels halfway, and a fixed 2-layer tail to 2048.
RELEASED_STAGES: tuple[tuple[Slot, ...], ...] = (
    _stage(48, 4),
    _stage(96, 4),
    _stage(184, 4) + _stage(256, 4, stride=1),
    _stage(352, 4),
)
RELEASED_STEM = FixedLayer("conv_k3", 16, 2)
RELEASED_TAIL: tuple[FixedLayer, ...] = (FixedLayer("ir_k3_e3", 1024, 1), FixedLayer("conv_k1", 2048, 1))


@dataclass(frozen=True)
class DetectorStructure:
    """Everything about a detector's shape except the op at each searched position.

    The default is the released Hit-Detector's structure; :data:`CPU_STRUCTURE` is one sized for small
    images. :meth:`half_depth`, :meth:`scaled` and :meth:`with_depths` derive others.

    Args:
        stem: the fixed first layer (op, output channels, stride).
        stages: the backbone's searched stages, each a tuple of :class:`Slot` (output channels, stride);
            stage i's output is C_i and feeds the neck.
        tail: fixed layers after the last stage (their output is the last level's feature).
        neck_channels: the channels of every level the neck outputs.
        head_blocks: the searched blocks of the head.
        fc_channels: the two-stage RoI head's fc width.
        roi_size: the RoIAlign output size of the two-stage head.
        in_channels: the image channels.
        neck_type: a registered neck kind (:mod:`search_spaces.kinds`), ``"panet"`` by default.
    """

    stem: FixedLayer = RELEASED_STEM
    stages: tuple[tuple[Slot, ...], ...] = RELEASED_STAGES
    tail: tuple[FixedLayer, ...] = RELEASED_TAIL
    neck_channels: int = 256
    head_blocks: int = 4
    fc_channels: int = 512
    roi_size: int = 7
    in_channels: int = 3
    neck_type: str = DEFAULT_NECK  # a registered neck kind (search_spaces.kinds); its cells are the neck's labels

    @property
    def num_levels(self) -> int:
        return len(self.stages)

    def backbone_labels(self) -> list[str]:
        return [backbone_label(s + 1, b) for s, stage in enumerate(self.stages) for b in range(len(stage))]

    def neck_labels(self) -> list[str]:
        return neck_kind(self.neck_type).labels(self.num_levels)

    def head_labels(self) -> list[str]:
        return [head_label(i) for i in range(self.head_blocks)]

    def labels(self) -> list[str]:
        """The labels of every searched position.

        Returns:
            ``backbone/s{stage}_b{block}``, then the neck kind's cells (PANet: ``neck/lateral1..``,
            ``neck/out1..``), then ``head/b{i}``: the order of samples and architecture files.
        """
        return self.backbone_labels() + self.neck_labels() + self.head_labels()

    def feature_channels(self) -> list[int]:
        """Channels of C1..C_L, the backbone outputs that feed the neck."""
        chans = [stage[-1].out_channels for stage in self.stages]
        if self.tail:
            chans[-1] = self.tail[-1].out_channels
        return chans

    def half_depth(self) -> DetectorStructure:
        """The screening variant: every stage at half depth (4+4+8+4 -> 2+2+4+2).

        Each kept block keeps the channels and stride of the block it stands for, so the
        first block still downsamples and a stage that widens midway still does.

        Returns:
            A new structure; this one is unchanged.
        """
        stages = tuple(tuple(stage[i] for i in range(0, len(stage), 2)) for stage in self.stages)
        return replace(self, stages=stages)

    def scaled(self, width: float, min_channels: int = 8, divisor: int = 8) -> DetectorStructure:
        """The same structure with every width multiplied by ``width`` (for tiny tests and demos).

        Args:
            width: the multiplier of every channel count (stem, blocks, tail, neck, fc).
            min_channels: the fewest channels a layer keeps.
            divisor: every scaled channel count is rounded to a multiple of it.

        Returns:
            A new structure; this one is unchanged.
        """

        def w(c: int) -> int:
            return max(min_channels, int(round(c * width / divisor)) * divisor)

        return replace(
            self,
            stem=replace(self.stem, out_channels=w(self.stem.out_channels)),
            stages=tuple(tuple(replace(s, out_channels=w(s.out_channels)) for s in st) for st in self.stages),
            tail=tuple(replace(t, out_channels=w(t.out_channels)) for t in self.tail),
            neck_channels=w(self.neck_channels),
            fc_channels=w(self.fc_channels),
        )

    def with_depths(self, depths: tuple[int, ...], channels: tuple[int, ...] | None = None) -> DetectorStructure:
        """A plain structure: ``depths[i]`` blocks at ``channels[i]`` in stage i, stride 2 first.

        Args:
            depths: the searched blocks per stage.
            channels: the output channels per stage; default each stage's last channels.

        Returns:
            A new structure with the same stem, tail, neck and head.

        Raises:
            ValueError: ``depths`` and ``channels`` of different lengths.
        """
        channels = channels or tuple(stage[-1].out_channels for stage in self.stages)
        if len(depths) != len(channels):
            raise ValueError(f"depths {depths} and channels {channels} must have the same length")
        return replace(self, stages=tuple(_stage(c, d) for c, d in zip(channels, depths, strict=True)))


# A structure sized for CPU runs on small images (the demo, the tests' end-to-end runs and the
# search-vs-random harness): the released depths (4+4+8+4 searched blocks), but widths chosen so
# that every detector of the space can be competitive, not the released widths divided by 8
# (which left 8 channels in stage 1, a 32-channel neck and a 64-wide fc: a space of starved
# detectors). Four stages of 16..64 channels with no wide tail, a 64-channel neck and a 256-wide fc,
# the proportions of a plain hand-made small Faster R-CNN (MobileNetV2-style stages + FPN-lite).
CPU_STRUCTURE = DetectorStructure(
    stem=FixedLayer("conv_k3", 16, 2),
    stages=(_stage(16, 4), _stage(32, 4), _stage(48, 8), _stage(64, 4)),
    tail=(),
    neck_channels=64,
    fc_channels=256,
)

# Named structures a search config can pick (``structure: cpu``).
STRUCTURES: dict[str, DetectorStructure] = {"released": DetectorStructure(), "cpu": CPU_STRUCTURE}
