"""The pieces of the "does the search beat chance?" protocol (``benchmarks/search_vs_random.py``).

Why a module: the protocol of Yang et al. ("NAS evaluation is frustratingly hard", ICLR 2020)
and Li & Talwalkar (2019) compares a searched architecture with random samples of the *same*
space at the *same* cost, trained with the *same* recipe, and asks whether the supernet's
inherited weights rank architectures as their stand-alone training does. These helpers are
the parts of it worth testing on their own:

- :func:`kendall_tau_b`: rank correlation with ties (scipy is not a dependency);
- :func:`mac_matched_samples`: uniform samples of the sub spaces, kept only when their MACs
  are within a tolerance of a target (rejection sampling);
- :func:`load_search_supernet` and :func:`inherited_loss`: the search's supernet with its
  final weights, and the detection loss of one path of it on a dataset.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CHECKPOINT_PREFIX = "training_module._model."  # NNI's one-shot module wraps DetectionModule, which holds _model


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences (ties in either count as neither pair kind).

    tau_b = (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y)), n0 = n(n-1)/2.
    NaN when either sequence is constant or has fewer than 2 values.
    """
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_b: sequences of different lengths ({len(x)} and {len(y)})")
    n = len(x)
    score = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            score += int(dx * dy)
            ties_x += dx == 0
            ties_y += dy == 0
    n0 = n * (n - 1) // 2
    denom = math.sqrt((n0 - ties_x) * (n0 - ties_y))
    return score / denom if denom > 0 else float("nan")


def label_choices(labels: Iterable[str], sub_spaces: Mapping[str, Sequence[str]] | None,
                  all_ops: Sequence[str]) -> dict[str, list[str]]:
    """``{label: ops}``: each position's component sub space (all ops where none is given)."""
    from strategies.mixed import component_of  # the strategy's grouping of labels into components

    sub_spaces = sub_spaces or {}
    return {label: list(sub_spaces.get(component_of(label), all_ops)) for label in labels}


@dataclass
class MatchedSample:
    sample: dict[str, str]
    macs: float
    matched: bool  # False: no sample within the tolerance after max_tries; the closest one was taken
    tries: int


def mac_matched_samples(
    choices: Mapping[str, Sequence[str]],
    macs_of: Callable[[dict[str, str]], float],
    target: float,
    k: int,
    rng: np.random.Generator,
    tolerance: float = 0.15,
    max_tries: int = 20000,
    exclude: Iterable[Mapping[str, str]] = (),
) -> list[MatchedSample]:
    """``k`` distinct uniform samples of ``choices`` with ``|macs - target| <= tolerance * target``.

    Each position's op is drawn uniformly from its list; a draw outside the tolerance is
    rejected (the accepted ones are uniform over the matched set). When ``max_tries`` draws
    give no new match, the closest draw seen that is not yet taken is used, flagged
    ``matched=False``. ``exclude`` (e.g. the searched architecture) is never returned.
    """
    labels = list(choices)
    taken = {tuple(s[label] for label in labels) for s in exclude}
    out: list[MatchedSample] = []
    for _ in range(k):
        closest: tuple[float, dict[str, str], float] | None = None
        for tries in range(1, max_tries + 1):
            sample = {label: str(choices[label][rng.integers(len(choices[label]))]) for label in labels}
            key = tuple(sample[label] for label in labels)
            if key in taken:
                continue
            macs = float(macs_of(sample))
            gap = abs(macs - target)
            if gap <= tolerance * target:
                out.append(MatchedSample(sample, macs, True, tries))
                taken.add(key)
                break
            if closest is None or gap < closest[0]:
                closest = (gap, sample, macs)
        else:
            if closest is None:
                raise ValueError("mac_matched_samples: the space has no sample left to draw")
            out.append(MatchedSample(closest[1], closest[2], False, max_tries))
            taken.add(tuple(closest[1][label] for label in labels))
    return out


def load_search_supernet(structure: Any, settings: Any, sub_spaces: Mapping[str, Sequence[str]] | None,
                         checkpoint: str | Path) -> nn.Module:
    """The search's supernet (``TrinitySpace`` made one-shot by ``HitDetStrategy``, as
    ``hitdet search`` builds it) with the weights and α of ``checkpoint`` (``RUN/checkpoints/last.ckpt``).

    Ops the run had removed are removed here too, so the state dict fits exactly.
    """
    from search_spaces import TrinitySpace
    from strategies import HitDetStrategy
    from strategies.mixed import HitDetMixedLayer

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    space = TrinitySpace(structure, dict(sub_spaces) if sub_spaces else None, settings)
    supernet = HitDetStrategy("search", sub_spaces=dict(sub_spaces) if sub_spaces else None).mutate_model(space)
    active = (ckpt.get("hitdet_strategy") or {}).get("active", {})
    for m in supernet.modules():
        if isinstance(m, HitDetMixedLayer) and str(m.label) in active:
            for name, keep in zip(m.names, active[str(m.label)], strict=True):
                if not keep and name in m.active_names():
                    m.drop(name)
    state = {k[len(CHECKPOINT_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(CHECKPOINT_PREFIX)}
    if not state:
        raise ValueError(f"{checkpoint}: no weights under {CHECKPOINT_PREFIX!r}")
    supernet.load_state_dict(state, strict=True)
    return supernet


def fix_path(supernet: nn.Module, sample: Mapping[str, str]) -> nn.Module:
    """A copy of the supernet that runs only the sampled op at every position.

    Every other candidate is dropped (masked and deleted), so each mixed layer's softmax is
    over one logit: weight exactly 1 on the chosen op's inherited weights.
    """
    from strategies.mixed import HitDetMixedLayer

    net = copy.deepcopy(supernet)
    for m in net.modules():
        if isinstance(m, HitDetMixedLayer):
            chosen = sample[str(m.label)]
            if chosen not in m.active_names():
                raise ValueError(f"{m.label}: op {chosen!r} is not in the supernet's sub space")
            for name in list(m.active_names()):
                if name != chosen:
                    m.drop(name)
    return net


@torch.no_grad()
def inherited_loss(supernet: nn.Module, sample: Mapping[str, str], loader: Iterable[Any], seed: int = 0,
                   device: str | torch.device = "cpu") -> float:
    """Mean detection loss per image of ``sample``'s path through the supernet on ``loader``.

    The detector must be in train mode to return losses, so BatchNorm normalises with the
    statistics of each batch (not running statistics, which a supernet's shared BN layers do
    not hold for any one path), and the RPN and RoI sampling draw at random: ``seed`` fixes
    that draw, so every sample sees the same one. No gradients; the supernet is not changed.
    """
    net = fix_path(supernet, sample).to(device)
    net.train()
    torch.manual_seed(seed)
    total, images_seen = 0.0, 0
    for images, targets in loader:
        images = [img.to(device) for img in images]
        targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        losses = net(images, targets)
        total += float(sum(losses.values())) * len(images)
        images_seen += len(images)
    return total / max(1, images_seen)
