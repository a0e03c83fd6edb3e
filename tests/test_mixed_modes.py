"""The mixed-op modes of the supernet: ``full`` (DARTS's sum), ``recompute`` and ``sample``.

``recompute`` must be the same computation as ``full`` (values, gradients of the input, of the
candidates' weights and of alpha, BatchNorm running statistics, dropout masks), only with less
memory; ``sample`` runs at most k candidates per step and still trains alpha.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import pytest
import pytorch_lightning as pl
import test_strategy as common
import torch
from nni.mutable import label_scope
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from search_spaces.ops import build_op
from strategies import HitDetStrategy, SearchSettings
from strategies.mixed import HitDetMixedLayer

logging.getLogger("nni").setLevel(logging.ERROR)

OPS = ["conv_k3", "ir_k3_e3", "sep_k3", "skip"]  # BatchNorm in all but the identity 'skip'


class OneLayer(ModelSpace):
    """One searched position: pool ops with BatchNorm, the identity, and an op with dropout."""

    def __init__(self, ops: list[str] = OPS, dropout: bool = True) -> None:
        super().__init__()
        paths: dict[str, nn.Module] = {o: build_op(o, 8, 8, 1) for o in ops}
        if dropout:
            paths["dropout"] = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.Dropout(0.5))
        with label_scope("backbone"):
            self.choice = LayerChoice(paths, label="b0")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.choice(x)


def supernet(mode: str, seed: int = 0, **kw: Any) -> tuple[ModelSpace, HitDetMixedLayer]:
    """The one-layer supernet in ``mode``, with the same weights and random alphas for a seed."""
    torch.manual_seed(seed)
    space = OneLayer(**kw)
    HitDetStrategy(mixed_op=mode, **({"sample_k": 2} if mode == "sample" else {})).mutate_model(space)
    layer = next(m for m in space.modules() if isinstance(m, HitDetMixedLayer))
    with torch.no_grad():
        layer._arch_alpha.copy_(torch.randn(len(layer.names)))
    return space, layer


def loss_of(y: torch.Tensor) -> torch.Tensor:
    """A non-linear loss, so that the gradient at the output depends on the output."""
    target = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    return (torch.tanh(y) * target).sum() + (y**2).mean()


def one_step(mode: str, *, freeze_weights: bool = False, seed: int = 0) -> dict[str, Any]:
    space, layer = supernet(mode)
    if freeze_weights:  # the architecture step: no weight gradients
        for n, p in space.named_parameters():
            if "_arch_alpha" not in n:
                p.requires_grad_(False)
    torch.manual_seed(seed)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    y = space(x)
    loss_of(y).backward()
    return {
        "y": y.detach(),
        "x": x.grad,
        "alpha": layer._arch_alpha.grad.clone(),
        "params": {n: p.grad for n, p in space.named_parameters() if "_arch_alpha" not in n},
        "buffers": {n: b.clone() for n, b in space.named_buffers()},
        "rng_after": torch.rand(3),  # the recompute leaves the RNG where the forward left it
    }


@pytest.mark.parametrize("freeze_weights", [False, True])
def test_recompute_gives_the_gradients_and_statistics_of_full(freeze_weights: bool) -> None:
    full, rec = one_step("full", freeze_weights=freeze_weights), one_step("recompute", freeze_weights=freeze_weights)
    torch.testing.assert_close(rec["y"], full["y"])
    torch.testing.assert_close(rec["x"], full["x"])
    torch.testing.assert_close(rec["alpha"], full["alpha"])
    assert full["alpha"].abs().min() > 0  # every op gets a gradient: the comparison is not of zeros
    for n, g in full["params"].items():
        if freeze_weights:
            assert g is None and rec["params"][n] is None, n
        else:
            assert g is not None and g.abs().sum() > 0, n
            torch.testing.assert_close(rec["params"][n], g, msg=n)
    # BatchNorm running statistics moved once, as in full (not twice: the recompute restores them)
    bn_stats = [n for n in full["buffers"] if "running_mean" in n or "num_batches_tracked" in n]
    assert bn_stats and all(int(full["buffers"][n].max()) == 1 for n in bn_stats if "num_batches" in n)
    for n, b in full["buffers"].items():
        torch.testing.assert_close(rec["buffers"][n], b, msg=n)
    torch.testing.assert_close(rec["rng_after"], full["rng_after"])


def test_recompute_uses_the_forward_dropout_mask() -> None:
    """The dropout op alone: its weight gradient is wrong if the recompute drew another mask."""
    full, rec = one_step("full"), one_step("recompute")
    g = full["params"]["choice.dropout.0.weight"]
    torch.testing.assert_close(rec["params"]["choice.dropout.0.weight"], g)
    # and the mask matters: another seed for the forward gives another gradient
    other = one_step("full", seed=1)
    assert not torch.allclose(other["params"]["choice.dropout.0.weight"], g)


def test_recompute_keeps_fewer_tensors_for_the_backward_pass() -> None:
    """Saved activations of one layer: full keeps every candidate's, recompute only the input and weights."""
    sizes = {}
    for mode in ("full", "recompute"):
        space, _ = supernet(mode, dropout=False)
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        x = torch.randn(2, 8, 16, 16, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            space(x)
        sizes[mode] = total
    x_bytes = 2 * 8 * 16 * 16 * 4
    assert sizes["recompute"] < 2 * x_bytes  # x, the weights (and nothing of the candidates)
    assert sizes["full"] > 10 * x_bytes


def _count_calls(layer: HitDetMixedLayer) -> dict[str, int]:
    calls = {str(n): 0 for n in layer.names}
    for n, m in layer.candidate_modules():

        def hook(*_: Any, name: str = str(n)) -> None:
            calls[name] += 1

        m.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("mode", ["full", "recompute", "sample"])
def test_removed_ops_never_run(mode: str) -> None:
    space, layer = supernet(mode)
    removed = layer.drop("ir_k3_e3")
    assert removed  # its parameters are handed back to the caller
    modules = {str(n): m for n, m in layer.named_children()}
    assert "ir_k3_e3" not in modules
    calls = _count_calls(layer)
    for _ in range(5):
        y = space(torch.randn(2, 8, 6, 6, requires_grad=True))
        loss_of(y).backward()
    assert calls["ir_k3_e3"] == 0
    assert layer._arch_alpha.grad[layer.names.index("ir_k3_e3")] == 0
    assert sum(calls.values()) > 0


def test_recompute_runs_each_active_candidate_twice() -> None:
    space, layer = supernet("recompute")
    calls = _count_calls(layer)
    loss_of(space(torch.randn(2, 8, 6, 6, requires_grad=True))).backward()
    assert calls == {str(n): 2 for n in layer.names}


def test_sample_runs_at_most_k_candidates_and_alpha_gets_gradients() -> None:
    space, layer = supernet("sample")
    assert layer.sample_k == 2
    calls = _count_calls(layer)
    distinct = []
    for _ in range(20):
        before = dict(calls)
        layer._arch_alpha.grad = None
        loss_of(space(torch.randn(2, 8, 6, 6))).backward()
        ran = [n for n in calls if calls[n] > before[n]]
        assert all(calls[n] - before[n] == 1 for n in ran)
        distinct.append(len(ran))
        grad = layer._arch_alpha.grad
        assert grad is not None and bool(torch.isfinite(grad).all()) and grad.abs().sum() > 0
    assert 1 <= min(distinct) and max(distinct) <= 2
    assert sum(v > 0 for v in calls.values()) > 2  # over the steps, more than 2 ops were drawn


def test_sample_is_unbiased_for_a_loss_linear_in_the_output() -> None:
    """Mean of the sampled output and alpha gradient over many draws = DARTS's (module docstring).

    With a loss linear in the layer's output the gradient at the output is fixed, so the estimator
    is unbiased; tolerance: 5 standard errors of the mean.
    """
    space, layer = supernet("sample", dropout=False)
    space.eval()  # BatchNorm on running statistics: candidate outputs do not depend on the draw
    layer.set_mixed_op("full")
    x = torch.randn(2, 8, 6, 6)
    target = torch.linspace(-1, 1, 2 * 8 * 6 * 6).reshape(2, 8, 6, 6)
    layer._arch_alpha.grad = None
    exact_y = space(x)
    (exact_y * target).sum().backward()
    exact_grad = layer._arch_alpha.grad.clone()
    layer.set_mixed_op("sample", 2)
    layer.training = True  # sampling is on in training mode only; the ops stay in eval mode
    ys, grads = [], []
    for _ in range(600):
        layer._arch_alpha.grad = None
        y = space(x)
        (y * target).sum().backward()
        ys.append(y.detach().sum())
        grads.append(layer._arch_alpha.grad.clone())
    g = torch.stack(grads)
    se = g.std(0) / math.sqrt(len(grads))
    assert ((g.mean(0) - exact_grad).abs() <= 5 * se + 1e-6).all(), (g.mean(0), exact_grad, se)
    ysum = torch.stack(ys)
    assert abs(float(ysum.mean() - exact_y.detach().sum())) <= 5 * float(ysum.std()) / math.sqrt(len(ys))


def test_settings_validate_the_mode() -> None:
    assert SearchSettings().mixed_op == "full" and SearchSettings().sample_k == 2
    with pytest.raises(ValueError, match="mixed_op"):
        SearchSettings(mixed_op="half")
    with pytest.raises(ValueError, match="sample_k"):
        SearchSettings(sample_k=0)
    s = HitDetStrategy.from_settings({"mixed_op": "sample", "sample_k": 3}).settings
    assert (s.mixed_op, s.sample_k) == ("sample", 3)
    assert s.to_dict()["mixed_op"] == "sample"


# -- whole strategy runs on the tiny pool space of test_strategy ------------------------------


class AlphaTrace(pl.Callback):
    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self.steps.append(torch.cat([g[0]._arch_alpha.detach().clone() for g in pl_module.layers.values()]))


def test_strategy_recompute_follows_the_alpha_trajectory_of_full() -> None:
    traces = {}
    for mode in ("full", "recompute"):
        trace = AlphaTrace()
        common.run(epochs=2, arch_start_epoch=0, callbacks=[trace], mixed_op=mode)
        traces[mode] = torch.stack(trace.steps)
    assert traces["full"].shape[0] == 8  # 2 epochs x 4 steps (32 samples per half, batch 8)
    assert (traces["full"][-1] - traces["full"][0]).abs().max() > 1e-3  # alpha did move
    torch.testing.assert_close(traces["recompute"], traces["full"], rtol=1e-4, atol=1e-5)


def test_strategy_sample_trains_alpha() -> None:
    trace = AlphaTrace()
    strategy = common.run(epochs=1, arch_start_epoch=0, callbacks=[trace], mixed_op="sample", sample_k=2)
    steps = torch.stack(trace.steps)
    assert bool(torch.isfinite(steps).all())
    moved = (steps[-1] - steps[0]).abs()
    assert (moved > 1e-4).float().mean() > 0.5  # most alphas moved, not only those of drawn ops
    assert strategy.export_result().metadata["settings"]["mixed_op"] == "sample"


def test_the_mode_is_a_setting_not_checkpoint_state(tmp_path: Any) -> None:
    """A recompute run's checkpoint holds what a full run's does; resuming in either mode ends alike."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def checkpoints(folder: str) -> ModelCheckpoint:
        return ModelCheckpoint(dirpath=str(tmp_path / folder), save_top_k=-1, every_n_epochs=1, filename="{epoch}")

    kw: dict[str, Any] = dict(mode="screen", num_ops=3, epochs=3, arch_start_epoch=1)
    ckpts = {}
    for mode in ("full", "recompute"):
        common.run(callbacks=[checkpoints(mode)], trainer_kwargs={"enable_checkpointing": True}, mixed_op=mode, **kw)
        ckpts[mode] = torch.load(tmp_path / mode / "epoch=1.ckpt", weights_only=False)
    assert ckpts["recompute"]["state_dict"].keys() == ckpts["full"]["state_dict"].keys()
    assert ckpts["recompute"]["hitdet_strategy"].keys() == ckpts["full"]["hitdet_strategy"].keys()
    resumed = {}
    for mode in ("full", "recompute"):
        resumed[mode] = common.run(
            callbacks=[checkpoints(f"resumed-{mode}")],
            trainer_kwargs={"enable_checkpointing": True},
            fit_kwargs={"ckpt_path": str(tmp_path / "full" / "epoch=1.ckpt")},
            mixed_op=mode,
            **kw,
        ).export_result()
    a, b = resumed["full"], resumed["recompute"]
    assert b.sample == a.sample and b.sub_spaces.kept == a.sub_spaces.kept
    assert [e.op for es in b.sub_spaces.removed.values() for e in es] == [
        e.op for es in a.sub_spaces.removed.values() for e in es
    ]
    for label, probs in a.metadata["alpha_probabilities"].items():
        for op, p in probs.items():
            assert b.metadata["alpha_probabilities"][label][op] == pytest.approx(p, abs=1e-5), (label, op)
    assert b.metadata["settings"]["mixed_op"] == "recompute"


def test_deepcopy_keeps_the_mode() -> None:
    _, layer = supernet("recompute")
    assert copy.deepcopy(layer).mixed_op == "recompute"
