"""The 32-op candidate pool (docs/op-pool.md) with analytic costs.

Torch only: the fixed detector builder imports this module without NNI.
Every op is described by an :class:`OpSpec` (decoded from its name, the way timm
decodes block strings) and built by :func:`build_op`. :func:`op_cost` gives the
parameter count and multiply-accumulates (MACs) of an op without running it; the
FLOPs penalty of the search and ``hitdet info`` both use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "OPS",
    "OP_NAMES",
    "unknown_op",
    "OpSpec",
    "Cost",
    "build_op",
    "op_cost",
    "conv_out_size",
    "conv_cost",
    "linear_cost",
    "shared_over_levels",
    "parse_op_name",
]

_NAME = re.compile(r"^(?P<family>ir|sep|conv)_k(?P<k>\d+)(?:_e(?P<e>\d+))?(?:_d(?P<d>\d+))?(?:_g(?P<g>\d+))?$")


@dataclass(frozen=True)
class OpSpec:
    """One candidate op, decoded from its pool name."""

    name: str
    family: str  # "ir", "sep", "conv" or "skip"
    kernel: int = 1
    expansion: int = 1
    dilation: int = 1
    groups: int = 1

    @property
    def padding(self) -> int:
        return self.dilation * (self.kernel - 1) // 2


@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-accumulates of a module (MACs, not FLOPs)."""

    params: int = 0
    macs: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)

    def scale_macs(self, factor: int) -> Cost:
        return Cost(self.params, self.macs * factor)


def parse_op_name(name: str) -> OpSpec:
    """Decode ``FAMILY_kK[_eE][_dD][_gG]`` or ``skip`` into an :class:`OpSpec`."""
    if name == "skip":
        return OpSpec(name="skip", family="skip")
    m = _NAME.match(name)
    if m is None:
        raise ValueError(f"cannot parse op name {name!r}")
    family = m["family"]
    if family == "ir" and m["e"] is None:
        raise ValueError(f"inverted-residual op {name!r} needs an expansion _eE")
    if family != "ir" and (m["e"] is not None or m["g"] is not None):
        raise ValueError(f"op {name!r}: only ir ops take an expansion or groups")
    return OpSpec(
        name=name,
        family=family,
        kernel=int(m["k"]),
        expansion=int(m["e"] or 1),
        dilation=int(m["d"] or 1),
        groups=int(m["g"] or 1),
    )


# The pool, in the order of docs/op-pool.md. This list is the contract.
OP_NAMES: tuple[str, ...] = (
    "ir_k3_e1", "ir_k3_e1_d2", "ir_k3_e1_d3", "ir_k3_e3", "ir_k3_e3_d2", "ir_k3_e3_d3",
    "ir_k3_e6", "ir_k3_e6_d2", "ir_k3_e6_d3", "ir_k3_e1_g2",
    "ir_k5_e1", "ir_k5_e1_d2", "ir_k5_e1_d3", "ir_k5_e3", "ir_k5_e6", "ir_k5_e6_d2",
    "ir_k5_e6_d3", "ir_k5_e1_g2", "ir_k7_e3", "ir_k7_e6",
    "sep_k3", "sep_k3_d3", "sep_k5", "sep_k5_d2", "sep_k5_d3",
    "conv_k1", "conv_k3", "conv_k3_d2", "conv_k3_d3", "conv_k5", "conv_k5_d3",
    "skip",
)  # fmt: skip

OPS: dict[str, OpSpec] = {name: parse_op_name(name) for name in OP_NAMES}


def conv_out_size(size: int, kernel: int, stride: int, dilation: int = 1, padding: int | None = None) -> int:
    """Output length of a convolution along one axis (PyTorch's formula)."""
    if padding is None:
        padding = dilation * (kernel - 1) // 2
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1, groups: int = 1) -> list[nn.Module]:
    pad = dilation * (k - 1) // 2
    return [
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


def _conv_cost(cin: int, cout: int, k: int, h_out: int, w_out: int, groups: int = 1, bn: bool = True) -> Cost:
    weights = cin // groups * cout * k * k
    return Cost(weights + (2 * cout if bn else 0), weights * h_out * w_out)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle, used between grouped 1x1 convs."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class PoolOp(nn.Module):
    """A pool op: a sequential body plus the residual rule of docs/op-pool.md."""

    def __init__(self, spec: OpSpec, body: nn.Module, residual: bool) -> None:
        super().__init__()
        self.spec = spec
        self.body = body
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out

    def extra_repr(self) -> str:
        return f"op={self.spec.name}, residual={self.residual}"


def _check_groups(spec: OpSpec, cin: int, cout: int) -> None:
    g = spec.groups
    if g > 1 and (cin % g or cout % g):
        raise ValueError(
            f"op {spec.name} has {g} pointwise groups: in_channels={cin} and out_channels={cout} "
            f"must both be divisible by {g}"
        )


def unknown_op(op: Any) -> str:
    """``unknown op 'sep_k4' (did you mean 'sep_k3'?)``: the words every op-name check uses (difflib)."""
    import difflib

    near = difflib.get_close_matches(str(op), list(OP_NAMES), n=1, cutoff=0.6)
    return f"unknown op {op!r}" + (f" (did you mean {near[0]!r}?)" if near else "")


def _spec(op: str | OpSpec) -> OpSpec:
    if isinstance(op, OpSpec):
        return op
    try:
        return OPS[op]
    except KeyError:
        raise ValueError(f"{unknown_op(op)}; the pool has: {', '.join(OP_NAMES)}") from None


def build_op(name: str | OpSpec, in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    """Build one op of the pool as an ``nn.Module`` (docs/op-pool.md, "Construction").

    Args:
        name: an op name of the pool (:data:`OP_NAMES`, e.g. ``"ir_k5_e6_d2"``) or its decoded :class:`OpSpec`.
        in_channels: input channels.
        out_channels: output channels.
        stride: 1 (keeps the resolution) or 2 (halves it), applied by the spatial convolution.

    Returns:
        The op, in training mode; it adds its input to its output when ``in_channels == out_channels``
        and ``stride == 1`` (``skip`` is then the identity).

    Raises:
        ValueError: an unknown op name, non-positive channels or stride, or channels a grouped op cannot divide.
    """
    spec = _spec(name)
    cin, cout = in_channels, out_channels
    if cin < 1 or cout < 1 or stride < 1:
        raise ValueError(f"op {spec.name}: channels and stride must be positive, got {cin}->{cout}, s{stride}")
    residual = cin == cout and stride == 1
    if spec.family == "skip":
        if residual:
            return nn.Identity()
        return PoolOp(spec, nn.Sequential(*_conv_bn(cin, cout, 1, stride)), residual=False)
    k, d = spec.kernel, spec.dilation
    if spec.family == "conv":
        body = nn.Sequential(*_conv_bn(cin, cout, k, stride, d), nn.ReLU(inplace=True))
    elif spec.family == "sep":
        body = nn.Sequential(
            *_conv_bn(cin, cin, k, stride, d, groups=cin), nn.ReLU(inplace=True), *_conv_bn(cin, cout, 1)
        )
    else:  # ir
        _check_groups(spec, cin, cout)
        mid = cin * spec.expansion
        layers: list[nn.Module] = [*_conv_bn(cin, mid, 1, groups=spec.groups), nn.ReLU(inplace=True)]
        if spec.groups > 1:
            layers.append(ChannelShuffle(spec.groups))
        layers += [*_conv_bn(mid, mid, k, stride, d, groups=mid), nn.ReLU(inplace=True)]
        layers += _conv_bn(mid, cout, 1, groups=spec.groups)
        body = nn.Sequential(*layers)
    return PoolOp(spec, body, residual)


def op_cost(
    name: str | OpSpec, in_channels: int, out_channels: int, stride: int, height: int, width: int
) -> Cost:
    """Parameters and MACs of ``build_op(name, in_channels, out_channels, stride)``, counted without building it.

    Args:
        name: an op name of the pool or its :class:`OpSpec`.
        in_channels: input channels.
        out_channels: output channels.
        stride: 1 or 2.
        height: input height in pixels.
        width: input width in pixels.

    Returns:
        A :class:`Cost`: ``params`` (weights and BatchNorm affine parameters) and ``macs``
        (multiply-accumulates of the convolutions on one ``height x width`` input; 1 MAC = 2 FLOPs).

    Raises:
        ValueError: an unknown op name, or channels a grouped op cannot divide.
    """
    spec = _spec(name)
    cin, cout = in_channels, out_channels
    if spec.family == "skip":
        if cin == cout and stride == 1:
            return Cost()
        return _conv_cost(cin, cout, 1, conv_out_size(height, 1, stride), conv_out_size(width, 1, stride))
    k, d = spec.kernel, spec.dilation
    ho, wo = conv_out_size(height, k, stride, d), conv_out_size(width, k, stride, d)
    if spec.family == "conv":
        return _conv_cost(cin, cout, k, ho, wo)
    if spec.family == "sep":
        return _conv_cost(cin, cin, k, ho, wo, groups=cin) + _conv_cost(cin, cout, 1, ho, wo)
    _check_groups(spec, cin, cout)
    mid = cin * spec.expansion
    return (
        _conv_cost(cin, mid, 1, height, width, groups=spec.groups)
        + _conv_cost(mid, mid, k, ho, wo, groups=mid)
        + _conv_cost(mid, cout, 1, ho, wo, groups=spec.groups)
    )


def op_output_size(name: str | OpSpec, stride: int, height: int, width: int) -> tuple[int, int]:
    """Spatial size after an op (every op keeps the size at stride 1)."""
    spec = _spec(name)
    if spec.family == "skip":
        return conv_out_size(height, 1, stride), conv_out_size(width, 1, stride)
    return (
        conv_out_size(height, spec.kernel, stride, spec.dilation),
        conv_out_size(width, spec.kernel, stride, spec.dilation),
    )


# ---------------------------------------------------------------- costs of the fixed layers around the ops


def conv_cost(cin: int, cout: int, k: int, h: int, w: int, bias: bool = True) -> Cost:
    """A plain ``k`` x ``k`` convolution (with its bias) whose output is ``h`` x ``w``."""
    weights = cin * cout * k * k
    return Cost(weights + (cout if bias else 0), weights * h * w)


def linear_cost(cin: int, cout: int) -> Cost:
    """A linear layer with bias, applied once."""
    return Cost(cin * cout + cout, cin * cout)


def shared_over_levels(levels: list[Cost]) -> Cost:
    """A head applied to every pyramid level: its weights count once, its MACs once per level."""
    return Cost(levels[0].params, sum(level.macs for level in levels))
