"""What pretraining trains: a backbone (fixed, or a supernet with α fixed and uniform) + pooling + linear.

A fixed architecture's backbone is built exactly as :func:`hitdet.build_detector` builds
``model.backbone.body``; a supernet backbone is the search-space engineer's
``BackboneSpace`` (one NNI ``LayerChoice`` per searched block) with its candidates
averaged: softmax of an α held at zero weights every candidate equally (paper Sec. 4.2,
"pretrain the backbone supernet ... with fixed architecture parameters").
:class:`UniformMixture` replaces each ``LayerChoice`` in place and keeps its candidates
under the same names, so the state-dict keys of the trained supernet are those of the
space (``stages.0.0.ir_k3_e3.body.0.weight``) and load into it, or into the space after
NNI's DARTS ``mutate_model`` (which adds only ``_arch_alpha``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hitdet.architecture import Architecture, load_architecture
from hitdet.errors import UserError
from search_spaces.components import Backbone, build_backbone, fixed_block_factory
from search_spaces.ops import OP_NAMES, build_op
from search_spaces.positions import SpaceError, check_op_list
from search_spaces.quiet import quiet_nni_import
from search_spaces.structure import DetectorStructure


class UniformMixture(nn.Module):
    """Every candidate of a ``LayerChoice``, weighted equally (softmax of a zero α): their mean."""

    def __init__(self, candidates: Mapping[str, nn.Module], label: str = "") -> None:
        super().__init__()
        if not candidates:
            raise ValueError("a mixture needs at least one candidate")
        self.label = label
        self.names = [str(n) for n in candidates]
        for name, module in candidates.items():
            self.add_module(str(name), module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._modules[self.names[0]](x)
        for name in self.names[1:]:
            out = out + self._modules[name](x)
        return out / len(self.names)

    def extra_repr(self) -> str:
        return f"label={self.label!r}, uniform over {len(self.names)}"


def make_uniform(module: nn.Module) -> int:
    """Replace every NNI ``LayerChoice`` under ``module`` by a :class:`UniformMixture`; returns how many."""
    LayerChoice = _import_nni()[0]
    found = [(name, m) for name, m in module.named_modules() if isinstance(m, LayerChoice)]
    for name, choice in found:
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        mixture = UniformMixture({str(n): choice[n] for n in choice.names}, label=choice.label)
        parent._modules[attr] = mixture
    return len(found)


def build_backbone_supernet(
    structure: DetectorStructure, ops: Sequence[str], *, prefer_space: bool = True
) -> nn.Module:
    """The backbone supernet of ``structure`` with ``ops`` at every searched block (LayerChoices).

    Uses ``search_spaces.spaces.BackboneSpace`` when it is there; otherwise (or with
    ``prefer_space=False``) the same skeleton filled with ``LayerChoice`` inside a ``ModelSpace``.
    Both give the same module names.
    """
    if prefer_space:
        try:
            from search_spaces.spaces import BackboneSpace
        except ImportError:
            pass
        else:
            return BackboneSpace(structure, {"backbone": list(ops)})
    return _fallback_space_class()(structure, list(ops))


def _import_nni() -> tuple[Any, Any, Any]:
    with quiet_nni_import():
        from nni.mutable.utils import label as nni_label
        from nni.nas.nn.pytorch import LayerChoice, ModelSpace
    return LayerChoice, ModelSpace, nni_label


@functools.cache
def _fallback_space_class() -> type:
    """``Backbone`` skeleton + ``ModelSpace`` with a LayerChoice per block (BackboneSpace's layout)."""
    LayerChoice, ModelSpace, nni_label = _import_nni()

    class BackboneSupernet(Backbone, ModelSpace):
        def __init__(self, structure: DetectorStructure, ops: list[str]) -> None:
            def make_block(label: str, cin: int, cout: int, stride: int) -> nn.Module:
                candidates = {op: build_op(op, cin, cout, stride) for op in ops}
                return LayerChoice(candidates, label=nni_label(label.split("/")))

            self.structure = structure
            Backbone.__init__(self, structure.stages, make_block, structure.stem, structure.tail, structure.in_channels)

    return BackboneSupernet


class BackboneClassifier(nn.Module):
    """Backbone + global average pooling of its last feature map + a linear layer."""

    def __init__(self, backbone: nn.Module, num_classes: int, channels: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        channels = channels or int(backbone.out_channels[-1])
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)[-1]
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(feat, 1), 1))


@dataclass
class PretrainTarget:
    """What a run pretrains: a fixed architecture's backbone or a backbone supernet.

    ``candidates`` maps each searched backbone label to its ops (one op for a fixed
    architecture). ``width`` is recorded because the weights only fit a detector of that width.
    """

    kind: str  # "architecture" or "supernet"
    structure: DetectorStructure
    candidates: dict[str, list[str]]
    name: str = ""
    width: float = 1.0
    half_depth: bool = False
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def choices(self) -> dict[str, str] | None:
        """``{label: op}`` of a fixed architecture (None for a supernet)."""
        if self.kind != "architecture":
            return None
        return {label: ops[0] for label, ops in self.candidates.items()}

    def build_backbone(self, uniform: bool = True) -> nn.Module:
        """The backbone module; a supernet's LayerChoices become uniform mixtures when ``uniform``."""
        if self.kind == "architecture":
            return build_backbone(self.structure, fixed_block_factory(self.choices or {}))
        ops = next(iter(self.candidates.values()))
        space = build_backbone_supernet(self.structure, ops)
        if uniform:
            make_uniform(space)
        return space

    def describe(self) -> dict[str, Any]:
        """JSON-able description, stored in the weights file and the run folder."""
        return {
            "kind": self.kind,
            "name": self.name,
            "width": self.width,
            "half_depth": self.half_depth,
            "structure": asdict(self.structure),
            "candidates": self.candidates,
            "source": self.source,
        }


def architecture_target(arch: Architecture | str | os.PathLike[str], width: float = 1.0) -> PretrainTarget:
    """The backbone of a fixed architecture (JSON file, preset name or loaded), optionally scaled."""
    if not isinstance(arch, Architecture):
        source = str(arch)
        arch = load_architecture(arch)
    else:
        source = arch.name or "architecture"
    structure = arch.structure.scaled(width) if width != 1.0 else arch.structure
    candidates = {label: [arch.choices[label]] for label in structure.backbone_labels()}
    return PretrainTarget(
        "architecture", structure, candidates, name=arch.name, width=width, source={"arch": source}
    )


def parse_space_ops(spec: str) -> tuple[list[str], dict[str, Any]]:
    """``--space`` value -> (backbone ops, source): ``all``, ``op1,op2,...`` or a sub-spaces JSON."""
    if spec == "all":
        return list(OP_NAMES), {"space": "all"}
    if spec.endswith(".json") or os.path.exists(spec):
        try:
            from strategies.screening import load_subspaces

            sub = load_subspaces(spec)
        except FileNotFoundError:
            raise UserError(f"{spec}: no such sub-spaces file") from None
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise UserError(f"{spec}: not a sub-spaces JSON: {exc}") from None
        if "backbone" not in sub.kept:
            raise UserError(f"{spec}: the sub-spaces JSON has no backbone component (has {', '.join(sub.kept)})")
        ops = list(sub.kept["backbone"])
        source = {"space": "sub-spaces", "file": spec}
    else:
        ops = [op.strip() for op in spec.split(",") if op.strip()]
        source = {"space": "ops"}
    try:
        check_op_list(ops, "--space")
    except SpaceError as exc:
        raise UserError(str(exc).replace("ops for --space", "--space")) from None
    return ops, source


def supernet_target(
    ops: Sequence[str],
    structure: DetectorStructure | None = None,
    *,
    half_depth: bool = False,
    width: float = 1.0,
    source: dict[str, Any] | None = None,
) -> PretrainTarget:
    """A backbone supernet: ``structure`` (default: the released one) at ``width``, optionally half depth."""
    structure = structure or DetectorStructure()
    if half_depth:
        structure = structure.half_depth()
    if width != 1.0:
        structure = structure.scaled(width)
    candidates = {label: list(ops) for label in structure.backbone_labels()}
    return PretrainTarget(
        "supernet", structure, candidates, width=width, half_depth=half_depth, source=dict(source or {})
    )
