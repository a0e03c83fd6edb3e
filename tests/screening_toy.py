"""A toy screening problem whose ops' stand-alone quality is measured, not assumed.

The task: regress a fixed random "teacher" from 16x16 noise images. Two teachers, so that an op's
size and its quality can be told apart:

* ``deep``: two 5x5 convolutions with a ReLU between (a wide receptive field and a non-linearity
  are needed): the larger ops are the better ones alone, size order = quality order;
* ``linear``: one 3x3 convolution, which the stem and the read-out already express: ``skip`` at
  every position is the best network alone and every added non-linearity only gets in the way,
  so size order is the reverse of quality order. A screening that ranks by size fails here. The space: a
stem, three searched positions (component ``backbone``) over six pool ops, and a 1x1
read-out. An op's *stand-alone quality* is the held-out loss of the network with that op at
every position, trained alone with the same budget; screening should keep the ops that are
good alone, whatever the initial α.

Used by ``tests/test_screening_quality.py`` (3 seeds) and ``benchmarks/screening_readings.py``
(more seeds, every reading).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from nni.mutable import label_scope
from nni.nas.evaluator.pytorch import DataLoader, Lightning, LightningModule, Trainer
from nni.nas.experiment import NasExperiment
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from search_spaces.ops import build_op
from strategies import HitDetStrategy

logging.getLogger("nni").setLevel(logging.ERROR)

TOY_OPS = ["skip", "conv_k1", "sep_k3", "conv_k3", "conv_k5", "ir_k5_e3"]
CHANNELS, SIZE, DEPTH = 8, 16, 3


TEACHERS = ("deep", "linear")


def make_data(n: int, seed: int = 0, teacher: str = "deep") -> torch.utils.data.TensorDataset:
    """``n`` noise images and the teacher's output on them (the teacher is fixed by ``seed``)."""
    if teacher not in TEACHERS:
        raise ValueError(f"teacher: expected one of {TEACHERS}, got {teacher!r}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        if teacher == "deep":
            w1 = torch.randn(8, 3, 5, 5, generator=g) / 8
            w2 = torch.randn(1, 8, 5, 5, generator=g) / 6
            y = F.conv2d(F.relu(F.conv2d(x, w1, padding=2)), w2, padding=2)
        else:
            y = F.conv2d(x, torch.randn(1, 3, 3, 3, generator=g) / 4, padding=1)
    return torch.utils.data.TensorDataset(x, y)


def split(teacher: str, seed: int = 0) -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset]:
    """(train, held-out) of one teacher: 256 and 128 images."""
    x, y = make_data(384, seed=seed, teacher=teacher).tensors
    return torch.utils.data.TensorDataset(x[:256], y[:256]), torch.utils.data.TensorDataset(x[256:], y[256:])


def body(ops: Sequence[str] | None, choice: bool) -> nn.ModuleList:
    layers = nn.ModuleList()
    for i in range(DEPTH):
        if choice:
            with label_scope("backbone"):
                layers.append(LayerChoice({o: build_op(o, CHANNELS, CHANNELS, 1) for o in TOY_OPS}, label=f"b{i}"))
        else:
            assert ops is not None
            layers.append(build_op(ops[i], CHANNELS, CHANNELS, 1))
    return layers


class _Toy:
    """Stem, the three positions, a 1x1 read-out: one forward for the fixed net and the space."""

    def build(self, ops: Sequence[str] | None) -> None:
        self.stem = nn.Conv2d(3, CHANNELS, 3, padding=1)
        self.layers = body(ops, choice=ops is None)
        self.out = nn.Conv2d(CHANNELS, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.out(x)


class ToyNet(_Toy, nn.Module):
    def __init__(self, ops: Sequence[str]) -> None:
        nn.Module.__init__(self)
        self.build(ops)


class ToySpace(_Toy, ModelSpace):
    def __init__(self) -> None:
        ModelSpace.__init__(self)
        self.build(None)


class Regression(LightningModule):
    def __init__(self, lr: float, epochs: int) -> None:
        super().__init__()
        self.lr, self.epochs = lr, epochs

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.model(x), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=0.9)
        return [opt], [torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs)]


def standalone_losses(
    data: torch.utils.data.TensorDataset, held_out: torch.utils.data.TensorDataset,
    steps: int = 150, lr: float = 0.05, seed: int = 0,
) -> dict[str, float]:
    """Held-out MSE of the network with each op at every position, trained alone (lower is better)."""
    out = {}
    for op in TOY_OPS:
        torch.manual_seed(seed)
        net = ToyNet([op] * DEPTH)
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
        loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)
        done = 0
        while done < steps:
            for x, y in loader:
                opt.zero_grad()
                F.mse_loss(net(x), y).backward()
                opt.step()
                done += 1
                if done >= steps:
                    break
        net.eval()
        with torch.no_grad():
            x, y = held_out.tensors
            out[op] = float(F.mse_loss(net(x), y))
    return out


def screen(
    data: torch.utils.data.TensorDataset, seed: int, num_ops: int = 3, epochs: int = 5, **settings: Any
) -> tuple[HitDetStrategy, dict[str, float]]:
    """Screen the toy space to ``num_ops`` ops; returns the strategy and the initial α column norms."""
    pl.seed_everything(seed, verbose=False)
    space = ToySpace()
    trainer = Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    evaluator = Lightning(
        Regression(0.05, epochs), trainer, train_dataloaders=DataLoader(data, batch_size=16, shuffle=True)
    )
    settings.setdefault("arch_start_epoch", 1)
    settings.setdefault("screen_keep", ())  # the toy measures the ranking itself, not the keep rule
    settings.setdefault("arc_learning_rate", 0.05)
    strategy = HitDetStrategy("screen", num_ops=num_ops, log_heatmaps=False, **settings)
    initial: dict[str, float] = {}

    class Record(pl.Callback):
        def on_fit_start(self, trainer: Any, module: Any) -> None:
            module.prepare()
            probs = module.probs()
            comp = module.components["backbone"]
            norms = comp.matrix(probs).detach().pow(2).sum(0).sqrt()
            initial.update({col: float(n) for col, n in zip(comp.columns, norms, strict=True)})

    trainer.callbacks.append(Record())
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.run()
    experiment.stop()
    return strategy, initial


def ranks(values: dict[str, float], higher_is_better: bool) -> dict[str, float]:
    """Rank 1 = best; ties share the mean rank."""
    ordered = sorted(values, key=lambda k: values[k], reverse=higher_is_better)
    out: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and values[ordered[j + 1]] == values[ordered[i]]:
            j += 1
        for k in ordered[i : j + 1]:
            out[k] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: dict[str, float], b: dict[str, float]) -> float:
    """Spearman's rho between two rank dicts over the same keys (Pearson of the ranks)."""
    keys = sorted(a)
    xa = torch.tensor([a[k] for k in keys], dtype=torch.float64)
    xb = torch.tensor([b[k] for k in keys], dtype=torch.float64)
    xa, xb = xa - xa.mean(), xb - xb.mean()
    return float((xa * xb).sum() / (xa.norm() * xb.norm()))


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def final_scores(strategy: HitDetStrategy) -> dict[str, float]:
    """Every op's score: kept ops by their final score, removed ops by the score they left with,
    offset so that an op removed later always ranks above one removed earlier."""
    subs = strategy.export_result().sub_spaces
    assert subs is not None
    out: dict[str, float] = {}
    events = subs.removed["backbone"]
    for i, e in enumerate(events):
        out[e.op] = -len(events) + i  # removal order: earlier = worse
    for op, sc in subs.scores["backbone"].items():
        if op in subs.kept["backbone"]:
            out[op] = sc + 1.0
    return out
