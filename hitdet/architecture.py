"""The architecture JSON: a versioned, validated description of one searched detector.

An :class:`Architecture` is a :class:`~search_spaces.structure.DetectorStructure` (shape),
one op per searched label (exactly an NNI sample of the matching space) and the detector
settings. The JSON writes each op in place, next to its channels and stride, so that a
person can read it; :meth:`Architecture.sample` and :meth:`Architecture.from_sample`
convert to and from NNI's ``{label: op}`` dict. No NNI here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hitdet.errors import UserError
from hitdet.io import parse_json, read_json, write_json_atomic
from hitdet.io import write_text_atomic as write_text_atomic  # re-exported for benchmarks/search_vs_random.py
from search_spaces.detectors import DetectorSettings
from search_spaces.kinds import detector_kind, detector_types, neck_kind, neck_types
from search_spaces.ops import OPS, op_cost, unknown_op
from search_spaces.positions import detector_positions
from search_spaces.structure import DEFAULT_NECK, DetectorStructure, FixedLayer, Slot

FORMAT = "hitdet-architecture"
VERSION = 1
NUM_LEVELS = 4
STRIDES = (1, 2)  # every op in the pool keeps (1) or halves (2) the resolution

# Upper bounds of an architecture (docs/reliability.md says why): past them a detector gains nothing it can
# use, and the value would only fail later as an out-of-memory error in the middle of training.
MAX_CHANNELS = 4096  # per layer: 2x the widest layer of the common detection backbones (ResNet's C5, 2048)
MAX_IN_CHANNELS = 64  # image channels (RGB is 3)
MAX_ROI_SIZE = 64  # FPN puts each RoI on the level where it spans ~7-28 cells; a finer grid only interpolates
MAX_STAGE_BLOCKS = 64  # blocks per backbone stage: ResNet-152's deepest stage has 36
MAX_TAIL = 8  # fixed layers after the last stage (the released detector has 2)
MAX_HEAD_BLOCKS = 32  # RoI-head blocks (the paper's 4; a RetinaNet's two towers of 4 each)
MAX_PARAMS = 1_000_000_000  # the whole detector: 4 GB of float32 weights, ~16 GB to train with SGD
MAX_MACS = 10**13  # at its own largest input and RoI count: 35x the released detector's 280 G at 800x1344


class ArchitectureError(UserError):
    """An architecture file or dict that does not describe a valid detector."""


@dataclass
class Architecture:
    """One detector: its structure, the op at every searched position, its detector settings.

    It means one detector: :func:`hitdet.builder.build_detector` builds it at the channels it states.
    ``preset`` names the shipped preset it was loaded as (``load_architecture("hit-detector")``), ""
    otherwise; it is not part of the JSON, and a copy made with ``dataclasses.replace`` is no preset
    (the field is not an ``__init__`` argument). A training recipe's ``preset_width`` applies to presets only.

    Read one with :func:`load_architecture`, make one from a search with :meth:`from_sample`, write it with
    :meth:`save`, build it with :func:`hitdet.build_detector`.

    Args:
        structure: the backbone's layers (channels, strides, fixed stem and tail), the neck kind and
            channels, the head's size: :class:`search_spaces.DetectorStructure`.
        choices: ``{label: op}`` for every searched position of ``structure``.
        settings: torchvision's detector settings (classes, input sizes, anchors, proposals, RoIs).
        name: free text.
        detector_type: a registered detector kind, ``"faster_rcnn"`` or ``"retinanet"``.
        metadata: free-form; the search and the training record what they did here.
    """

    structure: DetectorStructure
    choices: dict[str, str]
    settings: DetectorSettings = field(default_factory=DetectorSettings)
    name: str = ""
    detector_type: str = "faster_rcnn"
    metadata: dict[str, Any] = field(default_factory=dict)
    preset: str = field(default="", init=False, compare=False)

    def sample(self) -> dict[str, str]:
        """The NNI sample of this architecture.

        Returns:
            ``{label: op}`` for every searched position, in the structure's label order (backbone blocks,
            neck cells, head blocks), e.g. ``{"backbone/s1_b0": "ir_k3_e3", ...}``.
        """
        return {label: self.choices[label] for label in self.structure.labels()}

    @classmethod
    def from_sample(
        cls,
        sample: dict[str, Any],
        structure: DetectorStructure | None = None,
        settings: DetectorSettings | None = None,
        **kwargs: Any,
    ) -> Architecture:
        """The architecture of an NNI sample of a search space (the inverse of :meth:`sample`).

        Args:
            sample: ``{label: op}`` with an op for every searched position of ``structure`` (extra keys
                are ignored), e.g. ``strategy.export_result().sample``.
            structure: the space's structure (``space.structure``); default the released structure.
            settings: the detector settings (``space.settings``); default ``DetectorSettings()``.
            **kwargs: the other fields: ``name``, ``detector_type`` ("faster_rcnn" or "retinanet"),
                ``metadata``.

        Returns:
            The validated architecture.

        Raises:
            ArchitectureError: a position without an op, an unknown op, channels a grouped op cannot divide.
        """
        structure = structure or DetectorStructure()
        missing = [label for label in structure.labels() if label not in sample]
        if missing:
            raise ArchitectureError(f"sample has no op for {len(missing)} position(s), first {missing[0]!r}")
        choices = {label: str(sample[label]) for label in structure.labels()}
        arch = cls(structure, choices, settings or DetectorSettings(), **kwargs)
        validate(arch, "sample")
        return arch

    def to_dict(self) -> dict[str, Any]:
        """The architecture JSON document (docs/architecture-json.md) as a dict.

        Returns:
            A dict with ``format``, ``version``, ``name``, ``detector``, ``backbone``, ``neck``, ``head`` and
            ``metadata``, which :func:`load_architecture` reads back to an equal architecture.
        """
        st, ops = self.structure, self.sample()

        def layer(op: str, out: int, stride: int) -> dict[str, Any]:
            return {"op": op, "out_channels": out, "stride": stride}

        stages = [
            [layer(ops[label], slot.out_channels, slot.stride) for label, slot in zip(labels, stage, strict=True)]
            for labels, stage in zip(_stage_labels(st), st.stages, strict=True)
        ]
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "detector": {"type": self.detector_type, **self.settings.to_dict()},
            "backbone": {
                "in_channels": st.in_channels,
                "stem": layer(st.stem.op, st.stem.out_channels, st.stem.stride),
                "stages": stages,
                "tail": [layer(t.op, t.out_channels, t.stride) for t in st.tail],
            },
            "neck": {**({"type": st.neck_type} if st.neck_type != DEFAULT_NECK else {}),  # PANet unless it says
                     "channels": st.neck_channels, "cells": [ops[label] for label in st.neck_labels()]},
            "head": {
                "blocks": [ops[label] for label in st.head_labels()],
                "fc_channels": st.fc_channels,
                "roi_size": st.roi_size,
            },
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the architecture JSON atomically (a temporary file in the same folder, fsync'ed, renamed).

        Args:
            path: the file to write; an existing file is replaced.

        Returns:
            The path written.
        """
        return write_json_atomic(path, self.to_dict())


def width_record(arch: Architecture) -> str | None:
    """How the channels of ``arch`` were scaled, in words (``hitdet info``), from its metadata's ``width`` record.

    ``hitdet train`` records a width multiplier it applied (``width``, or a recipe's ``preset_width`` for a
    preset); ``hitdet screen``/``search`` the one their supernet was scaled by (``train.width``).
    """
    record = arch.metadata.get("width")
    if isinstance(record, dict) and isinstance(record.get("multiplier"), int | float):
        return f"{record['multiplier']:g} x the channels of {record.get('of', '?')} (set by {record.get('by', '?')})"
    return None


def architecture_categories(arch: Architecture) -> list[int] | None:
    """The category ids (in label order) a trained architecture was trained with, if its metadata records them.

    ``hitdet train`` records them (``metadata.categories``), so that evaluation and a resumed run map
    labels 1..K back to the same ids whatever dataset they read.
    """
    cats = arch.metadata.get("categories")
    if isinstance(cats, list) and all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in cats):
        return [c["id"] for c in cats]
    return None


def _stage_labels(st: DetectorStructure) -> list[list[str]]:
    labels = iter(st.backbone_labels())
    return [[next(labels) for _ in stage] for stage in st.stages]


# ---------------------------------------------------------------- parsing and validation


class _Reader:
    """Typed access to a JSON object that names the offending field on error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ArchitectureError:
        return ArchitectureError(f"{self.source}: {where}: {message}")

    def get(self, obj: dict, key: str, where: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if not isinstance(obj, dict):
            raise self.fail(where, f"expected an object, got {type(obj).__name__}")
        if key not in obj:
            if default is ...:
                raise self.fail(f"{where}.{key}" if where else key, "missing")
            return default
        return self.check(obj[key], f"{where}.{key}" if where else key, kind)

    def check(self, value: Any, where: str, kind: type | tuple[type, ...]) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(where, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def positive(self, obj: dict, key: str, where: str, default: Any = ...) -> int:
        value = self.get(obj, key, where, int, default)
        if value < 1:
            raise self.fail(f"{where}.{key}", f"must be a positive integer, got {value}")
        return value

    def op(self, value: Any, where: str) -> str:
        self.check(value, where, str)
        if value not in OPS:
            raise self.fail(where, f"{unknown_op(value)}; see the op pool: search_spaces.OPS")
        return value

    def ops(self, obj: dict, key: str, where: str, count: int | None = None) -> list[str]:
        values = self.get(obj, key, where, list)
        if count is not None and len(values) != count:
            raise self.fail(f"{where}.{key}", f"expected {count} ops, got {len(values)}")
        return [self.op(v, f"{where}.{key}[{i}]") for i, v in enumerate(values)]

    def layer(self, obj: Any, where: str) -> tuple[str, int, int]:
        self.check(obj, where, dict)
        unknown = set(obj) - {"op", "out_channels", "stride"}
        if unknown:
            raise self.fail(where, f"unknown key(s) {sorted(unknown)}")
        op = self.op(self.get(obj, "op", where, str), f"{where}.op")
        stride = self.positive(obj, "stride", where, 1)
        if stride not in STRIDES:
            raise self.fail(f"{where}.stride", f"must be 1 or 2 (a layer keeps or halves the resolution), got {stride}")
        return op, self.positive(obj, "out_channels", where), stride


def _known_keys(reader: _Reader, obj: dict, where: str, keys: set[str]) -> None:
    unknown = set(obj) - keys
    if unknown:
        raise reader.fail(where or "top level", f"unknown key(s) {sorted(unknown)}")


def from_dict(data: Any, source: str = "architecture") -> Architecture:
    """Parse and validate an architecture JSON object; errors name ``source`` and the field."""
    r = _Reader(source)
    r.check(data, "top level", dict)
    fmt = r.get(data, "format", "", str)
    if fmt != FORMAT:
        raise r.fail("format", f"expected {FORMAT!r}, got {fmt!r}")
    version = r.get(data, "version", "", int)
    if version != VERSION:
        raise r.fail("version", f"unsupported version {version} (this hitdet reads version {VERSION})")
    _known_keys(r, data, "", {"format", "version", "name", "detector", "backbone", "neck", "head", "metadata"})

    det = r.get(data, "detector", "", dict)
    dtype = r.get(det, "type", "detector", str)
    if dtype not in detector_types():
        raise r.fail("detector.type", f"unknown detector type {dtype!r} (known: {', '.join(detector_types())})")
    types = DetectorSettings.field_types()
    _known_keys(r, det, "detector", {"type", *types})
    settings = DetectorSettings(**{k: r.get(det, k, "detector", types[k]) for k in types if k in det})
    try:
        settings.validate()
    except ValueError as exc:
        raise ArchitectureError(f"{source}: detector.{exc}") from None

    bb = r.get(data, "backbone", "", dict)
    _known_keys(r, bb, "backbone", {"in_channels", "stem", "stages", "tail"})
    stem = FixedLayer(*r.layer(r.get(bb, "stem", "backbone", dict), "backbone.stem"))
    raw_stages = r.get(bb, "stages", "backbone", list)
    if len(raw_stages) != NUM_LEVELS:
        raise r.fail("backbone.stages", f"expected {NUM_LEVELS} stages (C1..C4), got {len(raw_stages)}")
    stages, choices = [], {}
    for s, raw in enumerate(raw_stages):
        where = f"backbone.stages[{s}]"
        r.check(raw, where, list)
        if not raw:
            raise r.fail(where, "a stage needs at least one block")
        stage = []
        for b, block in enumerate(raw):
            op, out, stride = r.layer(block, f"{where}[{b}]")
            stage.append(Slot(out, stride))
            choices[f"backbone/s{s + 1}_b{b}"] = op
        stages.append(tuple(stage))
    tail = tuple(
        FixedLayer(*r.layer(t, f"backbone.tail[{i}]"))
        for i, t in enumerate(r.get(bb, "tail", "backbone", list, []))
    )

    neck = r.get(data, "neck", "", dict)
    _known_keys(r, neck, "neck", {"type", "channels", "cells"})
    neck_type = r.get(neck, "type", "neck", str, DEFAULT_NECK)
    if neck_type not in neck_types():
        raise r.fail("neck.type", f"unknown neck type {neck_type!r} (known: {', '.join(neck_types())})")
    cells = r.ops(neck, "cells", "neck", len(neck_kind(neck_type).cells(NUM_LEVELS)))
    head = r.get(data, "head", "", dict)
    _known_keys(r, head, "head", {"blocks", "fc_channels", "roi_size"})
    blocks = r.ops(head, "blocks", "head")
    if not blocks:
        raise r.fail("head.blocks", "expected at least one block")

    structure = DetectorStructure(
        stem=stem,
        stages=tuple(stages),
        tail=tail,
        neck_channels=r.positive(neck, "channels", "neck"),
        head_blocks=len(blocks),
        fc_channels=r.positive(head, "fc_channels", "head"),
        roi_size=r.positive(head, "roi_size", "head", 7),
        in_channels=r.positive(bb, "in_channels", "backbone", 3),
        neck_type=neck_type,
    )
    choices.update(zip(structure.neck_labels(), cells, strict=True))
    choices.update(zip(structure.head_labels(), blocks, strict=True))
    arch = Architecture(
        structure,
        choices,
        settings,
        name=r.get(data, "name", "", str, ""),
        detector_type=dtype,
        metadata=r.get(data, "metadata", "", dict, {}),
    )
    validate(arch, source)
    return arch


def _where(label: str, structure: DetectorStructure) -> str:
    """The JSON field of a searched label, for error messages."""
    kind, pos = label.split("/")
    if kind == "backbone":
        s, b = pos[1:].split("_b")
        return f"backbone.stages[{int(s) - 1}][{b}].op"
    if kind == "neck":
        labels = structure.neck_labels()
        return f"neck.cells[{labels.index(label)}]"
    return f"head.blocks[{pos[1:]}]"


def validate(arch: Architecture, source: str) -> None:
    """Check the detector kind's rule, and that every op can be built with its channels (grouped ops need
    divisible channels) at the searched positions the kinds place (:func:`~search_spaces.positions.detector_positions`).
    """
    st = arch.structure
    if arch.detector_type not in detector_types():
        raise ArchitectureError(
            f"{source}: detector.type: unknown detector type {arch.detector_type!r} "
            f"(known: {', '.join(detector_types())})"
        )
    try:
        detector_kind(arch.detector_type).check(st)
    except ValueError as exc:
        raise ArchitectureError(f"{source}: {exc}") from None
    searched = [(_where(p.label, st), arch.choices[p.label], p.in_channels, p.out_channels)
                for p in detector_positions(st, detector_type=arch.detector_type)]
    backbone = len(st.backbone_labels())
    checks = [("backbone.stem.op", st.stem.op, st.in_channels, st.stem.out_channels), *searched[:backbone]]
    cin = st.stages[-1][-1].out_channels
    for i, t in enumerate(st.tail):
        checks.append((f"backbone.tail[{i}].op", t.op, cin, t.out_channels))
        cin = t.out_channels
    checks += searched[backbone:]  # the neck's cells, then the head's
    check_bounds(arch, source)
    for where, op, c_in, c_out in checks:
        try:
            op_cost(op, c_in, c_out, 1, 1, 1)
        except ValueError as exc:
            raise ArchitectureError(f"{source}: {where}: {exc}") from None


def check_bounds(arch: Architecture, source: str) -> None:
    """Refuse sizes no detector can use (channels, depth, RoI size, and the whole detector's parameters and
    MACs at its own input size), naming the field: what ``hitdet info`` and ``hitdet train`` both refuse."""
    from search_spaces.costs import detector_cost

    st = arch.structure

    def at_most(where: str, value: int, bound: int, what: str = "") -> None:
        if value > bound:
            raise ArchitectureError(f"{source}: {where}: must be at most {bound}{what}, got {value}")

    at_most("backbone.in_channels", st.in_channels, MAX_IN_CHANNELS)
    at_most("backbone.stem.out_channels", st.stem.out_channels, MAX_CHANNELS)
    for s, stage in enumerate(st.stages):
        at_most(f"backbone.stages[{s}]", len(stage), MAX_STAGE_BLOCKS, " blocks")
        for b, slot in enumerate(stage):
            at_most(f"backbone.stages[{s}][{b}].out_channels", slot.out_channels, MAX_CHANNELS)
    at_most("backbone.tail", len(st.tail), MAX_TAIL, " layers")
    for i, t in enumerate(st.tail):
        at_most(f"backbone.tail[{i}].out_channels", t.out_channels, MAX_CHANNELS)
    at_most("neck.channels", st.neck_channels, MAX_CHANNELS)
    at_most("head.fc_channels", st.fc_channels, MAX_CHANNELS)
    at_most("head.roi_size", st.roi_size, MAX_ROI_SIZE)
    at_most("head.blocks", st.head_blocks, MAX_HEAD_BLOCKS, " blocks")
    try:
        total = detector_cost(st, arch.sample(), arch.settings.num_classes, arch.settings.padded_size(),
                              arch.settings.priced_rois(), arch.detector_type)["total"]
    except (ValueError, KeyError):
        return  # an op that cannot be built: the op check names it
    h, w = arch.settings.padded_size()
    if total.params > MAX_PARAMS:
        raise ArchitectureError(f"{source}: the detector has {total.params / 1e9:.3g} G parameters, more than the "
                                f"{MAX_PARAMS / 1e9:.3g} G bound (docs/reliability.md); fewer channels or blocks")
    if total.macs > MAX_MACS:
        raise ArchitectureError(f"{source}: the detector needs {total.macs / 1e12:.3g} T MACs at {h}x{w} with "
                                f"{arch.settings.priced_rois()} RoIs, more than {MAX_MACS / 1e12:.3g} T; fewer "
                                "channels or blocks, a smaller detector.min_size/max_size or fewer proposals")


def preset_names() -> list[str]:
    """The names of the architectures shipped with hitdet.

    Returns:
        The sorted preset names (e.g. ``["hit-detector"]``), each a valid argument of :func:`load_architecture`.
    """
    files = resources.files("hitdet.presets").iterdir()
    return sorted(p.name.removesuffix(".json") for p in files if p.name.endswith(".json"))


def load_architecture(path_or_preset: str | os.PathLike[str]) -> Architecture:
    """Read and validate an architecture: a JSON file, or a preset shipped with hitdet by name.

    Args:
        path_or_preset: a path to an architecture JSON file, or a preset name (:func:`preset_names`, e.g.
            ``"hit-detector"``, the paper's released detector).

    Returns:
        The architecture. A preset's has ``preset`` set to its name.

    Raises:
        ArchitectureError: no such file or preset, invalid JSON, or a document that does not describe a
            valid detector; the one-line message names the file and the field.
    """
    name = str(path_or_preset)
    preset = resources.files("hitdet.presets").joinpath(f"{name}.json")
    if not name.endswith(".json") and os.sep not in name and preset.is_file():
        arch = from_dict(parse_json(preset.read_text(), f"preset {name}"), f"preset {name}")
        arch.preset = name
        return arch
    path = Path(name)
    if not path.exists():
        hint = "" if name.endswith(".json") else f" (and no preset of that name; presets: {', '.join(preset_names())})"
        raise ArchitectureError(f"{name}: no such file{hint}")
    return from_dict(read_json(path, what="architecture JSON", error=ArchitectureError), name)
