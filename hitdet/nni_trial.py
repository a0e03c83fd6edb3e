"""The trial of an ``nnictl`` architecture search: one NNI sample -> a fixed detector -> mAP.

Why this exists: ``nnictl create`` cannot start NNI's NAS-type experiments (NNI 3.0), so a
multi-trial architecture search under nnictl is an HPO experiment over the search space that
``python -m search_spaces.hpo`` exports (one ``choice`` per searched label). Each trial::

    python -m hitdet.nni_trial --data DIR [--config synth-cpu|YAML] [--set key=value ...]

reads ``nni.get_next_parameter()``, turns it into an :class:`~hitdet.architecture.Architecture`
over the configured structure (``half_depth``: the 2+2+4+2 screening backbone, which must match
the exported space; the channels are the released ones, which ``width``, else the recipe's
``preset_width``, scales for training; the classes come from the data), trains it briefly with
the shared :class:`~hitdet.training.module.DetectionModule`, reports the validation mAP after each
epoch (``nni.report_intermediate_result``) and the last epoch's at the end
(``nni.report_final_result``), as ``{"default": AP, "AP50": ..., ...}``.

Outside NNI (no tuner), give the sample with ``--params JSON`` or ``--params @sample.json``.
Bad input (an unknown op or label, a missing dataset, a bad config) exits with code 2 and one
line on stderr, like the ``hitdet`` command line.

Trial folder (``--out``, default ``$NNI_OUTPUT_DIR``, the trial's folder under nnictl)::

    OUT/architecture.json   the sampled architecture at full width (retrain it with `hitdet train`)
    OUT/metrics.json        validation metrics per epoch and the reported final metric
    OUT/tensorboard/        losses, lr and validation mAP
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hitdet.architecture import Architecture
from hitdet.errors import UserError
from hitdet.io import write_json_atomic
from hitdet.training.config import TrainConfig, load_config
from search_spaces.quiet import ignore_nni_import_warnings, quiet_nni_import

PROG = "python -m hitdet.nni_trial"
DEFAULT_CONFIG = "synth-cpu"


def import_nni() -> Any:
    """Import NNI with its import-time warnings (torch 2.14) filtered."""
    with quiet_nni_import():
        import nni

    return nni


def under_nni() -> bool:
    """True when started by an NNI training service (the tuner has a sample for this trial)."""
    return os.environ.get("NNI_PLATFORM") not in (None, "", "unittest")


def read_parameters(params: str | None) -> dict[str, Any]:
    """The trial's parameters: ``--params`` (JSON text or ``@file``) if given, else NNI's.

    ``--params`` wins so that a trial can be re-run by hand with the sample the web UI shows.
    """
    if params is not None:
        text, where = params, "--params"
        if params.startswith("@"):
            path = Path(params[1:])
            where = str(path)
            try:
                text = path.read_text()
            except OSError as exc:
                raise UserError(f"{path}: cannot read parameters: {exc.strerror or exc}") from None
        from hitdet.io import parse_json

        data = parse_json(text, where)
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a JSON object of parameters, got {type(data).__name__}")
        return data
    if not under_nni():
        raise UserError("no parameters: run this under nnictl, or give --params JSON (or --params @file.json)")
    data = import_nni().get_next_parameter()
    if not isinstance(data, dict) or not data:
        raise UserError(f"NNI gave no parameters for this trial (got {data!r})")
    return data


def structure_for(cfg: TrainConfig) -> Any:
    """The structure the search space was exported for (full depth, or half with ``half_depth``)."""
    from search_spaces.structure import DetectorStructure

    structure = DetectorStructure()
    return structure.half_depth() if cfg.half_depth else structure


def architecture_from_parameters(
    parameters: Mapping[str, Any], cfg: TrainConfig, name: str = "", metadata: dict[str, Any] | None = None
) -> Architecture:
    """The full-width architecture a tuner's parameters describe; UserError on a bad sample.

    Labels the structure does not have are an error (a space exported for another depth),
    as are labels it has but the sample lacks, and ops outside the pool.
    """
    from search_spaces.hpo import sample_from_hpo
    from search_spaces.ops import OPS, unknown_op

    sample = sample_from_hpo(parameters)
    structure = structure_for(cfg)
    depth = "half-depth" if cfg.half_depth else "full-depth"
    extra = [label for label in sample if label not in set(structure.labels())]
    if extra:
        raise UserError(f"parameters: {extra[0]!r} is not a searched position of the {depth} structure "
                        f"(export the search space with the same depth: python -m search_spaces.hpo"
                        f"{' --half-depth' if cfg.half_depth else ''})")
    for label, op in sample.items():
        if op not in OPS:
            raise UserError(f"parameters: {label}: {unknown_op(op)}; see the op pool: search_spaces.OPS")
    if not sample:
        raise UserError("parameters: no searched positions (labels like 'backbone/s1_b0') in the parameters")
    return Architecture.from_sample(sample, structure, name=name, metadata=metadata or {})


MetricCallback = Callable[[int, dict[str, float]], None]


def train_and_report(
    arch: Architecture,
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    on_epoch: MetricCallback | None = None,
    limit_train_batches: int | None = None,
    progress: bool = False,
    accelerator: str = "cpu",
) -> list[dict[str, float]]:
    """Train ``arch`` (width and classes applied by ``cfg`` and the data) and return the per-epoch metrics.

    ``on_epoch(epoch, metrics)`` runs after each epoch's validation (the trial reports there).
    Why not :func:`hitdet.training.runner.train`: it has no per-epoch hook to report through,
    and a trial needs no checkpoints; this reuses its datasets, loaders and preparation.
    """
    with warnings.catch_warnings():
        ignore_nni_import_warnings()
        import pytorch_lightning as pl
        from pytorch_lightning.callbacks import Callback

        from hitdet.builder import build_detector
        from hitdet.data import dataset_folder, load_datasets, make_eval_loader, make_train_loader
        from hitdet.runs import build_trainer, check_devices, fitting
        from hitdet.training.module import DetectionModule
        from hitdet.training.runner import prepare_architecture

    out = Path(out)
    check_devices(accelerator, 1, "auto")
    data_dir = dataset_folder(data_dir)
    cfg = dataclasses.replace(cfg, half_depth=False)  # the architecture already has the configured depth
    train_ds, val_ds = load_datasets(data_dir, cfg.hflip_prob)
    trained = prepare_architecture(arch, train_ds.categories(), cfg)
    pl.seed_everything(cfg.seed, verbose=False)
    module = DetectionModule(build_detector(trained), cfg)
    history: list[dict[str, float]] = []

    class _Report(Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            # After this epoch's validation (callbacks' validation hooks run before the module's).
            if not module.last_metrics:
                return
            epoch = trainer.current_epoch + 1
            metrics = {k: float(v) for k, v in module.last_metrics.items()}
            history.append({"epoch": epoch, **metrics})
            if on_epoch is not None:
                on_epoch(epoch, metrics)

    trainer = build_trainer(
        out,
        accelerator=accelerator,
        devices=1,
        strategy="auto",
        callbacks=[_Report()],
        progress=progress,
        max_epochs=cfg.epochs,
        enable_checkpointing=False,
        limit_train_batches=limit_train_batches,
        log_every_n_steps=1,
        use_distributed_sampler=False,
    )
    with fitting(out):
        trainer.fit(module, train_dataloaders=make_train_loader(train_ds, cfg.batch_size, cfg.seed, cfg.num_workers),
                    val_dataloaders=make_eval_loader(val_ds, cfg.eval_batch_size, cfg.num_workers))
    if not history:
        raise RuntimeError("training finished without a validation result")
    return history


def metric(metrics: Mapping[str, float]) -> dict[str, float]:
    """What NNI gets: ``default`` is the AP (COCO's -1, no ground truth, reads as 0), then the rest."""
    return {"default": max(0.0, float(metrics["AP"])), **{k: float(v) for k, v in metrics.items() if k != "epoch"}}


def output_dir(out: str | None) -> Path:
    """``--out``, else the trial folder NNI gives (``$NNI_OUTPUT_DIR``)."""
    if out:
        return Path(out)
    env = os.environ.get("NNI_OUTPUT_DIR")
    if env:
        return Path(env) / "hitdet"
    raise UserError("--out: required outside NNI (under nnictl the trial writes into $NNI_OUTPUT_DIR)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared with :mod:`hitdet.nni_hparam_trial`: data, config, overrides, length."""
    parser.add_argument("--data", help="dataset folder (COCO layout); default $HITDET_DATA or the built-in "
                        "synthetic set")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"training recipe or YAML (default {DEFAULT_CONFIG})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set width=0.0625 --set detector.min_size=64")
    parser.add_argument("--epochs", type=int, help="training epochs (overrides the config)")
    parser.add_argument("--limit-train-batches", type=int, metavar="N", help="at most N training steps per epoch")
    parser.add_argument("--out", help="trial folder (default: $NNI_OUTPUT_DIR/hitdet under NNI)")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu", "auto"),
                        help="where the trial trains (default cpu; gpu with trialGpuNumber >= 1)")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="One trial of an nnictl architecture search.")
    add_training_arguments(parser)
    parser.add_argument("--params", help="the sample as JSON text or @file.json (instead of NNI's; for a re-run)")
    return parser


def check_limit(value: int | None) -> int | None:
    """``--limit-train-batches`` as Lightning's ``limit_train_batches`` (None: every batch)."""
    if value is not None and value < 1:
        raise UserError(f"--limit-train-batches: must be a positive integer, got {value}")
    return value


def trial_inputs(args: argparse.Namespace) -> tuple[int | None, Path, str | None, dict[str, Any]]:
    """What every trial reads first, checked: the step limit, the trial folder, the dataset, the parameters."""
    limit = check_limit(args.limit_train_batches)
    out = output_dir(args.out)
    data = args.data or os.environ.get("HITDET_DATA")
    if data is not None and not Path(data).is_dir():
        raise UserError(f"{data}: dataset folder not found")
    return limit, out, data, read_parameters(args.params)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Sample -> architecture -> short training -> reported metrics; returns the final metric."""
    cfg = load_config(args.config, args.overrides, epochs=args.epochs)
    limit, out, data, parameters = trial_inputs(args)
    nni = import_nni()
    ids = {"experiment": nni.get_experiment_id(), "trial": nni.get_trial_id(), "sequence": nni.get_sequence_id()}
    arch = architecture_from_parameters(parameters, cfg, name=f"nni-{ids['trial']}", metadata={"nni": ids})
    if cfg.width is None:  # the sample has the released channels, as the preset: the recipe's preset width applies
        cfg = dataclasses.replace(cfg, width=cfg.preset_width)
    from hitdet.runs import check_devices

    check_devices(args.accelerator, 1, "auto")  # before the trial folder is written
    out.mkdir(parents=True, exist_ok=True)
    arch.save(out / "architecture.json")

    def report(epoch: int, metrics: dict[str, float]) -> None:
        nni.report_intermediate_result(metric(metrics))
        print(f"epoch {epoch}: AP {metrics['AP']:.4f} AP50 {metrics['AP50']:.4f}", flush=True)

    history = train_and_report(arch, cfg, data, out / "train", report, limit, args.progress, args.accelerator)
    final = metric(history[-1])
    write_json_atomic(out / "metrics.json", {"history": history, "final": final})
    nni.report_final_result(final)
    print(f"final: AP {final['default']:.4f}", flush=True)
    return final


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None,
         runner: Callable[[argparse.Namespace], Any] = run, prog: str = PROG) -> int:
    """Run one trial; a UserError prints one line on stderr and exits 2 (as ``hitdet`` does)."""
    ignore_nni_import_warnings()
    args = (parser or build_parser()).parse_args(argv)
    try:
        runner(args)
    except UserError as exc:
        kind = "" if exc.exit_code in (130, 143) else "error: "  # hitdet.runs.RunInterrupted: a stop
        print(f"{prog}: {kind}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
