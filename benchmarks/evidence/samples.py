"""Random samples of a search's own sub spaces at matched MACs: the "chance" rows of the evidence.

A searched detector is evidence for the search only if it beats what chance finds in the same
sub spaces at the same cost, trained the same way (Yang et al., "NAS evaluation is frustratingly
hard", ICLR 2020; Li & Talwalkar, 2019). :func:`mac_matched_samples` draws them by rejection
sampling, and reports how many draws were rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


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
