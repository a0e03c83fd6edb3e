"""One pretraining run: data, model, Lightning trainer, run folder, weights file.

Run folder ``OUT``:

- ``backbone.pt``: the pretrained backbone (:mod:`hitdet.pretrain.weights`), what
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
from hitdet.io import write_json_atomic, write_yaml_atomic
from hitdet.pretrain.config import PretrainConfig
from hitdet.pretrain.data import load_classification_data
from hitdet.pretrain.model import BackboneClassifier, PretrainTarget
from hitdet.pretrain.weights import load_backbone_weights, save_backbone_weights
from hitdet.runs import (
    RunLock,
    build_trainer,
    check_devices,
    check_out,
    check_resume,
    check_resume_config,
    checkpoint_callback,
    fitting,
    is_launched_child,
    prepare,
    read_run,
    update_run,
)

WEIGHTS_NAME = "backbone.pt"
SUMMARY_NAME = "pretrain.json"
RUN_NAME = "run.json"
CONFIG_NAME = "config.yaml"
_OWN = (WEIGHTS_NAME, SUMMARY_NAME, RUN_NAME, CONFIG_NAME, "checkpoints", "tensorboard")
RESUME_MAY_CHANGE = ("epochs", "max_steps")  # --resume --epochs N extends a run
RECOVERY_KEYS = ("lr",)  # may change on --resume only after a divergence (exit 3)


def read_yaml_dict(path: Path) -> dict[str, Any] | None:
    """The mapping in a run's YAML file, or None when it has none (a run from before config.yaml)."""
    from hitdet.config import read_yaml

    try:
        data = read_yaml(path)
    except UserError:
        return None
    return data if isinstance(data, dict) else None


def prepare_run_folder(out: Path, target: PretrainTarget, *, resume: bool, force: bool) -> Path | None:
    """Check the run folder (nothing written); returns the checkpoint to resume from, if any.

    ``--force`` clears the old run later (:func:`hitdet.runs.prepare`, only the names in ``_OWN``),
    after everything else validated. A ``--resume`` must continue the same target, and (checked
    by :func:`run_pretraining`) with the same config: only ``epochs`` and ``max_steps`` may change,
    ``lr`` after a divergence, as for ``hitdet train --resume``.
    """
    check_out(out, resume=resume, force=force)
    if not resume:
        return None
    if not (out / "checkpoints" / "last.ckpt").is_file():
        raise UserError(f"{out}: nothing to resume (no checkpoints/last.ckpt)")
    before = read_run(out).get("target", {})
    if before:
        now = json.loads(json.dumps(target.describe()))
        for key in ("kind", "structure", "candidates"):
            if before.get(key) != now.get(key):
                raise UserError(f"{out}: --resume with another target than the run's ({key} differs)")
    return check_resume(out)


def run_pretraining(
    target: PretrainTarget,
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: PretrainConfig,
    *,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    resume: bool = False,
    force: bool = False,
    init_weights: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain ``target`` as a classifier on ``data_dir``; writes ``out_dir/backbone.pt``; returns the summary."""
    import pytorch_lightning as pl

    from hitdet.pretrain.module import ClassificationModule

    out = Path(out_dir)
    ckpt = prepare_run_folder(out, target, resume=resume, force=force)
    recovery = (check_resume_config(out, config.to_dict(), may_change=RESUME_MAY_CHANGE, recovery=RECOVERY_KEYS)
                if resume else [])
    check_devices(accelerator, devices, strategy, config.precision)
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

    lock = RunLock(out).acquire()
    try:
        prepare(out, resume=resume, force=force, own=_OWN)
        if init_report is not None and not is_launched_child():
            print(init_report.summary())
        if not is_launched_child():
            fields: dict[str, Any] = {}
            if recovery:  # a recorded recovery after a divergence, as hitdet train records it
                run = read_run(out)
                entry = {key: {"from": old, "to": new} for key, old, new in recovery}
                fields = {"recoveries": [*run.get("recoveries", []), {**entry, "after": run.get("diverged")}],
                          "diverged": None}
            if not resume or recovery or read_yaml_dict(out / CONFIG_NAME) is None:
                write_yaml_atomic(out / CONFIG_NAME, config.to_dict())
            update_run(out, target=target.describe(), config=config.to_dict(), data=str(data.root),
                       classes=data.classes, resumed=resume, **fields)
        return _fit(target, out, config, data, module, model, train_loader, val_loader, ckpt, init_report,
                    accelerator=accelerator, devices=devices, strategy=strategy, progress=progress)
    finally:
        lock.release()


def _fit(
    target: PretrainTarget, out: Path, config: PretrainConfig, data: Any, module: Any, model: BackboneClassifier,
    train_loader: DataLoader, val_loader: DataLoader | None, ckpt: Path | None, init_report: Any, *,
    accelerator: str, devices: int | str, strategy: str, progress: bool,
) -> dict[str, Any]:
    from pytorch_lightning.callbacks import LearningRateMonitor

    checkpoint = checkpoint_callback(
        out / "checkpoints",
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        save_last=True,
        save_top_k=config.keep_checkpoints,
        monitor="step" if config.keep_checkpoints != -1 else None,
        mode="max",
    )
    trainer = build_trainer(
        out,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="step")],
        progress=progress,
        max_epochs=config.epochs,
        max_steps=config.max_steps,
        precision=config.precision,
        sync_batchnorm=config.sync_batchnorm,
        log_every_n_steps=config.log_every_n_steps,
        deterministic=False,
    )
    start = time.time()
    try:
        with fitting(out):
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
