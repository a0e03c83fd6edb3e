"""The screener (paper Sec. 3.2): which ops a component keeps, decided over the architecture epochs.

A :class:`Screener` owns the screening of one search: its ranking rule, the removals (the
ops dropped from the supernet and from the weight optimiser), the events and the per-epoch
score history, and the result (:class:`~strategies.screening.SubSpaces`). The schedule is
:func:`strategies.screening.kept_after_epoch`'s.

Which ops go is the *ranking rule*'s call: an object that sees every architecture step
(:meth:`RankingRule.observe`) and scores the ops still searched at an epoch's end
(:meth:`RankingRule.scores`, higher is kept). ``SearchSettings.scoring`` names one of
:data:`RANKING_RULES`; a new rule is a class registered there::

    @RANKING_RULES.register("last_alpha")
    class LastAlpha(RankingRule):
        def scores(self, net):
            return {c: {op: float(v) for op, v in s.items()} for c, s in snapshot_scores(net).items()}

and then ``HitDetStrategy("screen", scoring="last_alpha")``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from strategies import logs
from strategies.penalty import column_scores
from strategies.registry import Registry
from strategies.screening import RemovalEvent, SubSpaces, kept_after_epoch
from strategies.settings import SearchSettings
from strategies.supernet import Supernet

_logger = logging.getLogger(__name__)

Scores = dict[str, dict[str, float]]  # component -> op -> score (ops still searched only)


@dataclass
class ArchStep:
    """One architecture step, as a ranking rule sees it (after α's update).

    ``loss_of(batch)`` is the evaluator's loss on a batch through the supernet as it is now
    (with grad; wrap it in ``torch.no_grad()``), e.g. under :meth:`Supernet.without`.
    """

    batch: Any
    batch_idx: int
    loss: torch.Tensor  # this step's detection loss (detached)
    loss_of: Callable[[Any], torch.Tensor]
    effects: dict[str, torch.Tensor] | None = None  # per label, each op's removal effect (strategies.contribution)


class RankingRule:
    """Scores the ops still searched per component; the screener removes the lowest first.

    The base class has no state: override :meth:`scores`, and :meth:`start_epoch` /
    :meth:`observe` when the rule accumulates over an epoch's architecture steps.
    """

    def __init__(self, settings: SearchSettings | None = None) -> None:
        self.settings = settings

    def start_epoch(self) -> None:
        """A training epoch starts."""

    def observe(self, net: Supernet, step: ArchStep) -> None:
        """After every architecture step while screening."""

    def scores(self, net: Supernet) -> Scores:
        """The scores removals rank on now (every op still searched, per component)."""
        raise NotImplementedError


RANKING_RULES: Registry[RankingRule] = Registry("scoring")


def score_tensors(net: Supernet) -> dict[str, torch.Tensor]:
    """Per component, each column's mean probability over its layers (-inf for removed ops), on α's device."""
    with torch.no_grad():
        probs, active = net.probs(), net.active()
        out = {}
        for c, comp in net.components.items():
            mat = comp.matrix(probs).detach().double()
            out[c] = column_scores(mat, comp.presence(active).to(mat.device))
        return out


def named_scores(net: Supernet, tensors: dict[str, torch.Tensor]) -> Scores:
    """``{component: {op: score}}`` of the finite entries of :func:`score_tensors`-like tensors."""
    out = {}
    for c, sc in tensors.items():
        values = sc.double().cpu().tolist()
        out[c] = {col: v for col, v in zip(net.components[c].columns, values, strict=True) if v != float("-inf")}
    return out


def snapshot_scores(net: Supernet) -> Scores:
    """Column scores now (paper: the op's α score, a probability, averaged over the component's layers)."""
    return named_scores(net, score_tensors(net))


@RANKING_RULES.register("epoch_mean")
class EpochMeanProbability(RankingRule):
    """The column scores averaged over the epoch's architecture steps (the default).

    Each architecture step moves α by a noisy minibatch gradient, so the end-of-epoch snapshot
    carries the last few batches' noise; the mean over the epoch does not. The sums stay on
    α's device (no host sync per step); the set of ops is fixed within an epoch.
    """

    def __init__(self, settings: SearchSettings | None = None) -> None:
        super().__init__(settings)
        self.start_epoch()

    def start_epoch(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def observe(self, net: Supernet, step: ArchStep) -> None:
        for c, sc in score_tensors(net).items():
            self.sums[c] = self.sums[c] + sc if c in self.sums else sc.clone()
        self.steps += 1

    def scores(self, net: Supernet) -> Scores:
        now = score_tensors(net)
        if self.steps == 0:
            return named_scores(net, now)
        # ops removed since (at this epoch's end) are -inf now, and stay out
        return named_scores(net, {c: torch.where(torch.isinf(now[c]), now[c], total / self.steps)
                                  for c, total in self.sums.items()})


@RANKING_RULES.register("snapshot")
class SnapshotProbability(RankingRule):
    """The column scores at the epoch's end."""

    def scores(self, net: Supernet) -> Scores:
        return snapshot_scores(net)


@RANKING_RULES.register("contribution")
class RemovalEffect(RankingRule):
    """Each op's first-order removal effect on the detection loss, averaged over the epoch's architecture steps
    and the component's positions (:mod:`strategies.contribution`): the op whose removal would cost least goes first.

    Falls back to the epoch-mean probability where no effect was measured (the penalty-only control).
    """

    def __init__(self, settings: SearchSettings | None = None) -> None:
        super().__init__(settings)
        from strategies.contribution import ContributionMeter

        self.meter = ContributionMeter()
        self.fallback = EpochMeanProbability(settings)

    def start_epoch(self) -> None:
        self.meter.start_epoch()
        self.fallback.start_epoch()

    def observe(self, net: Supernet, step: ArchStep) -> None:
        self.fallback.observe(net, step)
        if step.effects is not None:
            self.meter.observe(step.effects)

    def scores(self, net: Supernet) -> Scores:
        if not self.meter.steps:
            return self.fallback.scores(net)
        return self.meter.per_component(net)


class Screener:
    """Screening's removals, events, history and result (module docstring).

    Args:
        settings: the run's settings (``num_ops``, ``arch_start_epoch``, the screened components).
        rule: the ranking rule; default the one ``settings.scoring`` names in :data:`RANKING_RULES`.
    """

    def __init__(self, settings: SearchSettings, rule: RankingRule | None = None) -> None:
        self.settings = settings
        self.rule = rule if rule is not None else RANKING_RULES.build(settings.scoring, settings)
        self.events: list[RemovalEvent] = []
        self.history: list[dict[str, Any]] = []  # scores per epoch (the paper's Fig. 4 view)

    def start_epoch(self) -> None:
        self.rule.start_epoch()

    def observe(self, net: Supernet, step: ArchStep) -> None:
        """Show the rule an architecture step (only while screening)."""
        if self.settings.screening:
            self.rule.observe(net, step)

    def scores(self, net: Supernet) -> Scores:
        """What the rule ranks on now."""
        return self.rule.scores(net)

    def record_epoch(self, net: Supernet, epoch: int, step: int) -> None:
        """The scores at the end of ``epoch`` (counted from 1: the epoch just finished)."""
        self.history.append({"epoch": epoch, "step": step, "scores": self.scores(net)})

    def screen(self, net: Supernet, trainer: Any | None, final: bool = False) -> list[RemovalEvent]:
        """Remove ops down to the schedule's count for this epoch (``final``: down to exactly N).

        ``trainer``: the Lightning trainer (epoch, step, the optimisers to free, the logger), or None.
        Returns the removals made; each records the epochs finished when it was made (from 1: "after epoch 2").
        """
        epochs = trainer.max_epochs if trainer is not None else None
        epochs = epochs if epochs is not None and epochs > 0 else None
        epoch = int(trainer.current_epoch) if trainer is not None else 0
        # at an epoch's end Lightning's current_epoch is the (0-based) epoch ending; when training ends it
        # already counts the epochs finished
        finished = epoch if final else epoch + 1
        scores = self.scores(net)
        done: list[RemovalEvent] = []
        s = self.settings
        for c in s.screened(list(net.components)):
            n0 = len(net.initial_columns[c])
            target = s.num_ops if final else kept_after_epoch(n0, s.num_ops, epoch, s.arch_start_epoch, epochs)
            ranked = sorted(scores[c].items(), key=lambda kv: (kv[1], kv[0]))
            excess = max(len(ranked) - min(target, n0), 0)
            removable = [(op, score) for op, score in ranked if op not in s.screen_keep]  # kept ops stay
            for op, score in removable[:excess]:
                done.append(self.drop(net, c, op, score, trainer, finished))
        return done

    def drop(self, net: Supernet, component: str, op: str, score: float, trainer: Any | None,
             epoch: int | None = None) -> RemovalEvent:
        """Remove ``op`` from every layer of ``component``, free it in the optimisers, record the event.

        ``epoch``: the epochs finished (from 1; default Lightning's ``current_epoch + 1``, -1 without a trainer).
        """
        forget_parameters(net.drop(component, op), trainer)
        if epoch is None:
            epoch = int(trainer.current_epoch) + 1 if trainer is not None else -1
        step = int(trainer.global_step) if trainer is not None else -1
        event = RemovalEvent(component, op, score, epoch, step)
        self.events.append(event)
        _logger.info("screening: removed %s from %s (score %.4g, after epoch %d)", op, component, score, epoch)
        if trainer is not None:
            logs.log_event(trainer.logger, event, len(self.events))
        return event

    def sub_spaces(self, net: Supernet) -> SubSpaces:
        """The screening result (kept ops by score, highest first; removal order)."""
        scores = self.scores(net)
        kept = {c: [op for op, _ in sorted(s.items(), key=lambda kv: -kv[1])] for c, s in scores.items()}
        if self.settings.screen_components is not None:  # not screened: every op stays available
            kept.update({c: list(net.initial_columns[c]) for c in kept if c not in self.settings.screen_components})
        all_scores: Scores = {c: dict(s) for c, s in scores.items()}
        removed: dict[str, list[RemovalEvent]] = {c: [] for c in kept}
        for e in self.events:
            removed.setdefault(e.component, []).append(e)
            all_scores.setdefault(e.component, {})[e.op] = e.score
        return SubSpaces(kept, all_scores, removed, self.settings.to_dict())

    def state(self) -> dict[str, Any]:
        """The checkpoint's ``events`` and ``history`` entries."""
        return {"events": [vars(e) for e in self.events], "history": self.history}

    def load_state(self, state: dict[str, Any]) -> None:
        self.events = [RemovalEvent(**e) for e in state["events"]]
        self.history = list(state.get("history", []))


def forget_parameters(params: list[nn.Parameter], trainer: Any | None) -> None:
    """Take removed ops' parameters out of the trainer's optimisers, and their state (momentum) with them."""
    if not params or trainer is None:
        return
    ids = {id(p) for p in params}
    for opt in trainer.optimizers:
        for group in opt.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        for p in params:
            opt.state.pop(p, None)
