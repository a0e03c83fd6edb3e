"""The statistics of the evidence harness: paired bootstrap intervals, seed agreement, levelled curves, noise.

Each figure here is shown next to what noise alone gives for it (the project's evidence rules):

- :func:`paired_bootstrap`: the difference of mean AP between two rows, with a 95 % interval from a
  hierarchical bootstrap (training seeds shared by both rows, so the difference is paired; the
  independent units of a row -- search seeds, random samples -- resampled within it);
- :func:`agreement` and :func:`chance_agreement`: how often independent search seeds pick the same
  op at a position, and what independent uniform picks from the same sub spaces would give;
- :func:`levelled`: whether a validation curve has stopped rising;
- :func:`noise_decisiveness` (the strategy's own, :func:`strategies.export.noise_decisiveness`): how
  "decisive" α looks when Adam follows pure random gradients for as many steps at the same learning
  rate -- the figure an old report quoted as evidence, and which noise reproduces.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from strategies.export import noise_decisiveness  # noqa: F401  (re-exported: the harness reads it from here)

# A row's results: {unit: {training seed: AP}}; a unit is one architecture (one search seed, one random sample).
Units = Mapping[str, Mapping[int, float]]


def row_mean(units: Units) -> float:
    """Mean AP over every (unit, training seed) of a row."""
    values = [ap for seeds in units.values() for ap in seeds.values()]
    return float(np.mean(values)) if values else float("nan")


def paired_bootstrap(x: Units, y: Units, n: int = 10000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean AP of row ``x`` minus row ``y`` and its bootstrap interval.

    Each replicate resamples the training seeds both rows share (with replacement, the same draw
    for both: the pairing), then, within each row, its units (with replacement), and takes the
    difference of the two means over the drawn (unit, seed) cells. With one unit and two seeds a
    row has little to resample: the interval is then as wide as the seeds make it, no wider; read
    it with the number of units and seeds it states.

    Rows whose units share no training seed (one seed per unit, alternating) are compared unpaired: each
    unit by its mean over its seeds, units resampled; ``seeds`` is then 0.

    Returns ``{"diff", "lo", "hi", "units_x", "units_y", "seeds"}``.
    """
    seeds = sorted(set.intersection(*(set(s) for s in [*x.values(), *y.values()])))
    rng = np.random.default_rng(seed)
    if not seeds:  # units trained at different seeds (one each): unpaired, each unit by its mean over its seeds
        xm = np.array([np.mean(list(v.values())) for v in x.values()], dtype=float)
        ym = np.array([np.mean(list(v.values())) for v in y.values()], dtype=float)
        boot = np.array([rng.choice(xm, len(xm)).mean() - rng.choice(ym, len(ym)).mean() for _ in range(n)])
        return _interval(float(xm.mean() - ym.mean()), boot, level, len(xm), len(ym), 0)
    xs = np.array([[x[u][t] for t in seeds] for u in x], dtype=float)  # units x seeds
    ys = np.array([[y[u][t] for t in seeds] for u in y], dtype=float)
    diffs = np.empty(n)
    for i in range(n):
        cols = rng.integers(len(seeds), size=len(seeds))
        rx = rng.integers(len(xs), size=len(xs))
        ry = rng.integers(len(ys), size=len(ys))
        diffs[i] = xs[np.ix_(rx, cols)].mean() - ys[np.ix_(ry, cols)].mean()
    return _interval(float(xs.mean() - ys.mean()), diffs, level, len(xs), len(ys), len(seeds))


def _interval(diff: float, boot: np.ndarray, level: float, units_x: int, units_y: int, seeds: int) -> dict[str, Any]:
    """:func:`paired_bootstrap`'s result: the difference and the central ``level`` interval of its bootstrap."""
    tail = (1 - level) / 2
    return {"diff": diff, "lo": float(np.quantile(boot, tail)), "hi": float(np.quantile(boot, 1 - tail)),
            "units_x": units_x, "units_y": units_y, "seeds": seeds}


def agreement(samples: Sequence[Mapping[str, str]], labels: Sequence[str] | None = None) -> float:
    """Over every pair of samples, the fraction of positions where both chose the same op (mean over pairs)."""
    if len(samples) < 2:
        return float("nan")
    labels = list(labels if labels is not None else samples[0])
    pairs = list(itertools.combinations(samples, 2))
    return float(np.mean([np.mean([a[label] == b[label] for label in labels]) for a, b in pairs]))


def chance_agreement(choices: Sequence[Mapping[str, Sequence[str]]], labels: Sequence[str] | None = None) -> float:
    """The agreement that independent uniform picks would have, given each seed's ops per position.

    ``choices[i][label]``: the ops seed i could choose from at ``label`` (its sub space). Two
    uniform picks from sets A and B agree with probability |A ∩ B| / (|A| |B|); averaged over
    positions and pairs, as :func:`agreement` averages. With the same 8 ops everywhere it is 1/8.
    """
    if len(choices) < 2:
        return float("nan")
    labels = list(labels if labels is not None else choices[0])
    values = []
    for a, b in itertools.combinations(choices, 2):
        values.append(np.mean([len(set(a[label]) & set(b[label])) / (len(a[label]) * len(b[label]))
                               for label in labels]))
    return float(np.mean(values))


def levelled(curve: Sequence[float], window: int = 2, tolerance: float = 0.01,
             relative: float = 0.05) -> dict[str, Any]:
    """Has a validation curve stopped rising? The gain of its last epoch over the epoch ``window`` before it.

    With a step schedule the last epochs run at the smallest learning rate, so this asks whether
    they still improve the detector. Levelled when the gain is below ``max(tolerance, relative *
    last)`` AP. Returns ``{"levelled", "gain", "last"}``; a curve of ``window`` epochs or fewer is not
    judged (None). Whether a longer schedule would still help is a separate question: the harness
    answers it with its 2x-schedule rows.
    """
    values = [float(v) for v in curve]
    if len(values) <= window:
        return {"levelled": None, "gain": float("nan"), "last": values[-1] if values else float("nan")}
    gain = values[-1] - values[-1 - window]
    return {"levelled": bool(gain < max(tolerance, relative * values[-1])), "gain": float(gain),
            "last": values[-1]}
