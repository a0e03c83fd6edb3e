"""Screening (paper Sec. 3.2): the removal schedule and the sub-search-spaces JSON.

Schedule: architecture updates start at epoch ``start`` (0-based; the paper's "6-th epoch"
of 12). At the end of every epoch ``e >= start`` each screened component keeps

    kept(e) = n0 - ceil((n0 - N) * (e - start + 1) / (epochs - start))

ops, the lowest-scored ones going first, so that the ops are removed in equal portions
over the architecture epochs and exactly ``N`` remain after the last one (32 -> 8 over
epochs 6..11: 4 ops a epoch). If training stops before the last epoch (``max_steps``, an
interruption), the remaining removals happen when training ends: the result always has
exactly ``N`` ops per screened component (or all of them where a component had fewer).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "hitdet-subspaces"
VERSION = 1
# Removal epochs count the epochs finished, from 1 ("after epoch 2"); files without this key (before it
# was written) counted from 0.
EPOCH_BASE = 1

# The neck sub search space the authors released (Guo et al., CVPR 2020; docs/hit-detector.md); the
# backbone and head sub spaces were not released.
PAPER_NECK_SUB_SPACE: tuple[str, ...] = (
    "conv_k1", "ir_k3_e6_d3", "ir_k5_e6", "ir_k5_e6_d3", "sep_k3", "sep_k3_d3", "sep_k5_d2", "sep_k5_d3",
)  # fmt: skip


def kept_after_epoch(n_initial: int, n_final: int, epoch: int, start: int, epochs: int | None) -> int:
    """How many ops a component keeps after an epoch under screening's removal schedule.

    ``n_initial - ceil((n_initial - n_final) * (epoch - start + 1) / (epochs - start))``: equal portions
    removed after every epoch from ``start`` on, ``n_final`` left after the last.

    Args:
        n_initial: the component's ops at the start.
        n_final: the ops to keep at the end (``num_ops``).
        epoch: the epoch just finished (0-based).
        start: the first epoch with architecture steps (``arch_start_epoch``).
        epochs: the run's epochs; ``None`` (unknown) removes nothing.

    Returns:
        The number of ops kept after ``epoch``.
    """
    if n_initial <= n_final:
        return n_initial
    if epochs is None or epoch < start:
        return n_initial
    span = max(epochs - start, 1)
    done = min(epoch - start + 1, span)
    return n_initial - math.ceil((n_initial - n_final) * done / span)


@dataclass
class RemovalEvent:
    """One op removed from one component, after ``epoch`` epochs (counted from 1), at global ``step``."""

    component: str
    op: str
    score: float
    epoch: int
    step: int

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "score": self.score, "epoch": self.epoch, "step": self.step}


@dataclass
class SubSpaces:
    """The screening result: kept ops per component, their scores and the order of removal."""

    kept: dict[str, list[str]]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    removed: dict[str, list[RemovalEvent]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "components": {
                comp: {
                    "ops": ops,
                    "scores": self.scores.get(comp, {}),
                    "removed": [e.to_dict() for e in self.removed.get(comp, [])],
                }
                for comp, ops in self.kept.items()
            },
            "settings": self.settings,
            "epoch_base": EPOCH_BASE,
        }

    def to_json(self) -> str:
        """The JSON text of :meth:`to_dict` (indented, one trailing newline), as ``save`` writes it."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike[str], write: Callable[[Path, str], Any] | None = None) -> Path:
        """Write the JSON to ``path`` (public; :func:`load_subspaces` reads it back).

        Args:
            path: the file; missing parent folders are made.
            write: ``write(path, text)``; default a plain write. hitdet's commands pass
                ``hitdet.io.write_text_atomic`` (a temporary file renamed over ``path``, so that a
                crash never leaves half a file); strategies/ may not import hitdet.

        Returns:
            ``path``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        (write or Path.write_text)(path, self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubSpaces:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document (format={data.get('format')!r})")
        if data.get("version") != VERSION:
            raise ValueError(f"unsupported {FORMAT} version {data.get('version')!r} (this reads {VERSION})")
        comps = data.get("components")
        if not isinstance(comps, dict) or not comps:
            raise ValueError(f"{FORMAT}: 'components' must be a non-empty object")
        kept, scores, removed = {}, {}, {}
        for comp, entry in comps.items():
            ops = entry.get("ops") if isinstance(entry, dict) else None
            if not isinstance(ops, list) or not ops or not all(isinstance(o, str) for o in ops):
                raise ValueError(f"{FORMAT}: component {comp!r} needs a non-empty list of op names in 'ops'")
            if len(set(ops)) != len(ops):
                raise ValueError(f"{FORMAT}: component {comp!r} lists an op twice")
            kept[comp] = list(ops)
            scores[comp] = {str(k): float(v) for k, v in entry.get("scores", {}).items()}
            removed[comp] = [
                RemovalEvent(comp, str(e["op"]), float(e["score"]), int(e["epoch"]), int(e["step"]))
                for e in entry.get("removed", [])
            ]
        return cls(kept, scores, removed, dict(data.get("settings", {})))


def load_subspaces(path: str | os.PathLike[str]) -> SubSpaces:
    """Read a sub-search-spaces JSON written by screening (``SubSpaces.save``, ``hitdet screen``).

    Args:
        path: the JSON file (``SCREEN/subspaces.json``).

    Returns:
        The :class:`SubSpaces`: ``kept`` ops per component (best first), their ``scores`` and ``removed``
        events.

    Raises:
        ValueError: not a ``hitdet-subspaces`` document, another version, or a malformed entry.
        OSError: the file cannot be read.
    """
    with open(path) as f:
        return SubSpaces.from_dict(json.load(f))
