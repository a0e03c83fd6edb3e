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
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from hitdet.architecture import Architecture, write_json_atomic
from hitdet.data import AspectRatioBatchSampler, CocoDetection, aspect_ratios, collate, ensure_synthetic, load_split
from hitdet.data.synth import check_output_dir
from hitdet.errors import NonFiniteLossError, UserError
from hitdet.training.config import TrainConfig, save_config
from hitdet.training.weights import read_state_dict, save_weights

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


def is_launched_child() -> bool:
    """True in the processes Lightning's DDP launcher starts (they re-run the command)."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


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
    try:
        data = json.loads((out / "run.json").read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(data) if isinstance(data, str) else None


def last_good_checkpoint(last: Path) -> str:
    """Where a stopped run can resume from, for the one-line error."""
    return f"last good checkpoint: {last}" if last.is_file() else "no checkpoint was saved yet"


_recorded_data = recorded_data  # the earlier private name, used by hitdet.searching


def _history(out: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((out / "metrics.json").read_text()).get("history", []))
    except (OSError, ValueError, AttributeError):
        return []


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
) -> dict[str, Any]:
    """Retrain ``arch`` on ``data_dir`` (default: the built-in synthetic dataset) into ``out``.

    Returns the summary written to ``metrics.json`` (best and last validation metrics).
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import TensorBoardLogger

    from hitdet.builder import build_detector
    from hitdet.training.module import DetectionModule

    out = Path(out)
    child = is_launched_child()
    ckpt_dir = out / "checkpoints"
    resume_from = ckpt_dir / "last.ckpt"
    if resume:
        if not resume_from.is_file():
            raise UserError(f"{resume_from}: no checkpoint to resume from")
    elif not child:
        check_output_dir(out, force)
    if data_dir is None and resume:
        data_dir = recorded_data(out)
    data_dir = Path(data_dir) if data_dir is not None else ensure_synthetic()
    cfg = config
    train_ds, val_ds = load_datasets(data_dir, cfg, architecture_categories(arch) if resume else None)
    if not resume:
        arch = prepare_architecture(arch, train_ds.categories(), cfg)
    # built (and pretrained weights checked) before the run folder is touched
    pl.seed_everything(cfg.seed, verbose=False)
    model = build_detector(arch)
    if backbone_weights is not None and not resume:
        from hitdet.pretrain.weights import load_backbone_weights

        report = load_backbone_weights(model, backbone_weights, choices=arch.sample())
        if not child:
            print(report.summary())
    if not child:
        if not resume and out.exists():
            shutil.rmtree(out)  # only reached with --force (checked above)
        out.mkdir(parents=True, exist_ok=True)
        arch.save(out / "architecture.json")
        save_config(cfg, out / "config.yaml")
        write_json_atomic(out / "run.json", {"data": str(data_dir.resolve()), "resumed": resume})

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

    every_epoch = ModelCheckpoint(
        dirpath=ckpt_dir, filename="epoch{epoch:03d}", auto_insert_metric_name=False, monitor="step", mode="max",
        save_top_k=cfg.keep_checkpoints, save_last=True, every_n_epochs=1,
    )
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/AP", mode="max", save_top_k=1,
                           enable_version_counter=False)
    trainer = pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        logger=TensorBoardLogger(save_dir=str(out), name="tensorboard", version="", default_hp_metric=False),
        callbacks=[every_epoch, best, LearningRateMonitor(logging_interval="step"), _Record()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=min(10, max(1, len(train_ds) // cfg.batch_size)),
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=str(out),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*treespec.*")  # Lightning's own deprecation, not ours
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")  # --resume
        try:
            trainer.fit(module, datamodule=_datamodule(train_ds, val_ds, cfg),
                        ckpt_path=str(resume_from) if resume else None)
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(f"{exc}; {last_good_checkpoint(resume_from)}") from None
    if not trainer.is_global_zero:
        return {}

    last_epoch = trainer.current_epoch
    save_weights(out / "last.pt", module.model.state_dict(), epoch=last_epoch, metrics=module.last_metrics)
    best_entry = max(history, key=lambda h: h["AP"]) if history else None
    if best.best_model_path and Path(best.best_model_path).is_file():
        save_weights(out / "best.pt", read_state_dict(best.best_model_path),
                     epoch=best_entry["epoch"] if best_entry else None, metrics=best_entry or {})
    else:
        shutil.copyfile(out / "last.pt", out / "best.pt")
    summary = {"best": best_entry, "last": history[-1] if history else None, "history": history,
               "epochs": cfg.epochs, "data": str(data_dir)}
    write_json_atomic(out / "metrics.json", summary)
    return summary
