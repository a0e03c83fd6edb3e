"""Pretrained backbone weight files: write, read, and load into a detector or a supernet.

A file is ``torch.save({"format", "version", "state_dict", "metadata"})``: the backbone's
state dict with keys relative to the ``Backbone`` module (``stem.…``, ``stages.0.0.…``,
``tail.…``) and a small JSON-able metadata dict (kind, structure, candidates, epochs, metrics).
A supernet's keys carry the candidate's name after the block (``stages.0.0.ir_k3_e3.body.0.weight``,
NNI 3.0's ``LayerChoice`` naming); a fixed backbone's do not (``stages.0.0.body.0.weight``).

:func:`load_backbone_weights` loads a file into ``model.backbone.body`` of a fixed detector,
a trinity space, or a backbone (space) directly. Supernet weights load into a fixed backbone
too when the architecture's ops are given (the chosen candidates are extracted). No NNI here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hitdet.errors import UserError
from hitdet.io import read_json, save_torch_atomic

FORMAT = "hitdet-backbone-weights"
VERSION = 1
_LABEL = re.compile(r"^backbone/s(\d+)_b(\d+)$")


def _label_prefix(label: str) -> str | None:
    m = _LABEL.match(label)
    return f"stages.{int(m[1]) - 1}.{m[2]}." if m else None


@dataclass
class BackboneWeights:
    """The contents of a weights file."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    path: str = ""

    @property
    def kind(self) -> str:
        """``"supernet"``, ``"architecture"`` or ``"unknown"`` (a bare state dict)."""
        return str(self.metadata.get("kind", "unknown"))

    @property
    def candidates(self) -> dict[str, list[str]]:
        return dict(self.metadata.get("candidates") or {})


@dataclass
class LoadReport:
    """Which tensors a load matched, and which the target or the file lacked."""

    path: str
    kind: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the target, not in the file: left as they were
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the target: ignored
    extracted_from: int = 0  # supernet tensors of other candidates left out (supernet -> fixed)

    @property
    def total(self) -> int:
        return len(self.matched) + len(self.missing)

    def summary(self) -> str:
        """One line for the log: ``loaded 312/312 backbone tensors from X (supernet -> fixed); ...``."""
        text = f"loaded {len(self.matched)}/{self.total} backbone tensors from {self.path}"
        if self.extracted_from:
            text += f" (the architecture's candidates, out of the {self.kind} weights)"
        text += f"; {len(self.missing)} missing, {len(self.unexpected)} unexpected"
        if self.missing:
            text += f" (first missing: {self.missing[0]})"
        if self.unexpected:
            text += f" (first unexpected: {self.unexpected[0]})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "matched": len(self.matched),
            "missing": self.missing,
            "unexpected": self.unexpected,
        }


def save_backbone_weights(
    path: str | os.PathLike[str], backbone: nn.Module | Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> Path:
    """Write a backbone's state dict and ``metadata`` atomically (temporary file + rename)."""
    state = backbone.state_dict() if isinstance(backbone, nn.Module) else backbone
    state = {k: v.detach().cpu().clone() for k, v in state.items()}
    return save_torch_atomic(path, {"format": FORMAT, "version": VERSION, "state_dict": state,
                                    "metadata": dict(metadata)})


def read_backbone_weights(path: str | os.PathLike[str]) -> BackboneWeights:
    """Read a weights file (or a bare backbone state dict); UserError naming the file otherwise."""
    name = str(path)
    if not Path(name).is_file():
        raise UserError(f"{name}: no such weights file")
    try:
        data = torch.load(name, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's unpickler raises many types (IndexError, KeyError ...) on garbage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{name}: not a torch weights file ({first})") from None
    if isinstance(data, dict) and data.get("format") == FORMAT:
        if data.get("version") != VERSION:
            raise UserError(f"{name}: unsupported {FORMAT} version {data.get('version')!r} (this reads {VERSION})")
        state, meta = data.get("state_dict"), data.get("metadata") or {}
    elif isinstance(data, dict) and isinstance(data.get("state_dict"), dict) and "pytorch-lightning_version" in data:
        # A pretraining checkpoint (OUT/checkpoints/*.ckpt): its classifier's backbone.
        prefix = "model.backbone."
        state = {k[len(prefix) :]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
        meta = {"kind": "unknown", "epoch": data.get("epoch")}
        run = Path(name).resolve().parent.parent / "run.json"  # OUT/checkpoints/X.ckpt -> OUT/run.json
        try:
            meta.update(read_json(run)["target"])
        except (UserError, KeyError, TypeError, ValueError):
            pass
    elif isinstance(data, dict) and "format" in data:
        raise UserError(f"{name}: a {data['format']!r} file, not backbone weights ({FORMAT})")
    else:
        state, meta = data, {}
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{name}: holds no state dict of tensors")
    return BackboneWeights(dict(state), dict(meta), name)


def backbone_of(module: nn.Module) -> nn.Module:
    """``model.backbone.body`` of a detector (fixed or space), ``module.body`` of a backbone+neck, else ``module``."""
    inner = getattr(module, "backbone", None)
    if isinstance(inner, nn.Module) and isinstance(getattr(inner, "body", None), nn.Module):
        return inner.body
    body = getattr(module, "body", None)
    if isinstance(body, nn.Module) and hasattr(module, "neck"):
        return body
    return module


def choice_modules(module: nn.Module) -> dict[str, list[str]]:
    """``{qualified name: candidate names}`` of every choice in a supernet (LayerChoice, mixed or uniform layer).

    Duck-typed (a ``names`` list whose entries are children), so that no NNI import is needed.
    """
    found = {}
    for name, m in module.named_modules():
        names = getattr(m, "names", None)
        if isinstance(names, list) and names and all(str(n) in m._modules for n in names):
            found[name] = [str(n) for n in names]
    return found


def _is_arch_parameter(key: str) -> bool:
    """Architecture parameters of a mutated supernet (NNI's ``_arch_alpha``): never in weights files."""
    return key.rsplit(".", 1)[-1].startswith("_arch_")


def extract_architecture(weights: BackboneWeights, choices: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """The state dict of a fixed backbone cut out of supernet weights: the chosen candidate per block."""
    cands = weights.candidates
    if not cands:
        raise UserError(f"{weights.path}: supernet weights without their candidate list in the metadata")
    for label, ops in cands.items():
        if _label_prefix(label) is None:
            continue
        if label not in choices:
            raise UserError(f"{weights.path}: the architecture has no op for {label} (the supernet's positions differ)")
        if choices[label] not in ops:
            raise UserError(
                f"{weights.path}: {label}: op {choices[label]!r} is not among the supernet's candidates "
                f"({', '.join(ops)})"
            )
    # stages.S.B.OP.rest -> stages.S.B.rest for the chosen OP; the other candidates are dropped.
    result: dict[str, torch.Tensor] = {}
    for key, value in weights.state_dict.items():
        parts = key.split(".")
        if len(parts) > 4 and parts[0] == "stages":
            label = f"backbone/s{int(parts[1]) + 1}_b{parts[2]}"
            if label in cands and parts[3] in cands[label]:
                if parts[3] == choices[label]:
                    result[".".join(parts[:3] + parts[4:])] = value
                continue
        result[key] = value
    return result


def load_backbone_weights(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    choices: Mapping[str, str] | None = None,
    strict: bool = True,
) -> LoadReport:
    """Load a pretrained backbone file into ``module``'s backbone and say what was loaded.

    ``module`` is a fixed detector (``build_detector``), a trinity space, a backbone+neck, a
    ``Backbone`` or a ``BackboneSpace`` (plain, uniform or DARTS-mutated: α is never touched).
    ``choices`` (``arch.sample()``) lets supernet weights initialise a fixed backbone: each
    block takes its chosen candidate's tensors. Raises UserError (naming the file and the first
    offending tensor) when a shape differs, when nothing matches, or, with ``strict``, when the
    target has tensors the file lacks or the file has tensors the target lacks.
    """
    weights = read_backbone_weights(path)
    target = backbone_of(module)
    target_is_supernet = bool(choice_modules(target))
    what = "supernet backbone" if target_is_supernet else "backbone"
    state = weights.state_dict
    extracted = 0
    if weights.kind == "supernet" and not target_is_supernet:
        if choices is None:
            raise UserError(
                f"{weights.path}: holds supernet weights; give the architecture (its ops) to load them into "
                "a fixed backbone"
            )
        state = extract_architecture(weights, choices)
        extracted = len(weights.state_dict) - len(state)
    elif weights.kind == "architecture" and target_is_supernet:
        raise UserError(
            f"{weights.path}: holds a fixed architecture's backbone; a supernet needs supernet weights "
            "(hitdet pretrain --space ...)"
        )
    elif weights.kind == "architecture" and choices is not None:
        for label, ops in weights.candidates.items():
            if label in choices and ops and choices[label] != ops[0]:
                raise UserError(
                    f"{weights.path}: pretrained with {ops[0]} at {label}, but the architecture has {choices[label]}"
                )

    own = {k: v for k, v in target.state_dict().items() if not _is_arch_parameter(k)}
    report = LoadReport(str(path), weights.kind, extracted_from=extracted)
    for key, tensor in own.items():
        if key not in state:
            report.missing.append(key)
            continue
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(
                f"{path}: tensor {key} has shape {tuple(state[key].shape)} in the file but {tuple(tensor.shape)} "
                f"in the {what}: the weights were pretrained for another architecture or width"
            )
        report.matched.append(key)
    report.unexpected = [k for k in state if k not in own]
    if not report.matched:
        first = next(iter(own), "?")
        raise UserError(f"{path}: no tensor matches the {what} (it expects e.g. {first}): not weights for this model")
    if strict and report.missing:
        raise UserError(
            f"{path}: lacks {len(report.missing)} of the {what}'s {len(own)} tensors, first {report.missing[0]}: "
            "pretrained for another architecture"
        )
    if strict and report.unexpected:
        raise UserError(
            f"{path}: has {len(report.unexpected)} tensor(s) the {what} lacks, first {report.unexpected[0]}: "
            "pretrained for another architecture"
        )
    with torch.no_grad():
        target.load_state_dict({k: state[k] for k in report.matched}, strict=False)
    return report
