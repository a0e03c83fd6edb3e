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
from strategies.screening import SubSpaces


@dataclass
class SearchResult:
    """The exported architecture: NNI sample, metadata and (screen mode) the sub spaces."""

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
        "decisiveness": decisiveness(alpha_probs),
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
        **decision.metadata,
    }
    subs = module.sub_spaces() if module.settings.screening else None
    return SearchResult(sample, metadata, subs)
