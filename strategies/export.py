"""What a finished run hands over: the NNI sample and a JSON-ready metadata dict.

The architecture JSON itself is hitdet's (``Architecture.from_sample(sample, structure,
settings, metadata=result.metadata)``); this module gives it everything the strategy knows.
MACs and parameters here cover the *searched positions only* (the fixed stem, tail, neck
paths and fc are the same for every architecture of a space); ``fixed_params`` is the rest of
the supernet's parameters, so ``exact + fixed`` is the exported model's parameter count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from strategies.module import HitDetLightningModule
from strategies.penalty import expected_macs
from strategies.screening import EPOCH_BASE, SubSpaces


@dataclass
class SearchResult:
    """The exported architecture: NNI sample, metadata and (screen mode) the sub spaces.

    Attributes:
        sample: ``{label: op}``, the decision rule's choice at every searched position.
        metadata: α probabilities, the sub spaces searched, expected and exact MACs, the settings, the
            screening events and score history (``Architecture.from_sample(..., metadata=...)`` keeps it).
        sub_spaces: in screen mode, the kept ops per component; ``None`` after a search.
    """

    sample: dict[str, Any]
    metadata: dict[str, Any]
    sub_spaces: SubSpaces | None = None


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _only(d: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {k: d[k] for k in keys}


def decisiveness(alpha_probs: dict[str, dict[str, float]]) -> dict[str, Any]:
    """How decisive α is: the chosen op's probability as a multiple of uniform, per position.

    ``ratio = max_o p(o) x n_active``: 1 for a uniform row, n for a one-hot one. The summary
    counts the positions where the chosen op has at least twice the uniform probability.
    """
    ratios = [max(p.values()) * len(p) for p in alpha_probs.values() if p]
    if not ratios:
        return {"positions": 0, "at_least_2x_uniform": 0, "median_ratio": None, "min_ratio": None}
    ordered = sorted(ratios)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {
        "positions": len(ratios),
        "at_least_2x_uniform": sum(r >= 2 for r in ratios),
        "median_ratio": median,
        "min_ratio": ordered[0],
    }


def describe_decisiveness(d: dict[str, Any]) -> str:
    """α's decisiveness next to what pure noise gives at the same architecture steps and lr ('' if unknown).

    The noise figure comes first in the reader's mind on purpose: few steps at a large lr make any α
    look decisive, so only a count well above noise's says the loss had a direction.
    """
    if not d.get("positions"):
        return ""
    text = (f"the chosen op has >= 2x the uniform probability at {d['at_least_2x_uniform']} of {d['positions']} "
            f"positions (median {d['median_ratio']:.2f}x)")
    noise = d.get("noise")
    if noise:
        text += (f"; pure noise at the same steps and lr: {noise['at_least_2x_uniform']:.1f} positions "
                 f"(median {noise['median_ratio']:.2f}x)")
    return text


def _decisiveness_with_noise(alpha_probs: dict[str, dict[str, float]], module: HitDetLightningModule) -> dict[str, Any]:
    """:func:`decisiveness`, with what pure noise gives at the run's architecture steps and α learning rate."""
    out = decisiveness(alpha_probs)
    steps, lr = module.arch_steps_planned, module.arc_lr_used
    if out["positions"] and steps and lr:
        sizes = sorted(len(p) for p in alpha_probs.values() if p)
        noise = noise_decisiveness(out["positions"], sizes[len(sizes) // 2], int(steps), float(lr), repeats=10)
        out["noise"] = {"at_least_2x_uniform": noise["at_least_2x_uniform"], "median_ratio": noise["median_ratio"]}
    return out


def noise_decisiveness(positions: int, ops: int, steps: int, lr: float, betas: tuple[float, float] = (0.5, 0.999),
                       weight_decay: float = 1e-3, repeats: int = 20, seed: int = 0) -> dict[str, float]:
    """What :func:`decisiveness` reads after ``steps`` Adam steps on α driven by pure noise.

    Why: with few architecture steps at a large learning rate, α ends far from uniform whatever
    drives it, so "the chosen op has twice the uniform probability" is evidence only next to
    this figure. The same optimiser as the architecture step (Adam with L2 weight decay) from
    α = 0 on i.i.d. standard normal gradients (Adam normalises them: only the number of steps and
    the learning rate matter), ``positions`` x ``ops``, averaged over ``repeats`` runs.

    Returns:
        ``{"at_least_2x_uniform": mean count, "median_ratio": median of the runs' medians, "positions"}``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    b1, b2 = betas
    counts, medians = [], []
    for _ in range(repeats):
        alpha = np.zeros((positions, ops))
        m, v = np.zeros_like(alpha), np.zeros_like(alpha)
        for t in range(1, steps + 1):
            g = rng.standard_normal(alpha.shape) + weight_decay * alpha
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            alpha -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
        p = np.exp(alpha - alpha.max(axis=1, keepdims=True))
        ratio = (p / p.sum(axis=1, keepdims=True)).max(axis=1) * ops
        counts.append(int((ratio >= 2).sum()))
        medians.append(float(np.median(ratio)))
    return {"at_least_2x_uniform": float(np.mean(counts)), "median_ratio": float(np.median(medians)),
            "positions": positions}


def export_result(module: HitDetLightningModule) -> SearchResult:
    """The sample its decision rule picks and the metadata of a (finished or running) HitDet one-shot module.

    Args:
        module: the strategy's one-shot module (``strategy.oneshot_module``).

    Returns:
        The sample (label -> op), the JSON-ready metadata and (screen mode) the sub spaces.
    """
    module.prepare()
    net, costs = module.supernet, module.costs
    decision = module.decision.decide(module)
    sample = decision.sample
    with torch.no_grad():
        probs = net.probs()
        onehot = {}
        for label, group in net.layers.items():
            p = torch.zeros_like(probs[label])
            p[group[0].names.index(sample[label])] = 1.0
            onehot[label] = p
        unit = {"space": "per image (the space's analytic table)", "measured": "per batch (first training batch)"}
        macs: dict[str, Any] = {
            "source": costs.source,
            "unit": unit.get(costs.source),
            "searched_positions_only": True,
        }
        if costs.available:
            macs.update(
                expected=float(expected_macs(probs, costs.macs)),
                exact=float(expected_macs(onehot, costs.macs)),
                uniform_reference=costs.reference,
                per_component={
                    c: {
                        "expected": float(expected_macs(_only(probs, comp.labels), _only(costs.macs, comp.labels))),
                        "exact": float(expected_macs(_only(onehot, comp.labels), _only(costs.macs, comp.labels))),
                    }
                    for c, comp in net.components.items()
                },
            )
        params = {
            "expected": float(expected_macs(probs, net.params_table)),
            "exact": float(expected_macs(onehot, net.params_table)),
            "fixed_params": net.fixed_params,
            "searched_positions_only": True,
        }
    alpha_probs = {}
    for label, g in net.layers.items():
        mask = g[0].active_mask.tolist()
        alpha_probs[label] = {
            str(n): float(p) for n, p, a in zip(g[0].names, probs[label].tolist(), mask, strict=True) if a
        }
    screener = module.screener
    metadata = {
        "strategy": "hitdet",
        "mode": module.settings.mode,
        "decisiveness": _decisiveness_with_noise(alpha_probs, module),
        "architecture_steps": {"planned": module.arch_steps_planned, "arc_learning_rate": module.arc_lr_used},
        "budget_decode": decision.budget_decode,
        "sample": {label: _jsonable(v) for label, v in sample.items()},
        "alpha_probabilities": alpha_probs,
        "sub_spaces": net.searched_columns(),
        "initial_sub_spaces": net.initial_columns,
        "macs": macs,
        "params": params,
        "settings": module.settings.to_dict(),
        "screening_events": [{"component": e.component, **e.to_dict()} for e in screener.events],
        "score_history": screener.history,
        "epoch_base": EPOCH_BASE,  # the events' and the history's epochs count from 1
        **decision.metadata,
    }
    subs = module.sub_spaces() if module.settings.screening else None
    return SearchResult(sample, metadata, subs)
