"""HitDetStrategy, screen mode: exactly N ops, removed ops stop running, Eq. 4, sub-spaces JSON."""

from __future__ import annotations

import gc
import json
import math
import statistics
import weakref
from typing import Any

import pytest
import pytorch_lightning as pl
import test_strategy as common
import torch

from strategies import SubSpaces, column_regulariser, column_scores, kept_after_epoch, load_subspaces
from strategies.mixed import HitDetMixedLayer

OPS = common.OPS


def test_schedule_removes_in_equal_portions_down_to_n() -> None:
    kept = [kept_after_epoch(32, 8, e, start=6, epochs=12) for e in range(12)]
    assert kept == [32] * 6 + [28, 24, 20, 16, 12, 8]
    assert [kept_after_epoch(6, 2, e, start=1, epochs=3) for e in range(3)] == [6, 4, 2]
    assert kept_after_epoch(5, 8, 11, start=6, epochs=12) == 5  # fewer than N: keep all
    assert kept_after_epoch(32, 8, 3, start=0, epochs=None) == 32  # no epoch budget: at the end


def test_regulariser_readings() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]], dtype=torch.float64)
    cols = torch.ones(3, dtype=torch.bool)
    norms = p.pow(2).sum(0).sqrt()
    assert column_regulariser(p, cols, "min").item() == pytest.approx(norms.min().item(), rel=1e-6)
    # removed columns are ignored by the min
    assert column_regulariser(p, torch.tensor([True, True, False]), "min").item() == pytest.approx(norms[1].item())
    # relative column norms: 1 for every op at uniform (two layers of 3 ops: ||(1/3, 1/3)|| = sqrt(2)/3)
    s = norms / (math.sqrt(2) / 3)
    tau = 0.1
    softmin = -tau * math.log(sum(math.exp(-v / tau) for v in s.tolist()) / 3)
    assert column_regulariser(p, cols, "softmin", temperature=tau).item() == pytest.approx(softmin, rel=1e-6)
    assert column_regulariser(p, cols, "softmin", temperature=1e-4).item() == pytest.approx(s.min().item(), rel=1e-3)
    assert column_regulariser(p, cols, "group", p=0.5).item() == pytest.approx(s.sqrt().mean().item(), rel=1e-6)
    uniform = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    for reading in ("softmin", "group"):
        assert column_regulariser(uniform, cols, reading).item() == pytest.approx(1.0)
    # the L2,p norm with p < 1 sparsifies: all mass in one column scores below uniform ...
    sparse = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]], dtype=torch.float64)
    assert column_regulariser(sparse, cols, "group", p=0.5).item() == pytest.approx(3**-0.5, abs=2e-3)  # eps at 0
    # ... while at p = 1 (the group lasso) every matrix whose layers agree scores the same
    same = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], dtype=torch.float64)
    assert column_regulariser(same, cols, "group", p=1.0).item() == pytest.approx(1.0, abs=1e-5)
    assert column_regulariser(sparse, cols, "group", p=1.0).item() == pytest.approx(1.0, abs=1e-5)
    # the smooth readings send gradient to every column, the weakest the most; "min" to one column only
    for reading, nonzero in (("min", 1), ("softmin", 3), ("group", 3)):
        q = p.clone().requires_grad_(True)
        column_regulariser(q, cols, reading).backward()
        col_grad = q.grad.abs().sum(0)
        assert int((col_grad > 1e-12).sum()) == nonzero, reading
        if nonzero == 3:
            assert int(col_grad.argmax()) == int(norms.argmin()), reading
    scores = column_scores(p, torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float64).bool())
    assert scores.tolist() == pytest.approx([0.55, 0.3, 0.2])
    with pytest.raises(ValueError):
        column_regulariser(p, cols, "max")


def test_screening_keeps_exactly_n_and_removed_ops_stop_running(tmp_path: Any) -> None:
    calls: dict[tuple[str, str], int] = {}
    refs: dict[tuple[str, str], weakref.ref] = {}
    per_epoch: dict[int, dict[tuple[str, str], int]] = {}

    class Counter(pl.Callback):
        def on_fit_start(self, trainer: Any, module: Any) -> None:
            for m in module.modules():
                if isinstance(m, HitDetMixedLayer):
                    for name, cand in m.candidate_modules():
                        key = (m.label, name)
                        calls[key] = 0
                        refs[key] = weakref.ref(cand)
                        cand.register_forward_hook(lambda *_a, key=key: calls.__setitem__(key, calls[key] + 1))

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            per_epoch[trainer.current_epoch] = dict(calls)

    from pytorch_lightning.loggers import TensorBoardLogger

    strategy = common.run(
        mode="screen",
        num_ops=2,
        epochs=3,
        arch_start_epoch=1,
        callbacks=[Counter()],
        logger=TensorBoardLogger(str(tmp_path), name="screen"),
    )
    module = strategy.oneshot_module
    result = strategy.export_result()
    subs = result.sub_spaces
    assert subs is not None
    assert {c: len(ops) for c, ops in subs.kept.items()} == {"backbone": 2, "neck": 2, "head": 2}
    # schedule 6 -> 4 after epoch 2, -> 2 after epoch 3 (counted from 1; arch_start_epoch=1 is the 2nd)
    for comp, events in subs.removed.items():
        assert [e.epoch for e in events] == [2, 2, 3, 3], comp
        assert len({e.op for e in events} | set(subs.kept[comp])) == len(OPS)
    # the live supernet has exactly the kept ops; their scores are the kept ranking
    for label, group in module.layers.items():
        comp = label.split("/")[0]
        assert sorted(map(str, group[0].active_names())) == sorted(subs.kept[comp])
        assert sorted(k for k in group[0]._modules if k != "_softmax") == sorted(subs.kept[comp])
    # a removed op never ran after the epoch that removed it; kept ops ran in the last epoch
    last = max(per_epoch)
    removed_at = {
        (label, e.op): e.epoch
        for e_list in subs.removed.values()
        for e in e_list
        for label in module.components[e.component].labels
    }
    for key, epoch in removed_at.items():
        assert per_epoch[last][key] == per_epoch[epoch - 1][key], key  # per_epoch: Lightning's 0-based keys
    for label, group in module.layers.items():
        for name in group[0].active_names():
            assert per_epoch[last][(label, name)] > per_epoch[last - 1][(label, name)]
    # ... and its memory is freed: no optimiser or module keeps it alive
    gc.collect()
    assert all(refs[key]() is None for key in removed_at)
    weight_opt = [o for o in module.trainer.optimizers if not getattr(o, "is_arch_optimizer", False)][0]
    n_opt = sum(p.numel() for g in weight_opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in module.weight_parameters())
    # screening events reach TensorBoard
    acc = common.read_events(tmp_path)
    assert len(acc.Tensors("screening/removed/text_summary")) == 12  # 4 removals x 3 components
    assert "num_ops/backbone" in acc.Tags()["scalars"]
    assert [s.value for s in acc.Scalars("num_ops/backbone")][-1] <= 4


def spread(strategy: Any) -> float:
    scores = strategy.oneshot_module.scores()
    return statistics.mean(statistics.pstdev(s.values()) for s in scores.values())


def test_mu_spreads_the_column_scores() -> None:
    """Paper Fig. 4: with mu = 0 the op scores stay close; the paper's mu = 0.1 separates them.

    Same data and seed, K = 12 architecture steps, no op removed (num_ops = all).
    """
    kw = dict(mode="screen", num_ops=len(OPS), epochs=3, arch_start_epoch=0)
    flat = spread(common.run(mu=0.0, **kw))
    sparse = spread(common.run(mu=0.1, **kw))
    assert sparse > 1.2 * flat  # measured: 0.046 vs 0.034


def test_group_reading_and_one_component_at_a_time() -> None:
    strategy = common.run(mode="screen", num_ops=3, regulariser="group", screen_components=["neck"],
                          fixed_ops={"backbone": "conv_k3"})
    module = strategy.oneshot_module
    subs = strategy.export_result().sub_spaces
    assert list(subs.kept) == ["backbone", "neck", "head"]
    assert len(subs.kept["neck"]) == 3
    # the components not screened keep every op available for the search ...
    assert sorted(subs.kept["backbone"]) == sorted(OPS) and sorted(subs.kept["head"]) == sorted(OPS)
    # ... but while the neck was screened they ran one op each: the given one, or the default (the paper's
    # 3x3-conv head), every other candidate's module deleted
    for label, op in (("backbone/b0", "conv_k3"), ("backbone/b1", "conv_k3"), ("head/h0", "conv_k3")):
        layer = module.layers[label][0]
        assert [str(n) for n in layer.active_names()] == [op]
        assert sorted(k for k in layer._modules if k != "_softmax") == [op]
        assert layer.probs().detach().tolist() == pytest.approx([float(n == op) for n in layer.names])
    assert subs.settings["regulariser"] == "group" and subs.settings["screen_components"] == ["neck"]


def test_early_stop_still_ends_with_exactly_n() -> None:
    strategy = common.run(mode="screen", num_ops=2, epochs=12, arch_start_epoch=0, trainer_kwargs={"max_steps": 10})
    subs = strategy.export_result().sub_spaces
    assert all(len(ops) == 2 for ops in subs.kept.values())


def test_subspaces_json_round_trip_and_search_on_it(tmp_path: Any) -> None:
    subs = common.run(mode="screen", num_ops=3, epochs=2).export_result().sub_spaces
    path = subs.save(tmp_path / "sub" / "subspaces.json")
    data = json.loads(path.read_text())
    assert data["format"] == "hitdet-subspaces" and data["version"] == 1
    assert set(data["components"]["neck"]) == {"ops", "scores", "removed"}
    loaded = load_subspaces(path)
    assert loaded.kept == subs.kept
    assert [e.op for e in loaded.removed["head"]] == [e.op for e in subs.removed["head"]]
    # a search on the screened sub spaces: only the kept ops exist in the supernet
    strategy = common.run(sub_spaces=path, epochs=2)
    result = strategy.export_result()
    assert result.metadata["sub_spaces"] == {c: [o for o in OPS if o in ops] for c, ops in loaded.kept.items()}
    for label, op in result.sample.items():
        assert op in loaded.kept[label.split("/")[0]]
    for label, group in strategy.oneshot_module.layers.items():
        assert sorted(k for k in group[0]._modules if k != "_softmax") == sorted(loaded.kept[label.split("/")[0]])


def test_subspaces_loader_rejects_bad_files(tmp_path: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="hitdet-subspaces"):
        load_subspaces(bad)
    bad.write_text(json.dumps({"format": "hitdet-subspaces", "version": 1, "components": {"neck": {"ops": []}}}))
    with pytest.raises(ValueError, match="neck"):
        load_subspaces(bad)
    ok = SubSpaces({"neck": ["conv_k3", "skip"]})
    assert load_subspaces(ok.save(tmp_path / "ok.json")).kept == {"neck": ["conv_k3", "skip"]}
    with pytest.raises(ValueError, match="components"):
        common.run(sub_spaces={"nope": ["skip", "conv_k3"]}, epochs=1)


def test_screening_resumes_from_a_checkpoint(tmp_path: Any) -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    def checkpoints(folder: str) -> ModelCheckpoint:
        return ModelCheckpoint(dirpath=str(tmp_path / folder), save_top_k=-1, every_n_epochs=1, filename="{epoch}")

    kw: dict[str, Any] = dict(mode="screen", num_ops=2, epochs=3, arch_start_epoch=1)
    first = common.run(callbacks=[checkpoints("first")], trainer_kwargs={"enable_checkpointing": True}, **kw)
    events = first.export_result().sub_spaces.removed
    ckpt = tmp_path / "first" / "epoch=1.ckpt"
    assert ckpt.exists()
    resumed = common.run(
        callbacks=[checkpoints("resumed")],
        trainer_kwargs={"enable_checkpointing": True},
        fit_kwargs={"ckpt_path": str(ckpt)},
        **kw,
    )
    subs = resumed.export_result().sub_spaces
    assert all(len(ops) == 2 for ops in subs.kept.values())
    for comp, removed in subs.removed.items():  # removals after epoch 2 (the checkpoint's) come from it
        assert [e.op for e in removed if e.epoch == 2] == [e.op for e in events[comp] if e.epoch == 2]
        assert [e.epoch for e in removed] == [2, 2, 3, 3]
