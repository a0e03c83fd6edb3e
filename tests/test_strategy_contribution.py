"""Removal effects (first-order perturbation), the penalty-only control and ops screening never removes.

Checked against numbers computed here: the exact loss change of removing an op from a mixed layer
whose loss is linear in its output (where first order is exact), α trajectories that do not depend
on the data, and kept ops that screening would otherwise have removed.
"""

from __future__ import annotations

import pytest
import test_strategy as common
import torch

from strategies.contribution import removal_effects

OPS = common.OPS


def test_removal_effect_is_the_exact_change_of_a_linear_loss() -> None:
    torch.manual_seed(0)
    n = 5
    outputs = torch.randn(n, 7)  # o_k, the candidates' outputs
    c = torch.randn(7)  # L(y) = <c, y>: linear in the layer's output
    alpha = torch.randn(n, requires_grad=True)
    active = torch.tensor([True, True, False, True, True])
    logits = alpha.masked_fill(~active, float("-inf"))
    p = torch.softmax(logits, 0)
    loss = (c * (p[:, None] * outputs).sum(0)).sum()
    (grad,) = torch.autograd.grad(loss, alpha)
    effects = removal_effects({"x": p.detach()}, {"x": grad}, {"x": active})["x"]
    for j in range(n):
        if not active[j]:
            assert effects[j] == 0
            continue
        keep = active.clone()
        keep[j] = False
        q = torch.softmax(alpha.detach().masked_fill(~keep, float("-inf")), 0)
        exact = (c * (q[:, None] * outputs).sum(0)).sum() - loss.detach()
        assert float(effects[j]) == pytest.approx(float(exact), rel=1e-5, abs=1e-6)


def test_penalty_only_control_never_sees_the_data() -> None:
    """With arch_loss_weight 0 only the FLOPs penalty moves α: two different datasets give the same α."""
    a = common.run(epochs=3, arch_start_epoch=1, arch_loss_weight=0.0, arch_travel=4.0,
                   data=common.make_data(seed=1))
    b = common.run(epochs=3, arch_start_epoch=1, arch_loss_weight=0.0, arch_travel=4.0,
                   data=common.make_data(seed=2))
    pa, pb = common.alpha_probs(a), common.alpha_probs(b)
    assert pa == pb
    # and the penalty did move α (towards cheaper ops): not uniform any more
    assert any(max(v) > 1.5 / len(v) for v in pa.values())
    # whereas the loss, when it reaches α, makes the data matter
    c = common.run(epochs=3, arch_start_epoch=1, data=common.make_data(seed=1))
    d = common.run(epochs=3, arch_start_epoch=1, data=common.make_data(seed=2))
    assert common.alpha_probs(c) != common.alpha_probs(d)
    assert a.export_result().metadata.get("contribution") is None


def test_screen_keep_keeps_an_op_screening_would_remove() -> None:
    plain = common.run(mode="screen", epochs=4, arch_start_epoch=1, num_ops=2)
    removed = {e.op for e in plain.export_result().sub_spaces.removed["backbone"]}
    keep = sorted(removed)[0]  # an op the plain screening removed from the backbone
    kept = common.run(mode="screen", epochs=4, arch_start_epoch=1, num_ops=2, screen_keep=[keep])
    subs = kept.export_result().sub_spaces
    for comp in ("backbone", "neck", "head"):
        assert keep in subs.kept[comp] and len(subs.kept[comp]) == 2, comp


def test_contribution_decision_picks_the_largest_measured_effect() -> None:
    strategy = common.run(epochs=3, arch_start_epoch=1, decision="contribution")
    result = strategy.export_result()
    info = result.metadata["contribution"]
    assert info["steps"] > 0
    for label, effects in info["effects"].items():
        names = [str(n) for n in strategy.oneshot_module.supernet.names()[label]]
        assert result.sample[label] == names[max(range(len(effects)), key=effects.__getitem__)]


def test_contribution_ranking_screens_by_measured_effects() -> None:
    strategy = common.run(mode="screen", epochs=4, arch_start_epoch=1, num_ops=3, scoring="contribution")
    subs = strategy.export_result().sub_spaces
    module = strategy.oneshot_module
    rule = module.screener.rule
    assert type(rule).__name__ == "RemovalEffect" and rule.meter.last_steps > 0  # it measured, not fell back
    for comp in ("backbone", "neck", "head"):
        assert len(subs.kept[comp]) == 3
        # each removal was the lowest measured effect among the ops still there at its epoch: no kept op
        # scored below it in that epoch's history
        for event in subs.removed[comp]:
            epoch = next(h for h in module.screener.history if h["epoch"] == event.epoch)["scores"][comp]
            assert event.score == pytest.approx(epoch[event.op])
            assert all(epoch[op] >= event.score - 1e-12 for op in subs.kept[comp] if op in epoch)
