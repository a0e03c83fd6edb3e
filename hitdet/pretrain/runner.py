"""One pretraining run: data, model, Lightning trainer, run folder, weights file.

Run folder ``OUT``:

- ``backbone.pt``: the pretrained backbone (:mod:`hitdet.weights.backbone`), what
  ``hitdet train|screen|search --backbone-weights`` read;
- ``pretrain.json``: target, config, classes, final metrics, load instructions;
- ``config.yaml``: the resolved config (``--resume`` reads it, and refuses other values);
- ``run.json``: target, data folder, classes, resumes and recoveries;
- ``checkpoints/``: Lightning checkpoints, one per epoch (the newest ``keep_checkpoints``)
  and ``last.ckpt`` for ``--resume``;
- ``tensorboard/``: loss, top-1/top-5 and learning rate.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from hitdet.errors import UserError
from hitdet.io import write_json_atomic
from hitdet.pretrain.config import PretrainConfig
from hitdet.pretrain.data import load_classification_data
from hitdet.pretrain.model import BackboneClassifier, PretrainTarget
from hitdet.runs import CONFIG_FILE, RUN_FILE, Run, read_run
from hitdet.weights.backbone import load_backbone_weights, save_backbone_weights

WEIGHTS_NAME = "backbone.pt"
SUMMARY_NAME = "pretrain.json"
_OWN = (WEIGHTS_NAME, SUMMARY_NAME, RUN_FILE, CONFIG_FILE, "checkpoints", "tensorboard", "log.txt")
RESUME_MAY_CHANGE = ("epochs", "max_steps")  # --resume --epochs N extends a run
RECOVERY_KEYS = ("lr",)  # may change on --resume only after a divergence (exit 3)


def check_same_target(out: Path, target: PretrainTarget) -> None:
    """A ``--resume`` must continue the target the run pretrained (its kind, structure and candidates)."""
    before = read_run(out).get("target", {})
    if before:
        now = json.loads(json.dumps(target.describe()))
        for key in ("kind", "structure", "candidates"):
            if before.get(key) != now.get(key):
                raise UserError(f"{out}: --resume with another target than the run's ({key} differs)")


def run_pretraining(
    target: PretrainTarget,
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: PretrainConfig,
    *,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    resume: bool = False,
    force: bool = False,
    init_weights: str | os.PathLike[str] | None = None,
    progress: bool = True,
    inputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pretrain ``target`` as a classifier on ``data_dir`` into the run folder ``out_dir`` (``hitdet pretrain``).

    The run folder's lifecycle is :class:`hitdet.runs.Run`'s, as for ``hitdet train``: ``--force`` clears
    only the names this command writes, a ``--resume`` continues the same target with the same config
    (``epochs`` and ``max_steps`` may change, ``lr`` after a divergence).

    Args:
        target: the backbone to pretrain (:func:`~hitdet.pretrain.model.architecture_target` or
            :func:`~hitdet.pretrain.model.supernet_target`).
        data_dir: a classification folder in ImageFolder layout (``train/CLASS/*``, ``val/CLASS/*``).
        out_dir: the run folder.
        config: the pretraining config (:func:`hitdet.pretrain.config.load_config`).
        accelerator, devices, strategy, num_nodes: Lightning's (several nodes: ``auto`` becomes ``ddp``).
        resume, force: continue the run in ``out_dir`` / replace it.
        init_weights: a backbone weights file to start from.
        progress: show Lightning's progress bar.
        inputs: further files the caller read, by flag (``{"--arch": path}``): ``out`` may not overlap them.

    Returns:
        The summary written to ``pretrain.json`` (weights path, target, metrics, how to use the weights).
    """
    import pytorch_lightning as pl

    from hitdet.pretrain.module import ClassificationModule

    if strategy == "auto" and num_nodes > 1:
        strategy = "ddp"
    run = Run(out_dir, resume=resume, force=force, config=config.to_dict(), may_change=RESUME_MAY_CHANGE,
              recovery=RECOVERY_KEYS, own=_OWN, accelerator=accelerator, devices=devices, strategy=strategy,
              num_nodes=num_nodes, precision=config.precision, command="pretrain",
              inputs={"--data": data_dir, "--init-weights": init_weights, **(inputs or {})})
    if resume:
        check_same_target(run.out, target)
    data = load_classification_data(data_dir, config)
    pl.seed_everything(config.seed, workers=True, verbose=False)

    backbone = target.build_backbone(uniform=True)
    init_report = None
    if init_weights is not None:
        init_report = load_backbone_weights(backbone, init_weights, choices=target.choices)
    model = BackboneClassifier(backbone, len(data.classes))
    module = ClassificationModule(model, config)

    loader_args: dict[str, Any] = {
        "batch_size": config.batch_size,
        "num_workers": config.num_workers,
        "pin_memory": accelerator != "cpu" and torch.cuda.is_available(),
        "persistent_workers": config.num_workers > 0,
    }
    train_loader = DataLoader(data.train, shuffle=True, drop_last=len(data.train) > config.batch_size, **loader_args)
    val_loader = DataLoader(data.val, shuffle=False, **loader_args) if data.val is not None else None

    if resume:  # the checkpoint fits the backbone: checked before anything is written
        run.check_checkpoint(module, what="the run's backbone (--arch/--space, --width)")
    with run:
        if init_report is not None:
            run.say(init_report.summary())
        run.record(target=target.describe(), config=config.to_dict(), data=str(data.root), classes=data.classes)
        return _fit(run, target, config, data, module, model, train_loader, val_loader, init_report,
                    progress=progress)


def _fit(
    run: Run, target: PretrainTarget, config: PretrainConfig, data: Any, module: Any, model: BackboneClassifier,
    train_loader: DataLoader, val_loader: DataLoader | None, init_report: Any, *, progress: bool,
) -> dict[str, Any]:
    from pytorch_lightning.callbacks import LearningRateMonitor

    out = run.out
    ckpt = run.last_checkpoint if run.resume else None
    checkpoint = run.checkpoints(
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        save_last=True,
        save_top_k=config.keep_checkpoints,
        monitor="step" if config.keep_checkpoints != -1 else None,
        mode="max",
    )
    trainer = run.trainer(
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="step")],
        progress=progress,
        max_epochs=config.epochs,
        max_steps=config.max_steps,
        sync_batchnorm=config.sync_batchnorm,
        log_every_n_steps=config.log_every_n_steps,
        log_every=config.log_every_n_steps,
        deterministic=False,
    )
    start = time.time()
    try:
        with run.fitting():
            trainer.fit(module, train_loader, val_loader, ckpt_path=str(ckpt) if ckpt else None)
    except RuntimeError as exc:
        if ckpt is not None and "Error(s) in loading state_dict" in str(exc):
            raise UserError(f"{ckpt}: the checkpoint does not fit this target: {str(exc).splitlines()[0]}") from None
        raise
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor)}
    summary: dict[str, Any] = {
        "format": "hitdet-pretrain",
        "version": 1,
        "weights": str(out / WEIGHTS_NAME),
        "target": target.describe(),
        "config": config.to_dict(),
        "data": str(data.root),
        "classes": data.classes,
        "epochs_done": trainer.current_epoch,
        "steps": trainer.global_step,
        "metrics": metrics,
        "seconds": round(time.time() - start, 1),
        "init_weights": init_report.to_dict() if init_report else None,
        "use": (
            "hitdet train ARCH --backbone-weights BACKBONE.pt"
            if target.kind == "architecture"
            else "hitdet screen|search ... --backbone-weights BACKBONE.pt (same space, depth and width)"
        ),
    }
    if trainer.is_global_zero:
        meta = {
            **target.describe(),
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "num_classes": len(data.classes),
            "image_size": config.image_size,
            "metrics": metrics,
        }
        save_backbone_weights(out / WEIGHTS_NAME, model.backbone, meta)
        write_json_atomic(out / SUMMARY_NAME, summary)
    return summary
