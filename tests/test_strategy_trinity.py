"""HitDetStrategy on a tiny trinity space (torchvision Faster R-CNN): search, export, hand-over."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from nni.nas.evaluator.pytorch import DataLoader, Lightning, LightningModule, Trainer
from nni.nas.experiment import NasExperiment

from search_spaces import TrinitySpace
from strategies import HitDetStrategy
from tests.helpers import SETTINGS, TINY

OPS = ["ir_k3_e1", "conv_k3", "sep_k3", "skip"]


class Detection(LightningModule):
    """The summed torchvision loss dict, SGD momentum 0.9 (what DetectionModule does)."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        return sum(self.model(list(images), list(targets)).values())

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)


class Boxes(torch.utils.data.Dataset):
    def __init__(self, n: int = 8, size: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        box = torch.tensor([[8.0 + i, 8.0, 40.0 + i, 48.0]])
        return self.images[i], {"boxes": box, "labels": torch.tensor([1 + i % 2])}


def square_settings() -> Any:
    """The tiny test settings at square 64-px images, with anchors to match."""
    return replace(SETTINGS, max_size=64, anchor_base=8, rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000)


def collate(batch: list[Any]) -> Any:
    return tuple(zip(*batch, strict=True))


def test_tiny_trinity_search_exports_an_architecture() -> None:
    from hitdet.architecture import Architecture

    pl.seed_everything(0, verbose=False)
    structure, settings = TINY, square_settings()
    space = TrinitySpace(structure, OPS, settings, input_size=(64, 64), num_rois=32)
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=3,
    )
    evaluator = Lightning(
        Detection(), trainer, train_dataloaders=DataLoader(Boxes(), batch_size=2, shuffle=True, collate_fn=collate)
    )
    strategy = HitDetStrategy(arch_start_epoch=0, penalty_lambda=0.01)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.run()
    experiment.stop()
    result = strategy.export_result()
    module = strategy.oneshot_module
    assert set(module.components) == {"backbone", "neck", "head"}
    assert result.metadata["macs"]["source"] == "space"
    assert set(result.sample) == set(structure.labels())
    assert all(op in OPS for op in result.sample.values())
    arch = Architecture.from_sample(result.sample, structure, settings, metadata=result.metadata)
    doc = json.loads(json.dumps(arch.to_dict()))
    assert doc["metadata"]["mode"] == "search"
    assert doc["metadata"]["macs"]["exact"] > 0
    # the α optimiser holds the α in module order, the same in every process, so that its saved
    # state resumes onto the right α (NNI's own order follows memory addresses)
    in_module_order = [id(group[0]._arch_alpha) for group in module.layers.values()]
    assert len(in_module_order) == len(structure.labels())
    assert [id(p) for p in module.arch_parameters()] == in_module_order
    arch_opt = [o for o in trainer.optimizers if getattr(o, "is_arch_optimizer", False)]
    assert [[id(p) for p in o.param_groups[0]["params"]] for o in arch_opt] == [in_module_order]


def test_measured_costs_on_a_detector_match_the_analytic_table() -> None:
    """Without ``candidate_macs`` the MACs are measured on the first batch: 2 images, 2 x 16 RoIs."""

    class NoTable(TrinitySpace):
        candidate_macs = None

    pl.seed_everything(0, verbose=False)
    structure, settings = TINY, square_settings()
    space = NoTable(structure, OPS, settings, input_size=(64, 64), num_rois=16)
    table = TrinitySpace.candidate_macs(space)
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=1,
    )
    loader = DataLoader(Boxes(), batch_size=2, shuffle=True, collate_fn=collate)
    evaluator = Lightning(Detection(), trainer, train_dataloaders=loader)
    strategy = HitDetStrategy(arch_start_epoch=0)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.run()
    experiment.stop()
    module = strategy.oneshot_module
    assert module.costs.source == "measured"
    for label, group in module.layers.items():
        measured = dict(zip(group[0].names, module.costs.macs[label].tolist(), strict=True))
        for op, macs in table[label].items():
            assert measured[op] == pytest.approx(2 * macs, rel=1e-6), (label, op)
