"""Decoding an architecture within a MACs budget (the target mode of the search).

The penalty ``|E[MACs] - T|`` pulls the *expected* MACs of the supernet to the target T, but
the exported architecture is the argmax per layer, whose MACs can land anywhere around the
expectation. FBNet and ProxylessNAS have the same gap between the relaxed cost and the
decoded one. So the target mode decodes with the budget as a constraint: start from the
argmax; while the architecture is outside ``T (1 ± tolerance)``, make the single op switch
that moves its MACs towards T at the smallest loss of α log-probability per MAC moved, never
overshooting the band on the other side. Every switch is recorded, so a user sees how far
the export is from the plain argmax (none when the search already landed in the band).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class BudgetDecode:
    """The decoded choice (index per label), its MACs and the switches made from the argmax."""

    choice: dict[str, int]
    macs: float
    argmax_macs: float
    switches: list[dict[str, object]] = field(default_factory=list)

    def within(self, target: float, tolerance: float) -> bool:
        return abs(self.macs - target) <= tolerance * target


def _total(choice: dict[str, int], macs: dict[str, torch.Tensor]) -> float:
    return sum(float(macs[label][i]) for label, i in choice.items())


def decode_within_budget(
    probs: dict[str, torch.Tensor],
    macs: dict[str, torch.Tensor],
    active: dict[str, torch.Tensor],
    target: float,
    tolerance: float,
    max_switches: int = 10_000,
) -> BudgetDecode:
    """Argmax per label, then greedy switches until the MACs are within ``target (1 ± tolerance)``.

    ``probs``, ``macs`` and ``active`` hold one tensor per label, indexed like the layer's
    candidates. Only active candidates are chosen. If the band cannot be reached (every
    position already at its cheapest or dearest op), the closest architecture found is
    returned; :meth:`BudgetDecode.within` says whether it made it.
    """
    logp = {label: torch.log(p.detach().double().clamp(min=1e-30)) for label, p in probs.items()}
    mask = {label: active[label].bool() for label in probs}
    choice = {
        label: int(torch.argmax(torch.where(mask[label], logp[label], torch.full_like(logp[label], -math.inf))))
        for label in probs
    }
    cost = {label: macs[label].detach().double() for label in probs}
    argmax_macs = total = _total(choice, cost)
    low, high = target * (1 - tolerance), target * (1 + tolerance)
    switches: list[dict[str, object]] = []
    while not (low <= total <= high) and len(switches) < max_switches:
        down = total > high
        best: tuple[float, str, int, float] | None = None
        for label, i in choice.items():
            for j in range(len(cost[label])):
                if j == i or not bool(mask[label][j]):
                    continue
                delta = float(cost[label][j] - cost[label][i])
                if (down and delta >= 0) or (not down and delta <= 0):
                    continue
                new_total = total + delta
                if (down and new_total < low * (1 - 1e-12)) or (not down and new_total > high * (1 + 1e-12)):
                    # overshoots the band: allowed only if it ends closer to the target than now
                    if abs(new_total - target) >= abs(total - target):
                        continue
                loss = float(logp[label][i] - logp[label][j])  # >= 0 when leaving the argmax
                rate = loss / abs(delta)
                if best is None or rate < best[0]:
                    best = (rate, label, j, delta)
        if best is None:
            break
        _, label, j, delta = best
        switches.append({"label": label, "from": choice[label], "to": j, "macs_delta": delta})
        choice[label] = j
        total += delta
    return BudgetDecode(choice, total, argmax_macs, switches)
