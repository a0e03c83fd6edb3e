"""The PANet neck kind (the paper's): its cells, positions, fixed bottom-up convolutions and module, in one place.

L_i = lateral_i(C_i); top-down P_L = L_L, P_i = L_i + up(P_{i+1}); O_i = out_i(P_i); bottom-up
N_1 = O_1, N_{i+1} = conv3x3(maxpool2(N_i) + O_{i+1}). The 2L searched cells are the laterals
(``neck/lateral1``..``neck/lateralL``, C_i -> channels) and the output cells (``neck/out1``..,
channels -> channels); the L-1 bottom-up 3x3 convolutions are fixed. The architecture JSON lists the
cells in that order in ``neck.cells`` (``neck.type`` "panet", the default).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.kinds import BlockFactory, NeckKind, register_neck
from search_spaces.ops import Cost, conv_cost
from search_spaces.positions import Position

PANET = "panet"


def neck_lateral_label(level: int) -> str:
    return f"neck/lateral{level}"


def neck_out_label(level: int) -> str:
    return f"neck/out{level}"


class PANetNeck(nn.Module):
    """PANet-style neck: searched laterals, top-down sum, searched output cells, fixed bottom-up path.

    L_i = lateral_i(C_i); P_L = L_L, P_i = L_i + up(P_{i+1}); O_i = out_i(P_i);
    N_1 = O_1, N_{i+1} = conv3x3(maxpool2(N_i) + O_{i+1}).
    With ``extra_level`` a stride-2 max-pool of N_L is appended for the RPN.
    Returns an ``OrderedDict`` named "0".."L-1" (and "pool"), as torchvision's FPN does.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        make_block: BlockFactory,
        extra_level: bool = True,
    ) -> None:
        super().__init__()
        levels = range(1, len(in_channels) + 1)
        self.out_channels = channels
        self.extra_level = extra_level
        self.laterals = nn.ModuleList(
            make_block(neck_lateral_label(i), c, channels, 1) for i, c in zip(levels, in_channels, strict=True)
        )
        self.outs = nn.ModuleList(make_block(neck_out_label(i), channels, channels, 1) for i in levels)
        self.bottom_up = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1) for _ in range(len(in_channels) - 1)
        )

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        # Written for TorchScript as well as eager mode (``hitdet export``): indexed loops over
        # the ModuleLists instead of zip/reversed, and a Dict[str, Tensor] as torchvision's FPN returns.
        lat: list[torch.Tensor] = []
        for i, cell in enumerate(self.laterals):
            lat.append(cell(feats[i]))
        top_down: list[torch.Tensor] = [lat[-1]]
        for i in range(len(lat) - 2, -1, -1):
            x = lat[i]
            top_down.insert(0, x + F.interpolate(top_down[0], size=x.shape[-2:], mode="nearest"))
        outs: list[torch.Tensor] = []
        for i, cell in enumerate(self.outs):
            outs.append(cell(top_down[i]))
        bottom_up: list[torch.Tensor] = [outs[0]]
        for i, conv in enumerate(self.bottom_up):
            bottom_up.append(conv(F.max_pool2d(bottom_up[-1], 2, 2, ceil_mode=True) + outs[i + 1]))
        result: dict[str, torch.Tensor] = OrderedDict()
        for i, n in enumerate(bottom_up):
            result[str(i)] = n
        if self.extra_level:
            result["pool"] = F.max_pool2d(bottom_up[-1], 1, 2)
        return result


class PANet(NeckKind):
    """The PANet neck kind: 2L searched cells (laterals, then outputs), L-1 fixed bottom-up convolutions."""

    name = PANET
    module_class = PANetNeck

    def cells(self, num_levels: int) -> list[str]:
        levels = range(1, num_levels + 1)
        return [f"lateral{i}" for i in levels] + [f"out{i}" for i in levels]

    def positions(self, in_channels: Sequence[int], channels: int,
                  sizes: Sequence[tuple[int, int]]) -> list[Position]:
        """The lateral cells (C_i -> channels) then the output cells (channels -> channels), at each level's size."""
        levels = range(1, len(in_channels) + 1)
        lat = [
            Position(neck_lateral_label(i), "neck", c, channels, 1, h, w)
            for i, c, (h, w) in zip(levels, in_channels, sizes, strict=True)
        ]
        out = [Position(neck_out_label(i), "neck", channels, channels, 1, h, w) for i, (h, w) in zip(levels, sizes,
                                                                                                    strict=True)]
        return lat + out

    def fixed_cost(self, channels: int, sizes: Sequence[tuple[int, int]]) -> Cost:
        """The bottom-up path's 3x3 convolutions (with bias), one into each level but the first."""
        total = Cost()
        for h, w in sizes[1:]:
            total = total + conv_cost(channels, channels, 3, h, w)
        return total


register_neck(PANet())
