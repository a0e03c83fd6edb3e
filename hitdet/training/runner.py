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

from hitdet import data
from hitdet.architecture import Architecture, architecture_categories, width_record
from hitdet.data import CocoDetection, dataset_folder, dataset_identity, make_eval_loader, make_train_loader
from hitdet.errors import UserError
from hitdet.io import read_json_or_none, write_bytes_atomic, write_json_atomic
from hitdet.runs import Run, is_launched_child, last_good_checkpoint, recorded_data
from hitdet.training.config import TrainConfig
from hitdet.weights.backbone import load_backbone_weights
from hitdet.weights.detector import read_state_dict, save_weights

# Earlier homes, kept for benchmarks and scripts: the loaders and the data moved below the runners
# (hitdet.data), the run folder's helpers to hitdet.runs, architecture_categories to hitdet.architecture.
__all__ = ["architecture_categories", "is_launched_child", "last_good_checkpoint", "load_datasets",
           "make_eval_loader", "make_train_loader", "recorded_data", "train"]

RESUME_MAY_CHANGE = ("epochs",)  # --resume --epochs N extends a run
# may change on --resume only after a divergence (exit 3), each change recorded in run.json's recoveries:
# the step size (lr), the clipping, and the step schedule (gamma, milestones: docs/reliability.md)
RECOVERY_KEYS = ("lr", "grad_clip_norm", "gamma", "milestones")


def load_datasets(
    data_dir: Path, cfg: TrainConfig, categories: list[int] | None = None
) -> tuple[CocoDetection, CocoDetection]:
    """:func:`hitdet.data.load_datasets` with the config's flips (the signature benchmarks call)."""
    return data.load_datasets(data_dir, cfg.hflip_prob, categories)


def train_width(arch: Architecture, config: TrainConfig) -> tuple[float, str] | None:
    """The channel multiplier a training applies to ``arch``, and the config key that asked for it; None: none.

    An architecture JSON means one detector and is trained at the channels it states, unless the user sets
    ``width`` (``--width``, ``--set width=...``, a config file's ``width:``). A shipped preset (the released
    channels, sized for COCO) takes the recipe's ``preset_width`` instead when ``width`` is not set: 0.125 in
    ``synth-cpu``, so that the released detector fits a CPU.
    """
    if config.width is not None:
        return config.width, "width"
    if arch.preset and config.preset_width != 1.0:
        return config.preset_width, "preset_width"
    return None


def prepare_architecture(arch: Architecture, categories: list[dict[str, Any]], config: TrainConfig) -> Architecture:
    """The architecture as it will be trained: classes from the data, detector overrides, a width if asked for.

    The category ids are stored in the metadata, so that evaluation maps labels back to the same ids
    whatever dataset it reads; a width multiplier (:func:`train_width`) is recorded there too
    (``metadata.width``: multiplier, of what, set by which key), which ``hitdet info`` shows.

    Args:
        arch: the architecture to train (a JSON's, or a preset).
        categories: the dataset's categories (``{"id", "name"}``), in label order.
        config: the training config.

    Returns:
        The architecture the run saves as ``RUN/architecture.json`` and builds.
    """
    width = train_width(arch, config)
    metadata = dict(arch.metadata)
    if width is not None:
        if "width" in arch.metadata:
            warnings.warn(f"{arch.name or 'architecture'}: its channels are already scaled "
                          f"({width_record(arch)}); {width[1]} {width[0]:g} scales them again", UserWarning,
                          stacklevel=2)
        metadata["width"] = {"multiplier": width[0], "of": f"preset {arch.preset}" if arch.preset
                             else f"architecture {arch.name or '(unnamed)'}", "by": width[1]}
    if config.half_depth:
        arch = half_depth_architecture(arch)
    structure = arch.structure.scaled(width[0]) if width is not None else arch.structure
    settings = dataclasses.replace(arch.settings, num_classes=len(categories) + 1)
    try:
        settings = config.apply_to_settings(settings)
    except TypeError as exc:
        raise UserError(f"config: detector: {exc}") from None
    if settings.num_classes != len(categories) + 1:
        raise UserError(f"config: detector.num_classes: the data has {len(categories)} classes + background, "
                        f"got {settings.num_classes}")
    metadata.update(categories=categories, trained_half_depth=config.half_depth)
    arch = dataclasses.replace(arch, structure=structure, settings=settings, metadata=metadata)
    from hitdet.architecture import check_bounds

    check_bounds(arch, f"{arch.name or 'architecture'} as trained (--width and the config's detector settings)")
    return arch


def half_depth_architecture(arch: Architecture) -> Architecture:
    """Every other backbone block (the first of each pair), each keeping its op, channels and stride."""
    half = arch.structure.half_depth()
    old_labels = iter(arch.structure.backbone_labels())
    old_by_stage = [[next(old_labels) for _ in stage] for stage in arch.structure.stages]
    new_labels = iter(half.backbone_labels())
    choices = {next(new_labels): arch.choices[old] for stage in old_by_stage for old in stage[::2]}
    choices.update({label: arch.choices[label] for label in half.neck_labels() + half.head_labels()})
    return dataclasses.replace(arch, structure=half, choices=choices)


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
    num_nodes: int = 1,
    progress: bool = True,
    backbone_weights: str | os.PathLike[str] | None = None,
    callbacks: list[Any] | None = None,
    inputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Retrain ``arch`` on ``data_dir`` into the run folder ``out`` (what ``hitdet train`` runs).

    The run folder's lifecycle (validation before writing, the lock, ``--force``, config.yaml and
    run.json, signals, ``--resume`` and its recoveries) is :class:`hitdet.runs.Run`'s; this supplies
    the data, the detector and the fit.

    Args:
        arch: the architecture to train (on ``resume``, the run's own ``architecture.json``).
        out: the run folder.
        config: the training config (:func:`hitdet.training.config.load_config`).
        data_dir: a COCO-layout dataset folder; default the run's own on ``resume``, else the built-in set.
        resume, force: continue the run in ``out`` / replace it.
        accelerator, devices, strategy, num_nodes: Lightning's (several nodes: ``auto`` becomes ``ddp``).
        progress: show Lightning's progress bar.
        backbone_weights: a pretrained backbone (``hitdet pretrain``) to start from.
        callbacks: extra Lightning callbacks (after hitdet's own).
        inputs: further files the caller read, by flag (``{"ARCH": path}``): ``out`` may not overlap them
            (:class:`hitdet.runs.Run`; the dataset and the backbone weights are checked anyway).

    Returns:
        The summary written to ``metrics.json``: ``best`` and ``last`` validation metrics, the ``history``
        (empty on DDP's extra ranks).
    """
    import pytorch_lightning as pl

    from hitdet.builder import build_detector

    if strategy == "auto" and num_nodes > 1:
        strategy = "ddp"
    run = Run(out, resume=resume, force=force, config=config.to_dict(), may_change=RESUME_MAY_CHANGE,
              recovery=RECOVERY_KEYS, accelerator=accelerator, devices=devices, strategy=strategy,
              num_nodes=num_nodes, precision=config.precision, command="train",
              inputs={"--data": data_dir, "--backbone-weights": backbone_weights, **(inputs or {})})
    data_dir = dataset_folder(data_dir, run.recorded_data())
    run.add_inputs(**{"--data": data_dir})
    train_ds, val_ds = load_datasets(data_dir, config, architecture_categories(arch) if resume else None)
    if not resume:
        arch = prepare_architecture(arch, train_ds.categories(), config)
    pl.seed_everything(config.seed, verbose=False)
    model = build_detector(arch)
    report = None
    if backbone_weights is not None and not resume:
        report = load_backbone_weights(model, backbone_weights, choices=arch.sample())

    if resume:  # the checkpoint fits the run's architecture.json: checked before anything is written
        from hitdet.training.module import DetectionModule

        run.check_checkpoint(DetectionModule(model, config), what=str(run.out / "architecture.json"))
    with run:
        if report is not None:
            run.say(report.summary())
        if not resume and not run.child:
            arch.save(run.out / "architecture.json")
        run.record(data=str(data_dir.resolve()), dataset=dataset_identity(data_dir, (train_ds, val_ds)))
        return _fit(run, config, model, train_ds, val_ds, data_dir, progress=progress, callbacks=callbacks)


def _fit(
    run: Run, cfg: TrainConfig, model: Any, train_ds: Dataset, val_ds: Dataset, data_dir: Path, *,
    progress: bool, callbacks: list[Any] | None,
) -> dict[str, Any]:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback, LearningRateMonitor

    from hitdet.training.module import DetectionModule

    out = run.out
    module = DetectionModule(model, cfg)
    history = _history(out) if run.resume else []

    class _Record(Callback):
        """Append each epoch's validation metrics to metrics.json as training goes."""

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            # Runs after this epoch's validation (callbacks' validation hooks run before the module's).
            epoch = trainer.current_epoch + 1
            if not trainer.is_global_zero or not module.last_metrics or (history and history[-1]["epoch"] == epoch):
                return
            history.append({"epoch": epoch, **module.last_metrics})
            write_json_atomic(out / "metrics.json", {"history": history})

    every_epoch = run.checkpoints(
        filename="epoch{epoch:03d}", auto_insert_metric_name=False, monitor="step", mode="max",
        save_top_k=cfg.keep_checkpoints, save_last=True, every_n_epochs=1,
    )
    best = run.checkpoints(filename="best", monitor="val/AP", mode="max", save_top_k=1)
    trainer = run.trainer(
        callbacks=[every_epoch, best, LearningRateMonitor(logging_interval="step"), _Record(), *(callbacks or [])],
        progress=progress,
        max_epochs=cfg.epochs,
        log_every_n_steps=max(1, min(cfg.log_every_n_steps, len(train_ds) // cfg.batch_size,
                                     cfg.steps_per_epoch or cfg.log_every_n_steps)),
        log_every=cfg.log_every_n_steps,
        use_distributed_sampler=False,
        limit_train_batches=cfg.steps_per_epoch or 1.0,
    )
    with run.fitting():
        trainer.fit(module, datamodule=_datamodule(train_ds, val_ds, cfg),
                    ckpt_path=str(run.last_checkpoint) if run.resume else None)
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
