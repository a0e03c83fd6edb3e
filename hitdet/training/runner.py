"""``hitdet train``: retrain a fixed detector with Lightning, writing a self-contained run folder.

Run folder::

    RUN/architecture.json      the architecture as trained (width, classes, input size applied)
    RUN/config.yaml            the resolved training config
    RUN/run.json               the dataset folder (so --resume needs no --data)
    RUN/best.pt, RUN/last.pt   detector weights (best validation AP, last epoch)
    RUN/metrics.json           validation metrics per epoch, best and last
    RUN/checkpoints/           Lightning checkpoints (every epoch, last.ckpt, best.ckpt) for --resume
    RUN/tensorboard/           TensorBoard logs: losses, lr, validation mAP
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from hitdet.architecture import Architecture
from hitdet.data import AspectRatioBatchSampler, CocoDetection, aspect_ratios, collate, ensure_synthetic, load_split
from hitdet.errors import UserError
from hitdet.io import read_json_or_none, write_bytes_atomic, write_json_atomic
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
    last_good_checkpoint,
    prepare,
    read_run,
    update_run,
)
from hitdet.training.config import TrainConfig, save_config
from hitdet.training.weights import read_state_dict, save_weights

__all__ = ["is_launched_child", "last_good_checkpoint", "train"]  # the first two now live in hitdet.runs

RESUME_MAY_CHANGE = ("epochs",)  # --resume --epochs N extends a run
RECOVERY_KEYS = ("lr", "grad_clip_norm")  # may change on --resume only after a divergence (exit 3); run.json
VERIFY_LIMIT = 5000  # decode every image up front when a dataset is at most this big


def make_train_loader(
    dataset: Dataset, batch_size: int, seed: int = 0, num_workers: int = 0, num_replicas: int = 1, rank: int = 0
) -> DataLoader:
    """Shuffled, aspect-ratio grouped batches (sharded over DDP replicas, equal counts per replica)."""
    sampler = AspectRatioBatchSampler(aspect_ratios(dataset), batch_size, shuffle=True, seed=seed,
                                      num_replicas=num_replicas, rank=rank)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)


def make_eval_loader(
    dataset: Dataset, batch_size: int, num_workers: int = 0, num_replicas: int = 1, rank: int = 0
) -> DataLoader:
    """In-order batches for validation; every image exactly once over all replicas."""
    sampler = AspectRatioBatchSampler(aspect_ratios(dataset), batch_size, shuffle=False,
                                      num_replicas=num_replicas, rank=rank, pad=False)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)


def prepare_architecture(arch: Architecture, categories: list[dict[str, Any]], config: TrainConfig) -> Architecture:
    """The architecture as it will be trained: width scaled, classes from the data, detector overrides.

    The category ids are stored in the metadata, so that evaluation maps labels back to the
    same ids whatever dataset it reads.
    """
    if "trained_width" in arch.metadata and config.width != 1.0:
        warnings.warn(f"{arch.name or 'architecture'}: already trained at width {arch.metadata['trained_width']}; "
                      f"width {config.width} scales it again", UserWarning, stacklevel=2)
    if config.half_depth:
        arch = half_depth_architecture(arch)
    structure = arch.structure.scaled(config.width) if config.width != 1.0 else arch.structure
    settings = dataclasses.replace(arch.settings, num_classes=len(categories) + 1)
    try:
        settings = config.apply_to_settings(settings)
    except TypeError as exc:
        raise UserError(f"config: detector: {exc}") from None
    if settings.num_classes != len(categories) + 1:
        raise UserError(f"config: detector.num_classes: the data has {len(categories)} classes + background, "
                        f"got {settings.num_classes}")
    metadata = {**arch.metadata, "categories": categories, "trained_width": config.width,
                "trained_half_depth": config.half_depth}
    return dataclasses.replace(arch, structure=structure, settings=settings, metadata=metadata)


def half_depth_architecture(arch: Architecture) -> Architecture:
    """Every other backbone block (the first of each pair), each keeping its op, channels and stride."""
    half = arch.structure.half_depth()
    old_labels = iter(arch.structure.backbone_labels())
    old_by_stage = [[next(old_labels) for _ in stage] for stage in arch.structure.stages]
    new_labels = iter(half.backbone_labels())
    choices = {next(new_labels): arch.choices[old] for stage in old_by_stage for old in stage[::2]}
    choices.update({label: arch.choices[label] for label in half.neck_labels() + half.head_labels()})
    return dataclasses.replace(arch, structure=half, choices=choices)


def architecture_categories(arch: Architecture) -> list[int] | None:
    """The category ids (label order) a trained architecture was trained with, if recorded."""
    cats = arch.metadata.get("categories")
    if isinstance(cats, list) and all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in cats):
        return [c["id"] for c in cats]
    return None


def _datamodule(train_ds: Dataset, val_ds: Dataset, cfg: TrainConfig) -> Any:
    import pytorch_lightning as pl

    class DetectionDataModule(pl.LightningDataModule):
        def train_dataloader(self) -> DataLoader:
            t = self.trainer
            return make_train_loader(train_ds, cfg.batch_size, cfg.seed, cfg.num_workers, t.world_size, t.global_rank)

        def val_dataloader(self) -> DataLoader:
            t = self.trainer
            return make_eval_loader(val_ds, cfg.eval_batch_size, cfg.num_workers, t.world_size, t.global_rank)

    return DetectionDataModule()


def load_datasets(
    data_dir: Path, cfg: TrainConfig, categories: list[int] | None = None
) -> tuple[CocoDetection, CocoDetection]:
    """The train (with flips) and val splits; bad files fail here, before anything is written."""
    train_ds = load_split(data_dir, "train", train=True, hflip_prob=cfg.hflip_prob, categories=categories)
    val_ds = load_split(data_dir, "val", categories=train_ds.cat_ids)
    for ds in (train_ds, val_ds):
        if len(ds) == 0:
            raise UserError(f"{ds.ann_file}: no images")
        if len(ds) <= VERIFY_LIMIT:
            ds.verify_images()
    return train_ds, val_ds


def recorded_data(out: Path) -> Path | None:
    """The dataset a run was started on (run.json), so ``--resume`` needs no ``--data``."""
    data = read_run(out).get("data")
    return Path(data) if isinstance(data, str) else None


_recorded_data = recorded_data  # the earlier private name


def _history(out: Path) -> list[dict[str, Any]]:
    data = read_json_or_none(out / "metrics.json")
    history = data.get("history") if isinstance(data, dict) else None
    return list(history) if isinstance(history, list) else []


def train(
    arch: Architecture,
    out: str | os.PathLike[str],
    config: TrainConfig,
    data_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    force: bool = False,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    progress: bool = True,
    backbone_weights: str | os.PathLike[str] | None = None,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Retrain ``arch`` on ``data_dir`` (default: the built-in synthetic dataset) into ``out``.

    Returns the summary written to ``metrics.json`` (best and last validation metrics).
    ``callbacks``: extra Lightning callbacks (after hitdet's own). The run folder's lifecycle
    (validation before writing, the lock, --force, signals, resume checks) is :mod:`hitdet.runs`'.
    """
    import pytorch_lightning as pl

    from hitdet.builder import build_detector

    out = Path(out)
    child = is_launched_child()
    # -- validate everything before the run folder is touched
    check_out(out, resume=resume, force=force)
    recovery: list[tuple[str, Any, Any]] = []
    if resume:
        check_resume(out)
        recovery = check_resume_config(out, config.to_dict(), may_change=RESUME_MAY_CHANGE, recovery=RECOVERY_KEYS)
    check_devices(accelerator, devices, strategy, config.precision)
    if data_dir is None and resume:
        data_dir = recorded_data(out)
    data_dir = Path(data_dir) if data_dir is not None else ensure_synthetic()
    cfg = config
    train_ds, val_ds = load_datasets(data_dir, cfg, architecture_categories(arch) if resume else None)
    if not resume:
        arch = prepare_architecture(arch, train_ds.categories(), cfg)
    pl.seed_everything(cfg.seed, verbose=False)
    model = build_detector(arch)
    report = None
    if backbone_weights is not None and not resume:
        from hitdet.pretrain.weights import load_backbone_weights

        report = load_backbone_weights(model, backbone_weights, choices=arch.sample())

    with RunLock(out):
        prepare(out, resume=resume, force=force)
        if report is not None and not child:
            print(report.summary())
        if not child:
            if not resume:
                arch.save(out / "architecture.json")
                update_run(out, data=str(data_dir.resolve()), resumed=False)
            if not resume or recovery:
                save_config(cfg, out / "config.yaml")
            if resume:
                run = read_run(out)
                fields: dict[str, Any] = {"data": str(data_dir.resolve()), "resumed": True}
                if recovery:
                    entry = {key: {"from": old, "to": new} for key, old, new in recovery}
                    fields["recoveries"] = [*run.get("recoveries", []), {**entry, "after": run.get("diverged")}]
                    fields["diverged"] = None
                update_run(out, **fields)
        return _fit(arch, out, cfg, model, train_ds, val_ds, data_dir, resume=resume, accelerator=accelerator,
                    devices=devices, strategy=strategy, progress=progress, callbacks=callbacks)


def _fit(
    arch: Architecture, out: Path, cfg: TrainConfig, model: Any, train_ds: Dataset, val_ds: Dataset, data_dir: Path,
    *, resume: bool, accelerator: str, devices: int | str, strategy: str, progress: bool, callbacks: list[Any] | None,
) -> dict[str, Any]:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback, LearningRateMonitor

    from hitdet.training.module import DetectionModule

    ckpt_dir = out / "checkpoints"
    resume_from = ckpt_dir / "last.ckpt"
    module = DetectionModule(model, cfg)
    history = _history(out) if resume else []

    class _Record(Callback):
        """Append each epoch's validation metrics to metrics.json as training goes."""

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            # Runs after this epoch's validation (callbacks' validation hooks run before the module's).
            epoch = trainer.current_epoch + 1
            if not trainer.is_global_zero or not module.last_metrics or (history and history[-1]["epoch"] == epoch):
                return
            history.append({"epoch": epoch, **module.last_metrics})
            write_json_atomic(out / "metrics.json", {"history": history})

    every_epoch = checkpoint_callback(
        ckpt_dir, filename="epoch{epoch:03d}", auto_insert_metric_name=False, monitor="step", mode="max",
        save_top_k=cfg.keep_checkpoints, save_last=True, every_n_epochs=1,
    )
    best = checkpoint_callback(ckpt_dir, filename="best", monitor="val/AP", mode="max", save_top_k=1)
    trainer = build_trainer(
        out,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        callbacks=[every_epoch, best, LearningRateMonitor(logging_interval="step"), _Record(), *(callbacks or [])],
        progress=progress,
        max_epochs=cfg.epochs,
        log_every_n_steps=min(10, max(1, len(train_ds) // cfg.batch_size)),
        use_distributed_sampler=False,
        precision=cfg.precision,
        limit_train_batches=cfg.steps_per_epoch or 1.0,
    )
    with fitting(out):
        trainer.fit(module, datamodule=_datamodule(train_ds, val_ds, cfg),
                    ckpt_path=str(resume_from) if resume else None)
    if not trainer.is_global_zero:
        return {}

    last_epoch = trainer.current_epoch
    save_weights(out / "last.pt", module.model.state_dict(), epoch=last_epoch, metrics=module.last_metrics)
    best_entry = max(history, key=lambda h: h["AP"]) if history else None
    if best.best_model_path and Path(best.best_model_path).is_file():
        save_weights(out / "best.pt", read_state_dict(best.best_model_path),
                     epoch=best_entry["epoch"] if best_entry else None, metrics=best_entry or {})
    else:
        write_bytes_atomic(out / "best.pt", (out / "last.pt").read_bytes())
    summary = {"best": best_entry, "last": history[-1] if history else None, "history": history,
               "epochs": cfg.epochs, "data": str(data_dir)}
    write_json_atomic(out / "metrics.json", summary)
    return summary
