"""NNI's own strategies on the trinity space: one short epoch each on a tiny synthetic detection batch.

The one-shot strategies (DARTS, GumbelDARTS, Proxyless, RandomOneShot) run through
``NasExperiment`` with NNI's Lightning evaluator, whose module sums the detector's loss dict;
multi-trial Random (two trials, sequential engine) with a functional evaluator. The exported
sample must convert to a valid architecture JSON whose detector has the parameters of the
space's fixed model. HOME is a temporary folder (tests/conftest.py), so
nothing is written to the real ~/nni-experiments.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from hitdet.architecture import Architecture, from_dict
from hitdet.builder import build_detector
from search_spaces import RetinaNetSpace, SpaceError, TrinitySpace
from tests.helpers import SETTINGS, TINY

nni = pytest.importorskip("nni")
from nni.nas import strategy  # noqa: E402
from nni.nas.evaluator import FunctionalEvaluator  # noqa: E402
from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer  # noqa: E402
from nni.nas.evaluator.pytorch.lightning import LightningModule  # noqa: E402
from nni.nas.experiment import NasExperiment, NasExperimentConfig  # noqa: E402
from nni.nas.space import model_context  # noqa: E402

# skip is a bare nn.Identity at stride-1 positions: every strategy must cope with it
OPS = {"backbone": ["ir_k3_e3", "skip", "sep_k3"], "neck": ["sep_k3", "skip"], "head": ["ir_k3_e1", "skip"]}


class SyntheticDetection(Dataset):
    """Two 64x80 random images with one box each: enough for one step of every loss."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(i))
        box = torch.tensor([[8.0 + 4 * i, 8.0, 40.0, 48.0]])
        return image, {"boxes": box, "labels": torch.tensor([1 + i % 2])}


def collate(batch: list) -> tuple:
    return tuple(zip(*batch, strict=True))


class SumOfLosses(LightningModule):
    """A minimal detection LightningModule: the loss is the sum of torchvision's loss dict."""

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        loss = sum(self.model(list(images), list(targets)).values())
        self.log("train_loss", loss, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        images, targets = batch
        self.model.train()  # torchvision detectors only return losses in training mode
        with torch.no_grad():
            loss = sum(self.model(list(images), list(targets)).values())
        self.log("val_loss", loss, batch_size=len(images))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    def on_validation_epoch_end(self) -> None:
        if nni.get_current_parameter() is not None and not self.trainer.sanity_checking:
            nni.report_intermediate_result(-float(self.trainer.callback_metrics["val_loss"]))

    def on_fit_end(self) -> None:
        metrics = self.trainer.callback_metrics
        if nni.get_current_parameter() is not None and "val_loss" in metrics:
            nni.report_final_result(-float(metrics["val_loss"]))


def evaluator(root: Path) -> Lightning:
    loader = DataLoader(SyntheticDetection(), batch_size=2, collate_fn=collate)
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    return Lightning(SumOfLosses(), trainer, train_dataloaders=loader, val_dataloaders=loader)


def space() -> TrinitySpace:
    return TrinitySpace(TINY, OPS, SETTINGS, input_size=(64, 96), num_rois=20)


def check_exported(sample: dict) -> None:
    """The exported sample is an architecture JSON whose detector is the space's fixed model."""
    arch = from_dict(Architecture.from_sample(sample, TINY, SETTINGS).to_dict(), "exported")
    assert arch.sample() == {label: sample[label] for label in TINY.labels()}
    with model_context(sample):
        fixed = space()
    built = build_detector(arch)
    assert sum(p.numel() for p in fixed.parameters()) == sum(p.numel() for p in built.parameters())


def assert_home_is_temporary() -> None:
    """NNI wrote its experiment folder under the temporary HOME of tests/conftest.py."""
    home = Path(os.environ["HOME"])
    assert home.name.startswith("hitdet-test-home-")
    assert (home / "nni-experiments").is_dir()


@pytest.mark.parametrize(
    "make_strategy",
    [strategy.DARTS, strategy.GumbelDARTS, strategy.Proxyless, strategy.RandomOneShot],
    ids=["DARTS", "GumbelDARTS", "Proxyless", "RandomOneShot"],
)
def test_one_shot_strategy_runs_one_epoch_and_exports_an_architecture(make_strategy, tmp_path: Path) -> None:
    exp = NasExperiment(space(), evaluator(tmp_path), make_strategy())
    try:
        exp.run()
        (sample,) = exp.export_top_models(formatter="dict")
    finally:
        exp.stop()  # or NNI stops it at exit, logging to closed streams
    check_exported(sample)
    assert_home_is_temporary()


def train_one_trial(model: torch.nn.Module, steps: int = 1) -> None:
    """A multi-trial evaluator: fresh optimiser per trial, a few steps, report minus the loss."""
    images, targets = collate([SyntheticDetection()[i] for i in range(2)])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(steps):
        loss = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    nni.report_final_result(-float(loss))


def test_multi_trial_random_two_trials() -> None:
    # The sequential engine runs the trials in this process (no NNI manager, no web UI). It reuses
    # one evaluator object for every trial, and a Lightning evaluator's Trainer then stops at
    # once ("max_epochs reached") from the second trial on: use a FunctionalEvaluator (or the
    # training-service engine, one process per trial) for multi-trial search.
    config = NasExperimentConfig("sequential", "simplified")  # each trial rebuilds the space in model_context
    config.max_trial_number = 2
    random = strategy.Random()
    exp = NasExperiment(space(), FunctionalEvaluator(train_one_trial), random, config)
    try:
        exp.run()
        trials = list(random.list_models(sort=False))
        (sample,) = exp.export_top_models(formatter="dict")
    finally:
        exp.stop()
    assert len(trials) == 2
    assert all(t.metric is not None for t in trials)  # every trial trained and reported
    assert sample == max(trials, key=lambda t: t.metric).sample
    check_exported(sample)
    assert_home_is_temporary()


def test_darts_on_the_one_stage_retinanet_space(tmp_path: Path) -> None:
    structure = replace(TINY, head_blocks=4)
    exp = NasExperiment(
        RetinaNetSpace(structure, OPS, SETTINGS, input_size=(64, 96)), evaluator(tmp_path), strategy.DARTS()
    )
    try:
        exp.run()
        (sample,) = exp.export_top_models(formatter="dict")
    finally:
        exp.stop()
    arch = from_dict(Architecture.from_sample(sample, structure, SETTINGS, detector_type="retinanet").to_dict(), "x")
    with model_context(sample):
        fixed = RetinaNetSpace(structure, OPS, SETTINGS, input_size=(64, 96))
    assert sum(p.numel() for p in fixed.parameters()) == sum(p.numel() for p in build_detector(arch).parameters())


def test_flops_profiler_on_the_detector_is_a_clear_error() -> None:
    from nni.nas.profiler.pytorch.flops import FlopsProfiler

    detector = space().eval()
    with pytest.raises(SpaceError, match="candidate_macs"):
        FlopsProfiler(detector, [torch.rand(3, 64, 64)])
