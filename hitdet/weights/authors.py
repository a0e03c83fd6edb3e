"""The authors' released ImageNet-pretrained backbone (``fbhit_7747.pth``) converted into a HitDet backbone file.

The Hit-Detector authors released the searched backbone pretrained on ImageNet for their mmdetection
code (HitDet.pytorch). Their detector loads it with ``load_checkpoint(backbone, path, strict=False)``,
which strips a ``module.`` prefix (the file was saved from a DataParallel model) and copies every
tensor whose name the backbone has. This module reads that layout and writes the same tensors under
HitDet's names, as a backbone weights file (:mod:`hitdet.weights.backbone`) that
``hitdet train ARCH --backbone-weights`` loads.

Their layout (read from their public model code, ``mmdet/models/backbones/fbnet*.py``): the backbone
is ``FBNet(arch="fbnet_hit")``, a flat ``layers`` list: ``layers.0`` the stem, a ``ConvBNReLU``
(``conv`` with a bias, then ``bn``); then one block per position in order, an ``MBBlock``
(``conv1``/``conv2``/``conv3``, each a ``ConvBNReLU`` holding ``conv`` and ``bn``: the 1x1 expansion to
``in_channels x expansion``, the depthwise k x k, the 1x1 projection), a ``SepBlock``
(``conv1``/``conv2``), an ``Identity`` with a projection (``conv.conv``/``conv.bn``) or a plain
``ConvBNReLU`` (``conv``/``bn``); the last two layers are the tail (``ir_k3_e3`` to 1024 channels and a
1x1 ``conv1`` to 2048). HitDet's backbone has the same blocks in the same order: ``stem``, then
``stages.S.B`` stage by stage, then ``tail.T``; each block's convolutions and batch norms are the same
modules in the same order (``body.0``/``body.1``, ``body.3``/``body.4``, ``body.6``/``body.7`` for an
inverted residual).

So the mapping is by position: their ``layers.i`` is HitDet's i-th block, and within a block their
convolutions and batch norms, in order, are HitDet's, in order. Every shape must agree. Their stem
convolution has a bias and HitDet's has none: a bias before a batch norm is the same as subtracting it
from the norm's running mean (``BN(conv(x) + b)`` with mean ``mu`` is ``BN(conv(x))`` with mean
``mu - b``; in training the batch mean absorbs it), so it is folded there, exactly.

What does not fit is refused with one line naming the tensor. Tensors outside ``layers`` (an ImageNet
classifier) are left out and counted, as their ``strict=False`` load left them out.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hitdet.errors import UserError

LAYOUT = "HitDet.pytorch FBNet (fbnet_hit)"
# The authors' fbnet_hit backbone, layer by layer, in HitDet's op names (their conv3 / conv1 / _r2 are
# HitDet's conv_k3 / conv_k1 / _d2). Shapes cannot tell a dilation apart; this list can.
FBNET_HIT_OPS = (
    "conv_k3",
    "ir_k3_e3", "ir_k3_e3", "ir_k3_e3_d2", "ir_k3_e3",
    "ir_k5_e6", "ir_k5_e6", "ir_k3_e3", "ir_k3_e3",
    "ir_k7_e6", "ir_k5_e6", "ir_k5_e6_d2", "ir_k5_e3",
    "ir_k5_e6", "ir_k5_e6_d2", "ir_k5_e6", "ir_k5_e6_d2",
    "ir_k7_e6", "ir_k5_e6", "ir_k5_e6_d2", "ir_k5_e6",
    "ir_k3_e3", "conv_k1",
)
_PREFIXES = ("module.", "backbone.")
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")


@dataclass
class Conversion:
    """The converted state dict (HitDet's backbone names) and what the conversion did."""

    state_dict: dict[str, torch.Tensor]
    layers: int
    tensors: int  # tensors of theirs that were converted
    left_out: list[str] = field(default_factory=list)  # theirs, outside the backbone (classifier)
    folded_biases: list[str] = field(default_factory=list)  # their conv biases folded into a BN's running mean
    filled: list[str] = field(default_factory=list)  # ours, absent from theirs (num_batches_tracked of old files)
    other_ops: list[str] = field(default_factory=list)  # positions where the architecture's op is not fbnet_hit's

    def summary(self) -> str:
        text = (f"converted {self.tensors} tensors of {self.layers} layers into {len(self.state_dict)} backbone "
                f"tensors")
        if self.folded_biases:
            text += f"; {len(self.folded_biases)} convolution bias(es) folded into the following batch norm's mean"
        if self.left_out:
            text += f"; left out {len(self.left_out)} tensor(s) outside the backbone (first: {self.left_out[0]})"
        if self.filled:
            text += f"; {len(self.filled)} num_batches_tracked absent, set to 0"
        return text


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if not unsafe:  # torch's safe unpickler met no object it refuses: the bytes are no checkpoint
            reason = re.search(r"WeightsUnpickler error: \s*(.+)", str(exc))
            detail = reason[1].strip() if reason else "unreadable"
            raise UserError(f"{path}: not a torch checkpoint ({detail})") from None
        raise UserError(f"{path}: holds more than tensors and cannot be read safely (it pickles {unsafe[1]}); if you "
                        "trust it, re-save its state dict: torch.save(torch.load(F, weights_only=False)['state_dict'], "
                        "'plain.pth')") from None
    except Exception as exc:  # torch's unpickler raises many types (IndexError, KeyError ...) on garbage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a torch checkpoint ({first[:160]})") from None


def read_authors_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint in the authors' layout, prefixes stripped as their loader strips them.

    Takes a bare state dict or ``{"state_dict": ...}`` (``{"model": ...}`` too); strips ``module.``
    (DataParallel) and ``backbone.`` (a whole-detector checkpoint of theirs).
    """
    path = Path(path)
    data = _torch_load(path)
    if isinstance(data, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping) or not data:
        raise UserError(f"{path}: holds no state dict")
    state = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise UserError(f"{path}: holds no tensors")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):  # a detector checkpoint: keep only its backbone
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def _module_order(prefix: str) -> tuple[int, ...]:
    """Sort key of one of their modules within a layer: conv1 < conv2 < conv3, conv before bn inside each."""
    order = []
    for part in prefix.split("."):
        m = re.fullmatch(r"(conv|bn)(\d*)", part)
        if not m:
            return (99,)
        order.append(int(m[2] or 0) * 2 + (1 if m[1] == "bn" else 0))
    return tuple(order)


def _their_modules(layer: int, keys: Mapping[str, torch.Tensor], path: str) -> list[tuple[str, str, dict]]:
    """``[(kind, their prefix, {param: tensor})]`` of one of their layers, in forward order; kind "conv" or "bn"."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for rest, tensor in keys.items():
        prefix, _, param = rest.rpartition(".")
        groups.setdefault(prefix, {})[param] = tensor
    out = []
    for prefix in sorted(groups, key=_module_order):
        params = groups[prefix]
        last = prefix.rsplit(".", 1)[-1]
        if _module_order(prefix) == (99,) or not prefix:
            first = f"layers.{layer}.{prefix + '.' if prefix else ''}{next(iter(params))}"
            raise UserError(f"{path}: {first}: not a convolution or batch norm of the authors' FBNet layout")
        out.append(("bn" if last.startswith("bn") else "conv", prefix, params))
    return out


def _our_modules(block: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """``[(kind, our prefix, module)]`` of a HitDet block's convolutions and batch norms, in forward order."""
    out = []
    for name, m in block.named_modules():
        if isinstance(m, nn.Conv2d):
            out.append(("conv", name, m))
        elif isinstance(m, nn.BatchNorm2d):
            out.append(("bn", name, m))
    return out


def backbone_blocks(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """HitDet's backbone blocks in forward order with their state-dict prefixes: stem, stages.S.B, tail.T."""
    blocks = [("stem", backbone.stem)]
    for s, stage in enumerate(backbone.stages):
        blocks += [(f"stages.{s}.{b}", block) for b, block in enumerate(stage)]
    blocks += [(f"tail.{t}", block) for t, block in enumerate(backbone.tail)]
    return blocks


def convert_authors_backbone(
    state: Mapping[str, torch.Tensor],
    backbone: nn.Module,
    ops: list[str] | None = None,
    path: str = "checkpoint",
) -> Conversion:
    """Map a state dict in the authors' FBNet layout onto ``backbone`` (a fixed HitDet ``Backbone``).

    ``ops``: the architecture's op per block (stem, stage blocks, tail), to note where it is not fbnet_hit's.
    Raises UserError (one line, naming the tensor) when a layer is missing or extra, when a layer's
    convolutions and batch norms do not pair with the block's, or when a shape differs.
    """
    layers: dict[int, dict[str, torch.Tensor]] = {}
    left_out = []
    for key, tensor in state.items():
        m = _LAYER.match(key)
        if m:
            layers.setdefault(int(m[1]), {})[m[2]] = tensor
        else:
            left_out.append(key)
    if not layers:
        first = next(iter(state), "?")
        raise UserError(f"{path}: no layers.N.… tensors (first key: {first}): not the authors' FBNet backbone layout")
    blocks = backbone_blocks(backbone)
    expected = list(range(len(blocks)))
    if sorted(layers) != expected:
        extra = sorted(set(layers) - set(expected))
        missing = sorted(set(expected) - set(layers))
        detail = (f"layers.{missing[0]} is missing" if missing else f"it has layers.{extra[0]}")
        raise UserError(f"{path}: the architecture's backbone has {len(blocks)} blocks (layers.0-{len(blocks) - 1}), "
                        f"but {detail}: pretrained for another architecture")
    result: dict[str, torch.Tensor] = {}
    conversion = Conversion(result, len(blocks), 0, left_out=left_out)
    for i, (our_prefix, block) in enumerate(blocks):
        theirs = _their_modules(i, layers[i], path)
        ours = _our_modules(block)
        if [k for k, _, _ in theirs] != [k for k, _, _ in ours]:
            op = getattr(getattr(block, "spec", None), "name", type(block).__name__)
            raise UserError(
                f"{path}: layers.{i} ({', '.join(p for _, p, _ in theirs)}) does not fit {our_prefix} ({op}: "
                f"{' '.join(k for k, _, _ in ours)}): pretrained for another architecture")
        pending_bias: torch.Tensor | None = None
        for (kind, their_prefix, params), (_, name, module) in zip(theirs, ours, strict=True):
            where = f"{our_prefix}.{name}"
            own = dict(module.state_dict())
            if kind == "conv":
                extra = set(params) - {"weight", "bias"}
                if "weight" not in params or extra:
                    bad = "weight" if "weight" not in params else sorted(extra)[0]
                    raise UserError(f"{path}: layers.{i}.{their_prefix}: {'no' if bad == 'weight' else 'unexpected'} "
                                    f"{bad!r} for a convolution")
                _check_shape(path, f"layers.{i}.{their_prefix}.weight", params["weight"], where + ".weight",
                             own["weight"])
                result[where + ".weight"] = params["weight"]
                conversion.tensors += 1
                if "bias" in params:
                    conversion.tensors += 1
                    if "bias" in own:
                        _check_shape(path, f"layers.{i}.{their_prefix}.bias", params["bias"], where + ".bias",
                                     own["bias"])
                        result[where + ".bias"] = params["bias"]
                    else:
                        pending_bias = params["bias"]
                        conversion.folded_biases.append(f"layers.{i}.{their_prefix}.bias")
                continue
            for param in own:
                their_key = f"layers.{i}.{their_prefix}.{param}"
                if param not in params:
                    if param == "num_batches_tracked":  # saved by torch >= 0.4.1 only
                        result[f"{where}.{param}"] = torch.zeros((), dtype=torch.long)
                        conversion.filled.append(their_key)
                        continue
                    raise UserError(f"{path}: {their_key}: missing (the batch norm of {where})")
                _check_shape(path, their_key, params[param], f"{where}.{param}", own[param])
                result[f"{where}.{param}"] = params[param]
                conversion.tensors += 1
            unknown = sorted(set(params) - set(own))
            if unknown:
                raise UserError(f"{path}: layers.{i}.{their_prefix}.{unknown[0]}: not a batch norm tensor")
            if pending_bias is not None:
                # BN(conv(x) + b) with running mean mu == BN(conv(x)) with running mean mu - b
                mean = result[f"{where}.running_mean"]
                result[f"{where}.running_mean"] = mean - pending_bias.to(mean.dtype)
                pending_bias = None
        if pending_bias is not None:
            raise UserError(f"{path}: layers.{i}: a convolution bias with no batch norm after it to fold it into")
    own_keys = set(backbone.state_dict())
    if set(result) != own_keys:  # a block with tensors other than convolutions and batch norms
        first = sorted(own_keys - set(result))[0]
        raise UserError(f"{path}: nothing in the authors' layout for {first}")
    if ops is not None:
        conversion.other_ops = [f"{prefix}: {op} (fbnet_hit: {theirs_op})"
                                for (prefix, _), op, theirs_op in zip(blocks, ops, FBNET_HIT_OPS, strict=False)
                                if op != theirs_op]
        if len(ops) != len(FBNET_HIT_OPS):
            conversion.other_ops.append(f"{len(ops)} blocks (fbnet_hit: {len(FBNET_HIT_OPS)})")
    return conversion


def _check_shape(path: str, their_key: str, theirs: torch.Tensor, our_key: str, ours: torch.Tensor) -> None:
    if tuple(theirs.shape) != tuple(ours.shape):
        raise UserError(f"{path}: {their_key} has shape {tuple(theirs.shape)}, but {our_key} needs "
                        f"{tuple(ours.shape)}: pretrained for another architecture or width")


def architecture_ops(arch: Any) -> list[str]:
    """The op of each backbone block of a fixed architecture, stem and tail included, in forward order."""
    st = arch.structure
    ops = [st.stem.op]
    ops += [arch.choices[label] for label in st.backbone_labels()]
    ops += [layer.op for layer in st.tail]
    return ops
