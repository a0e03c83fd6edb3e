"""The strategy's collaborators as extension points: loss terms, ranking rules, decision rules, settings.

Each test plugs a small rule of its own into the seam it names and checks that the search
used it, against numbers computed here from the tiny pool space (tests/test_strategy.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import test_strategy as common
import torch

from strategies import (
    DECISIONS,
    RANKING_RULES,
    ArchStep,
    Decision,
    DecisionRule,
    HitDetStrategy,
    RankingRule,
    SearchSettings,
    SubSpaces,
    Supernet,
    TermContext,
)

OPS = common.OPS


class FavourSkip:
    """A user's term: minus the probability of ``skip`` at every searched position, times ``weight``."""

    name = "favour_skip"

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight
        self.contexts: list[TermContext] = []

    def __call__(self, probs: dict[str, torch.Tensor], context: TermContext) -> torch.Tensor:
        self.contexts.append(context)
        i = OPS.index("skip")
        return -self.weight * sum(p[i] for p in probs.values())


def prepared_module(**kwargs: Any) -> Any:
    space = common.TablePoolSpace()
    strategy = HitDetStrategy(**kwargs)
    strategy.mutate_model(space)
    module = strategy.configure_oneshot_module(common.Classifier())
    module.set_model(space)
    module.prepare()
    return module


def test_a_custom_loss_term_reaches_alpha() -> None:
    term = FavourSkip()
    module = prepared_module(extra_terms=[term])
    values = module.arch_terms(module.probs())
    assert list(values) == ["penalty", "favour_skip"]  # the strategy's own first, then the user's
    assert values["favour_skip"].item() == pytest.approx(-4 / len(OPS), rel=1e-3)  # 4 positions, α near 0
    assert isinstance(term.contexts[0].supernet, Supernet) and term.contexts[0].costs.source == "space"
    values["favour_skip"].backward()
    i = OPS.index("skip")
    for label, group in module.layers.items():
        grad = group[0]._arch_alpha.grad
        # d(-p_skip)/d alpha: negative on skip, positive on every other op
        assert grad[i] < 0 and (torch.cat([grad[:i], grad[i + 1:]]) > 0).all(), label


def test_a_custom_term_steers_the_search_and_is_logged() -> None:
    logged: set[str] = set()

    class Keys(common.pl.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            logged.update(trainer.callback_metrics)

    strategy = common.run(epochs=2, penalty_lambda=0.0, extra_terms=[FavourSkip(50.0)], callbacks=[Keys()])
    assert set(strategy.export_result().sample.values()) == {"skip"}
    assert "search/favour_skip" in logged


def test_terms_need_distinct_names() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        prepared_module(extra_terms=[FavourSkip(), FavourSkip()])


class Alphabetical(RankingRule):
    """Ranks ops by name (the alphabetically last go first); counts the steps it saw."""

    def __init__(self, settings: SearchSettings | None = None) -> None:
        super().__init__(settings)
        self.steps: list[ArchStep] = []
        self.masked_loss: tuple[float, float] | None = None

    def observe(self, net: Supernet, step: ArchStep) -> None:
        self.steps.append(step)
        if self.masked_loss is None:  # what a perturbation rule measures: the loss with an op masked out
            with torch.no_grad():
                full = float(step.loss_of(step.batch))
                with net.without("backbone", "conv_k5"):
                    assert all(float(net.probs()[label][OPS.index("conv_k5")]) == 0 for label in net.layers
                               if label.startswith("backbone/"))
                    masked = float(step.loss_of(step.batch))
                assert float(net.probs()["backbone/b0"][OPS.index("conv_k5")]) > 0  # back after the block
            self.masked_loss = (full, masked)

    def scores(self, net: Supernet) -> dict[str, dict[str, float]]:
        return {c: {op: -ord(op[0]) - 0.01 * ord(op[-1]) for op in cols} for c, cols in net.searched_columns().items()}


def test_a_custom_ranking_rule_decides_the_removals() -> None:
    RANKING_RULES.register("test_alphabetical")(Alphabetical)
    try:
        strategy = common.run(mode="screen", num_ops=2, epochs=3, arch_start_epoch=1, scoring="test_alphabetical",
                              screen_keep=())  # the rule alone decides
    finally:
        del RANKING_RULES["test_alphabetical"]
    rule = strategy.oneshot_module.screener.rule
    assert isinstance(rule, Alphabetical)
    assert len(rule.steps) == 2 * 4  # epochs 1 and 2, 4 architecture steps each (32 samples, batch 8)
    full, masked = rule.masked_loss
    assert masked != full
    subs = strategy.export_result().sub_spaces
    expected = sorted(OPS, key=lambda op: (-ord(op[0]) - 0.01 * ord(op[-1]), op))
    for comp in ("backbone", "neck", "head"):
        assert sorted(subs.kept[comp]) == sorted(expected[-2:]), comp
        assert [e.op for e in subs.removed[comp]] == expected[:4], comp


class Cheapest(DecisionRule):
    """The op with the fewest MACs at every position."""

    def decide(self, module: Any) -> Decision:
        names = module.supernet.names()
        return Decision({k: names[k][int(module.costs.macs[k].argmin())] for k in names}, metadata={"rule": "cheap"})


def test_a_custom_decision_rule_picks_the_export() -> None:
    DECISIONS.register("test_cheapest")(Cheapest)
    try:
        strategy = common.run(common.TablePoolSpace, epochs=2, decision="test_cheapest")
        result = strategy.export_result()
    finally:
        del DECISIONS["test_cheapest"]
    table = common.TablePoolSpace().analytic_macs()
    cheapest = {label: min(row, key=row.get) for label, row in table.items()}
    assert result.sample == cheapest
    assert result.metadata["sample"] == cheapest and result.metadata["rule"] == "cheap"
    assert result.metadata["settings"]["decision"] == "test_cheapest"
    assert result.metadata["macs"]["exact"] == pytest.approx(sum(table[k][v] for k, v in cheapest.items()))


def test_settings_as_set_and_as_used() -> None:
    s = SearchSettings(mode="screen")
    assert {k: s.to_dict(resolved=False)[k] for k in ("penalty_lambda", "skip_drop_prob", "decision")} == {
        "penalty_lambda": None, "skip_drop_prob": None, "decision": None}
    assert {k: s.to_dict()[k] for k in ("penalty_lambda", "skip_drop_prob", "decision")} == {
        "penalty_lambda": 0.0, "skip_drop_prob": 0.0, "decision": "argmax"}
    assert SearchSettings(target_macs=1e6).to_dict()["decision"] == "budget"
    # a copy for another mode keeps "the mode's default", not the first mode's value
    assert HitDetStrategy("search", settings=s).settings.lam == 0.01
    assert HitDetStrategy.from_settings(s, mode="search").settings.skip_drop == 0.0
    assert s.screen_keep == ("skip",) and SearchSettings(screen_keep=[]).screen_keep == ()
    with pytest.raises(ValueError, match="decision: 'budget'"):
        SearchSettings(decision="budget")
    with pytest.raises(ValueError, match="scoring: must be one of epoch_mean, snapshot"):
        SearchSettings(scoring="nope")


def test_subspaces_serialise_and_take_a_writer(tmp_path: Any) -> None:
    subs = SubSpaces({"neck": ["conv_k3", "skip"]}, {"neck": {"conv_k3": 0.6, "skip": 0.4}})
    written: list[tuple[Any, str]] = []
    path = subs.save(tmp_path / "a" / "subspaces.json", lambda p, text: written.append((p, text)))
    assert written == [(path, subs.to_json())] and not path.exists()
    plain = subs.save(tmp_path / "b" / "subspaces.json")
    assert plain.read_text() == subs.to_json() and json.loads(subs.to_json()) == subs.to_dict()
