"""The 32-op pool: names, shapes, residual rule, and analytic costs vs the built modules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import OP_NAMES, OPS, build_op, op_cost

# The contract, typed from docs/op-pool.md (not imported from the code under test).
CONTRACT = """
ir_k3_e1 ir_k3_e1_d2 ir_k3_e1_d3 ir_k3_e3 ir_k3_e3_d2 ir_k3_e3_d3 ir_k3_e6 ir_k3_e6_d2 ir_k3_e6_d3
ir_k3_e1_g2 ir_k5_e1 ir_k5_e1_d2 ir_k5_e1_d3 ir_k5_e3 ir_k5_e6 ir_k5_e6_d2 ir_k5_e6_d3 ir_k5_e1_g2
ir_k7_e3 ir_k7_e6 sep_k3 sep_k3_d3 sep_k5 sep_k5_d2 sep_k5_d3 conv_k1 conv_k3 conv_k3_d2 conv_k3_d3
conv_k5 conv_k5_d3 skip
""".split()

SHAPES = [(8, 8, 1), (8, 16, 2), (16, 8, 1), (6, 12, 2), (12, 12, 2)]


def test_pool_is_the_contract():
    assert list(OP_NAMES) == CONTRACT
    assert len(OPS) == 32


def test_specs_decode_names():
    spec = OPS["ir_k5_e6_d2"]
    assert (spec.family, spec.kernel, spec.expansion, spec.dilation, spec.groups) == ("ir", 5, 6, 2, 1)
    assert OPS["ir_k3_e1_g2"].groups == 2
    assert OPS["sep_k5_d3"].padding == 6


def count_macs(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


@pytest.mark.parametrize("name", CONTRACT)
@pytest.mark.parametrize("cin,cout,stride", SHAPES)
def test_op_shape_params_and_macs(name, cin, cout, stride):
    op = build_op(name, cin, cout, stride).eval()
    h, w = 11, 14
    x = torch.randn(1, cin, h, w)
    y = op(x)
    assert y.shape == (1, cout, math.ceil(h / stride), math.ceil(w / stride))
    cost = op_cost(name, cin, cout, stride, h, w)
    assert cost.params == sum(p.numel() for p in op.parameters())
    assert cost.macs == count_macs(op, x)


@pytest.mark.parametrize("name", ["ir_k5_e6_d3", "sep_k3", "conv_k5_d3", "skip"])
def test_residual_rule(name):
    """With every weight zeroed the body outputs 0: a residual op then returns its input."""
    same = build_op(name, 8, 8, 1).eval()
    other = build_op(name, 8, 16, 1).eval()
    for module in (same, other):
        for p in module.parameters():
            nn.init.zeros_(p)
    x = torch.randn(1, 8, 6, 6)
    assert torch.equal(same(x), x)
    assert torch.count_nonzero(other(x)) == 0


def test_dilation_and_stride_sit_on_the_depthwise_conv():
    op = build_op("ir_k5_e6_d2", 8, 8, 2)
    convs = [m for m in op.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1), (5, 5), (1, 1)]
    assert convs[1].groups == 48 and convs[1].dilation == (2, 2) and convs[1].stride == (2, 2)
    assert all(c.bias is None for c in convs)


def test_grouped_op_with_indivisible_channels_is_an_error():
    with pytest.raises(ValueError, match=r"ir_k3_e1_g2.*in_channels=7.*out_channels=8"):
        build_op("ir_k3_e1_g2", 7, 8, 1)
    with pytest.raises(ValueError, match="ir_k5_e1_g2"):
        op_cost("ir_k5_e1_g2", 8, 9, 1, 4, 4)


def test_unknown_op_is_an_error():
    with pytest.raises(ValueError, match="unknown op 'ir_k9'"):
        build_op("ir_k9", 8, 8, 1)
