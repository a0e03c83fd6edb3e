"""Kinds of necks and detectors, and the registry that names them (as torchvision's ``models/_api.py`` does models).

A *neck kind* keeps together everything that makes one type of neck: the names of its searched cells
(the labels ``neck/CELL``, which the architecture JSON lists in ``neck.cells``), their positions
(channels and resolution, which the analytic MACs and the FLOPs penalty price), the cost of its
fixed layers, the sizes of the levels it outputs, and its module skeleton, filled by a block factory
(the chosen ops for a fixed detector, NNI choices for a search space). A *detector kind* does the
same for what is built around the backbone and the neck: its JSON rule, its head's positions and
fixed costs, its fixed builder and its search space.

A new kind is one file with a subclass and a registration::

    class MyNeck(NeckKind):
        name = "my-neck"
        ...
    register_neck(MyNeck())

after which an architecture JSON with ``"neck": {"type": "my-neck", ...}`` loads, builds, is costed by
``hitdet info`` and searched like the built-in PANet neck (``DetectorStructure(neck_type="my-neck")``).
The built-in kinds (:mod:`search_spaces.panet`; ``faster_rcnn`` and ``retinanet`` in
:mod:`search_spaces.detectors`) register themselves when ``search_spaces`` is imported.

Pure Python at import time: nothing here imports torch or NNI (the kinds do, in their own files).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from search_spaces.detectors import DetectorSettings
    from search_spaces.ops import Cost
    from search_spaces.positions import Position
    from search_spaces.structure import DetectorStructure

Size = tuple[int, int]
BlockFactory = Any  # search_spaces.components.BlockFactory: (label, in_channels, out_channels, stride) -> module


class NeckKind:
    """One type of neck: what its cells are, where they sit, what its fixed layers cost, and its module.

    A neck takes the backbone's levels C1..C_L (``in_channels``, at ``sizes``) and returns named levels
    of ``channels`` channels ("0".."L-1", and "pool" with ``extra_level``), as torchvision's FPN does.
    """

    name: str = ""
    # The neck's module class: ``module_class(in_channels, channels, make_block, extra_level)``, returning named
    # levels and setting ``out_channels``. It is also the base of the neck's search space
    # (:func:`search_spaces.spaces.neck_space_class`), so that the space has the fixed neck's module names.
    module_class: type

    def cells(self, num_levels: int) -> list[str]:
        """The searched cells for ``num_levels`` backbone levels, in label order (labels ``neck/CELL``)."""
        raise NotImplementedError

    def labels(self, num_levels: int) -> list[str]:
        """The searched positions' labels: ``neck/CELL`` for each of :meth:`cells`."""
        return [f"neck/{cell}" for cell in self.cells(num_levels)]

    def positions(self, in_channels: Sequence[int], channels: int, sizes: Sequence[Size]) -> list[Position]:
        """One position per cell, in label order: its input and output channels and its input resolution."""
        raise NotImplementedError

    def fixed_cost(self, channels: int, sizes: Sequence[Size]) -> Cost:
        """Parameters and MACs of the neck's layers that are not searched (none by default)."""
        from search_spaces.ops import Cost

        return Cost()

    def output_sizes(self, sizes: Sequence[Size], extra_level: bool = True) -> list[Size]:
        """The sizes of the levels the neck returns: one per input level, plus the stride-2 "pool" level."""
        pooled = [(-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2))] if extra_level else []
        return [*sizes, *pooled]

    def module(self, in_channels: Sequence[int], channels: int, make_block: BlockFactory,
               extra_level: bool = True) -> nn.Module:
        """The neck, its cells built by ``make_block(label, in_channels, out_channels, stride)``."""
        return self.module_class(in_channels, channels, make_block, extra_level)


class DetectorKind:
    """One type of detector around the searched backbone and neck: its head, costs, builder and space."""

    name: str = ""
    two_stage: bool = True  # an RPN and a RoI head (False: a dense head on every level, no RPN)
    space: str = ""  # "module:Class" of its NNI search space, imported only when a search builds it

    def check(self, structure: DetectorStructure) -> None:
        """The kind's rule on the structure (the architecture JSON's too): ``ValueError("json.field: why")``."""

    def search_structure(self, structure: DetectorStructure) -> DetectorStructure:
        """The structure a search of this kind searches, from a named one (e.g. two head towers)."""
        return structure

    def head_positions(self, structure: DetectorStructure, level_sizes: Sequence[Size],
                       num_rois: int) -> list[Position]:
        """The head's searched positions; ``level_sizes``: the neck's output levels."""
        raise NotImplementedError

    def fixed_cost(self, structure: DetectorStructure, num_classes: int, level_sizes: Sequence[Size],
                   num_rois: int) -> dict[str, Cost]:
        """Parameters and MACs of the fixed layers outside the backbone and the neck, per cost component."""
        raise NotImplementedError

    def build(self, structure: DetectorStructure, settings: DetectorSettings, make_block: BlockFactory) -> nn.Module:
        """The detector, its searched positions built by ``make_block``."""
        raise NotImplementedError

    def space_class(self) -> type:
        """The class named by :attr:`space`, imported now (it imports NNI: the fixed builder never calls this)."""
        module, _, name = self.space.partition(":")
        return getattr(importlib.import_module(module), name)

    def search_space(self, structure: DetectorStructure, ops: Any, settings: DetectorSettings, *,
                     input_size: Size, num_rois: int) -> nn.Module:
        """The NNI search space over ``ops`` (:meth:`space_class` built on ``structure``)."""
        return self.space_class()(structure, ops, settings, input_size=input_size, num_rois=num_rois)


NECKS: dict[str, NeckKind] = {}
DETECTORS: dict[str, DetectorKind] = {}


def _register(registry: dict[str, Any], kind: Any, what: str) -> Any:
    if not kind.name:
        raise ValueError(f"a {what} kind needs a name")
    if registry.get(kind.name, kind) is not kind:
        raise ValueError(f"{what} type {kind.name!r} is already registered")
    registry[kind.name] = kind
    return kind


def register_neck(kind: NeckKind) -> NeckKind:
    """Make a neck kind available by its name (``neck.type`` of an architecture JSON).

    Args:
        kind: the neck kind (a :class:`NeckKind` instance with a ``name``).

    Returns:
        ``kind`` itself, so that a module can register and keep it in one line.

    Raises:
        ValueError: a kind without a name, or another kind already registered under that name.
    """
    return _register(NECKS, kind, "neck")


def register_detector(kind: DetectorKind) -> DetectorKind:
    """Make a detector kind available by its name (``detector.type`` of an architecture JSON).

    Args:
        kind: the detector kind (a :class:`DetectorKind` instance with a ``name``).

    Returns:
        ``kind`` itself.

    Raises:
        ValueError: a kind without a name, or another kind already registered under that name.
    """
    return _register(DETECTORS, kind, "detector")


def _lookup(registry: Mapping[str, Any], name: str, what: str) -> Any:
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} type {name!r} (known: {', '.join(registry)})") from None


def neck_kind(name: str) -> NeckKind:
    """Look a registered neck kind up.

    Args:
        name: the kind's name, e.g. ``"panet"``.

    Returns:
        The :class:`NeckKind` registered under ``name``.

    Raises:
        ValueError: no such kind; the message names the known ones.
    """
    return _lookup(NECKS, name, "neck")


def detector_kind(name: str) -> DetectorKind:
    """Look a registered detector kind up.

    Args:
        name: the kind's name, e.g. ``"faster_rcnn"`` or ``"retinanet"``.

    Returns:
        The :class:`DetectorKind` registered under ``name``.

    Raises:
        ValueError: no such kind; the message names the known ones.
    """
    return _lookup(DETECTORS, name, "detector")


def neck_types() -> tuple[str, ...]:
    """The names of the registered neck kinds.

    Returns:
        The names, in registration order (``("panet", ...)``).
    """
    return tuple(NECKS)


def detector_types() -> tuple[str, ...]:
    """The names of the registered detector kinds.

    Returns:
        The names, in registration order (``("faster_rcnn", "retinanet", ...)``).
    """
    return tuple(DETECTORS)
