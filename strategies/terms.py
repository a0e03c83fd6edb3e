"""The architecture loss terms: what the architecture step adds to the detection loss, as objects.

A term is anything with a ``name`` and ``term(probs, context) -> tensor or None`` (as NNI's
``DartsLightningModule`` takes its ``ProfilerPenalty``): ``probs`` holds the op probabilities
of every label (differentiable in α), ``context`` the rest of what a term may read (the
supernet, the cost table, how far the architecture training has gone). None means "not now"
(a penalty without a cost table, a regulariser before its burn-in). Each returned value is
added to the loss and logged as ``search/<name>``.

:func:`terms_from_settings` builds the strategy's own from :class:`SearchSettings`; a user adds
theirs with ``HitDetStrategy(extra_terms=[...])``::

    class Entropy:
        name = "entropy"
        def __call__(self, probs, context):
            return 0.01 * sum(-(p * p.clamp(min=1e-30).log()).sum() for p in probs.values())
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch

from strategies.costs import CostModel
from strategies.penalty import column_regulariser, flops_penalty, target_penalty
from strategies.settings import SearchSettings
from strategies.supernet import Supernet

Probs = dict[str, torch.Tensor]


@dataclass
class TermContext:
    """What a term may read besides the probabilities."""

    supernet: Supernet
    costs: CostModel
    arch_progress: float  # architecture epochs done (fractional), 0 at arch_start_epoch's first step
    epoch: int


class ArchitectureTerm(Protocol):
    """One term of the architecture loss (module docstring)."""

    name: str

    def __call__(self, probs: Probs, context: TermContext) -> torch.Tensor | None: ...


@dataclass
class FlopsPenalty:
    """Paper Eq. 6-7: ``λ · 100 · E[MACs] / MACs_uniform`` (:func:`strategies.penalty.flops_penalty`)."""

    lam: float
    name: str = "penalty"

    def __call__(self, probs: Probs, context: TermContext) -> torch.Tensor | None:
        if not context.costs.available:
            return None
        first = next(iter(probs.values()))
        return self.lam * flops_penalty(probs, context.costs.on(first.device, first.dtype), context.costs.reference)


@dataclass
class TargetPenalty:
    """The budget form: ``λ · 100 · |E[MACs] − T| / T`` (:func:`strategies.penalty.target_penalty`)."""

    lam: float
    target: float
    name: str = "penalty"

    def __call__(self, probs: Probs, context: TermContext) -> torch.Tensor | None:
        if not context.costs.available:
            return None
        first = next(iter(probs.values()))
        return self.lam * target_penalty(probs, context.costs.on(first.device, first.dtype), self.target)


@dataclass
class ColumnRegulariser:
    """Paper Eq. 4 summed over the screened components, times ``mu``, after ``burn_in`` architecture epochs.

    ``components``: the screened ones (None: all of the supernet's). The reading and its
    parameters are :func:`strategies.penalty.column_regulariser`'s.
    """

    mu: float
    components: tuple[str, ...] | None = None
    reading: str = "min"
    temperature: float = 0.1
    p: float = 0.5
    burn_in: float = 0.5
    name: str = "regulariser"

    def __call__(self, probs: Probs, context: TermContext) -> torch.Tensor | None:
        if context.arch_progress < self.burn_in:
            return None
        net = context.supernet
        reg = None
        active = net.active()
        for c in net.components if self.components is None else self.components:
            comp = net.components[c]
            mat = comp.matrix(probs)
            presence = comp.presence(active).to(mat.device)
            r = column_regulariser(mat, presence.any(0), self.reading, presence=presence,
                                   temperature=self.temperature, p=self.p)
            reg = r if reg is None else reg + r
        return None if reg is None else self.mu * reg


def terms_from_settings(settings: SearchSettings) -> list[ArchitectureTerm]:
    """The strategy's terms: the FLOPs (or target) penalty when λ > 0, screening's regulariser when μ > 0.

    Args:
        settings: the run's settings.

    Returns:
        The terms in the order they are summed and logged.
    """
    s = settings
    terms: list[ArchitectureTerm] = []
    if s.lam > 0:
        terms.append(FlopsPenalty(s.lam) if s.target_macs is None else TargetPenalty(s.lam, s.target_macs))
    if s.screening and s.mu > 0:
        comps = None if s.screen_components is None else tuple(s.screen_components)
        terms.append(ColumnRegulariser(s.mu, comps, s.regulariser, s.softmin_temperature, s.group_p, s.reg_burn_in))
    return terms


def distinct_terms(terms: Iterable[ArchitectureTerm]) -> list[ArchitectureTerm]:
    """``terms`` as a list, checked to have distinct names (each is logged as ``search/<name>``)."""
    out = list(terms)
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ValueError(f"architecture terms need distinct names (they are logged as search/<name>): {names}")
    return out


def evaluate_terms(terms: list[ArchitectureTerm], probs: Probs, context: TermContext) -> dict[str, torch.Tensor]:
    """``{name: value}`` of the terms that give one now, in their order."""
    out = {}
    for term in terms:
        value = term(probs, context)
        if value is not None:
            out[term.name] = value
    return out
