"""DetectionModule: NNI-compatible, one SGD optimiser with the schedule, loss sum, validation mAP."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from hitdet import build_detector, load_architecture
from hitdet.data import SynthSpec, load_split, write_synthetic
from hitdet.evaluation import coco_evaluate, predict
from hitdet.training import DetectionModule, load_config, make_eval_loader, make_train_loader, warmup_step_factor
from hitdet.training.runner import prepare_architecture

OVERRIDES = ["detector.min_size=64", "detector.max_size=80", "eval_batch_size=2", "batch_size=4",
             "warmup_iters=3", "epochs=2", "milestones=[1]"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("mod") / "d", SynthSpec(num_train=8, num_val=4, seed=1))


@pytest.fixture()
def tiny(data: Path):
    cfg = load_config("synth-cpu", OVERRIDES)
    train_ds = load_split(data, "train", train=True, hflip_prob=cfg.hflip_prob)
    arch = prepare_architecture(load_architecture("hit-detector"), train_ds.categories(), cfg)
    torch.manual_seed(0)
    return cfg, arch, train_ds, load_split(data, "val")


def test_nni_module_with_model_or_set_model(tiny) -> None:
    from nni.nas.evaluator.pytorch.lightning import LightningModule

    cfg, arch, _, _ = tiny
    model = build_detector(arch)
    module = DetectionModule(config=cfg)
    assert isinstance(module, LightningModule) and isinstance(module, pl.LightningModule)
    with pytest.raises(RuntimeError, match="Model is not set"):
        module.model  # noqa: B018
    module.set_model(model)
    assert module.model is model
    assert DetectionModule(model, cfg.to_dict()).model is model
    assert arch.settings.num_classes == 5 and arch.structure.neck_channels == 32


def test_one_sgd_optimiser_with_warmup_schedule(tiny) -> None:
    cfg, arch, _, _ = tiny
    module = DetectionModule(build_detector(arch), cfg)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 1e-4
    assert group["initial_lr"] == pytest.approx(cfg.lr)
    assert group["lr"] == pytest.approx(cfg.lr * cfg.warmup_ratio)
    assert sched["interval"] == "step" and isinstance(sched["scheduler"], torch.optim.lr_scheduler.LambdaLR)
    n_params = sum(1 for p in module.model.parameters() if p.requires_grad)
    assert len(group["params"]) == n_params
    paper = DetectionModule(build_detector(arch), load_config(None, ["batch_size=4"])).configure_optimizers()
    assert paper["optimizer"].param_groups[0]["initial_lr"] == pytest.approx(0.04 * 4 / 32)


def test_training_step_returns_the_sum_of_the_loss_dict(tiny) -> None:
    cfg, arch, train_ds, _ = tiny
    model = build_detector(arch).train()
    images, targets = next(iter(make_train_loader(train_ds, 4)))
    torch.manual_seed(3)
    expected = model(images, targets)
    assert set(expected) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    module = DetectionModule(model, cfg)
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        loss = module.training_step((images, targets), 0)
    assert loss.item() == pytest.approx(sum(v.item() for v in expected.values()), rel=1e-6)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_fit_logs_losses_lr_and_validation_map_that_matches_independent_eval(tiny, tmp_path: Path) -> None:
    cfg, arch, train_ds, val_ds = tiny
    module = DetectionModule(build_detector(arch), cfg)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=str(tmp_path))
    trainer.fit(module, make_train_loader(train_ds, cfg.batch_size), make_eval_loader(val_ds, 1))
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/loss_classifier", "val/AP", "val/AP50", "val/AR100"):
        assert key in metrics, key
    # 2 epochs x 2 steps: warm-up (3 steps) then one step of the schedule (epoch 1).
    factor = warmup_step_factor(2, [1], cfg.gamma, 3, cfg.warmup_ratio)(4)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(cfg.lr * factor)
    independent = coco_evaluate(val_ds.coco, predict(module.model, val_ds, batch_size=1))
    assert metrics["val/AP"].item() == pytest.approx(independent["AP"], abs=1e-6)
    assert module.last_metrics["AP50"] == pytest.approx(independent["AP50"], abs=1e-6)


def test_gradients_are_clipped_to_the_config_norm(tiny, tmp_path: Path) -> None:
    cfg, arch, train_ds, _ = tiny
    cfg = dataclasses.replace(cfg, grad_clip_norm=1e-3, lr=1e-9)
    norms = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # grads kept
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Spy()], default_root_dir=str(tmp_path))
    trainer.fit(DetectionModule(build_detector(arch), cfg), make_train_loader(train_ds, 4))
    assert norms and norms[0] == pytest.approx(1e-3, rel=1e-3)


def test_prepare_architecture_half_depth_width_and_detector_overrides() -> None:
    from hitdet.training.runner import architecture_categories, half_depth_architecture

    preset = load_architecture("hit-detector")
    half = half_depth_architecture(preset)
    assert [len(s) for s in half.structure.stages] == [2, 2, 4, 2]
    assert half.choices["backbone/s3_b1"] == preset.choices["backbone/s3_b2"]  # every other block, in order
    assert half.choices["backbone/s3_b2"] == preset.choices["backbone/s3_b4"]
    assert [s.out_channels for s in half.structure.stages[2]] == [184, 184, 256, 256]
    cats = [{"id": 4, "name": "a"}, {"id": 8, "name": "b"}]
    cfg = load_config(None, ["half_depth=true", "width=0.25", "detector.box_batch_size_per_image=16"])
    arch = prepare_architecture(preset, cats, cfg)
    assert arch.settings.num_classes == 3 and arch.settings.box_batch_size_per_image == 16
    assert arch.structure.neck_channels == 64 and [len(s) for s in arch.structure.stages] == [2, 2, 4, 2]
    assert architecture_categories(arch) == [4, 8]
    build_detector(arch)  # builds
