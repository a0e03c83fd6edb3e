"""``hitdet screen`` and ``hitdet search``: the two stages of the Hit-Detector search on a dataset.

Both build a :class:`~search_spaces.TrinitySpace` sized for the data, wrap the shared
:class:`~hitdet.training.module.DetectionModule` in NNI's Lightning evaluator and run
:class:`~strategies.HitDetStrategy` through ``NasExperiment``. Run folder::

    RUN/subspaces.json       screen: the kept ops per component, their scores, the removals
    RUN/architecture.json    search: the argmax architecture (α, sub spaces, MACs in metadata)
    RUN/sample.json          the exported NNI sample {label: op}
    RUN/metadata.json        α probabilities, score history, MACs, settings (``hitdet plot RUN``)
    RUN/config.yaml          the resolved config (train, strategy, ops, sizes)
    RUN/run.json             the dataset folder and the mode (``--resume`` needs no ``--data``)
    RUN/checkpoints/         Lightning checkpoints every epoch and last.ckpt (weights, α, both
                             optimisers, schedulers, removed ops) for ``--resume``
    RUN/tensorboard/         losses, penalty, expected MACs, α entropy, α heatmaps, removals
    RUN/nni/                 NNI's experiment folder (logs)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hitdet.architecture import Architecture, write_json_atomic, write_text_atomic
from hitdet.config import coerce, config_layers, parse_override
from hitdet.errors import UserError
from hitdet.training.config import TrainConfig

MODES = ("screen", "search")
COMPONENTS = ("backbone", "neck", "head")

# Built-in recipes (``--config NAME``): the paper's settings, and the small CPU setting of the demo.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {
        "train": {"epochs": 12, "schedule": "cosine", "base_lr": 0.04, "warmup_iters": 0},
    },
    "synth-cpu": {
        # The CPU-scale space (search_spaces.structure.CPU_STRUCTURE) at its own width, on 128-160 px images.
        "structure": "cpu",
        "num_rois": 100,  # head MACs priced at the test-time proposals, as the paper prices its 1000
        "train": {
            "epochs": 4,
            "batch_size": 4,
            "lr": 0.02,
            "schedule": "cosine",
            "warmup_iters": 20,
            "warmup_ratio": 0.1,
            "width": 1.0,
            "detector": {
                "min_size": 128,
                "max_size": 160,
                "anchor_base": 16,
                "rpn_pre_nms_top_n_train": 300,
                "rpn_post_nms_top_n_train": 150,
                "rpn_pre_nms_top_n_test": 300,
                "rpn_post_nms_top_n_test": 100,
                "rpn_batch_size_per_image": 64,
                "box_batch_size_per_image": 16,
            },
        },
        # α may travel as far as in the paper's search (Adam 4e-4 x ~11k COCO steps = 4.4 logits), however
        # few architecture steps a CPU run has.
        "strategy": {"arch_start_epoch": 1, "arch_travel": 4.4},
    },
}

@dataclass
class SearchConfig:
    """One screening or search run: the weight training, the strategy, and the space."""

    detector: str = "faster_rcnn"  # or "retinanet": the one-stage variant (paper Table 6)
    structure: str = "released"  # the space's shape: "released" (the paper's) or "cpu" (small images, CPU runs)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: dict[str, Any] = field(default_factory=dict)  # strategies.SearchSettings fields
    ops: list[str] | dict[str, list[str]] | None = None  # screen: the pool to screen (default: all 32)
    sub_spaces: str = "all"  # search: "all", "paper-neck" or a sub-spaces JSON from hitdet screen
    input_size: list[int] | None = None  # (H, W) the FLOPs penalty prices ops at; default: training size
    target_macs: float | None = None  # search towards this many MACs of the whole detector (at input_size, num_rois)
    num_rois: int | None = None  # RoIs the head's MACs scale with; default: RoIs sampled per image
    steps_per_epoch: int | None = None  # cap on batches per epoch (Lightning's limit_train_batches)

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "structure": self.structure,
            "train": self.train.to_dict(),
            "strategy": dict(self.strategy),
            "ops": self.ops,
            "sub_spaces": self.sub_spaces,
            "input_size": self.input_size,
            "target_macs": self.target_macs,
            "num_rois": self.num_rois,
            "steps_per_epoch": self.steps_per_epoch,
        }


def _strategy_settings(mode: str, values: dict[str, Any], source: str) -> Any:
    from search_spaces.ops import OPS
    from strategies import SearchSettings

    known = {f.name for f in dataclasses.fields(SearchSettings)} - {"mode", "sub_spaces"}
    unknown = set(values) - known
    if unknown:
        raise UserError(f"{source}: strategy.{sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(known))})")
    hints = typing.get_type_hints(SearchSettings)
    for key, value in values.items():
        if typing.get_origin(hints[key]) is None or typing.get_origin(hints[key]) in (typing.Union, types.UnionType):
            if not (key == "screen_components" and isinstance(value, (list, tuple))):
                coerce(value, hints[key], f"{source}: strategy.{key}")
    try:
        settings = SearchSettings(mode=mode, **values)
    except (TypeError, ValueError) as exc:
        text = str(exc)  # SearchSettings says "field: why, got value"
        field = text.split(":", 1)[0]
        if source.endswith(f"strategy.{field}"):  # --set strategy.field=... already names it
            raise UserError(f"{source}:{text[len(field) + 1:]}") from None
        raise UserError(f"{source}: strategy.{text}") from None
    if settings.num_ops > len(OPS):  # the pool's size is the space's business, not the strategy's
        raise UserError(f"{source}: strategy.num_ops: must be at most the {len(OPS)} ops of the pool, "
                        f"got {settings.num_ops}")
    return settings


def load_search_config(
    mode: str, config: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> SearchConfig:
    """A config from a recipe name or YAML file, then ``--set section.key=value`` overrides.

    Sections: ``train`` (the keys of ``hitdet train``'s config), ``strategy`` (the strategy's
    settings), and the top-level keys ``ops``, ``sub_spaces``, ``input_size``, ``num_rois``.
    """
    layers: list[tuple[dict[str, Any], str]] = config_layers(config, RECIPES)
    for text in overrides or []:
        key, value = parse_override(text)
        parts = key.split(".")
        update: Any = value
        for part in reversed(parts):
            update = {part: update}
        layers.append((update, f"--set {key}"))

    train_updates: list[tuple[dict[str, Any], str]] = []
    strategy: dict[str, Any] = {}
    top: dict[str, Any] = {}
    hints = typing.get_type_hints(SearchConfig)
    for data, source in layers:
        for key, value in data.items():
            if key == "train":
                if not isinstance(value, dict):
                    raise UserError(f"{source}: train: expected a mapping, got {value!r}")
                train_updates.append((value, source))
            elif key == "strategy":
                if not isinstance(value, dict):
                    raise UserError(f"{source}: strategy: expected a mapping, got {value!r}")
                strategy.update(value)
                _strategy_settings(mode, strategy, source)
            elif key in hints:
                top[key] = _check_top(key, value, source)
            else:
                raise UserError(f"{source}: {key}: unknown key (known: {', '.join(hints)})")
    train = _train_config(train_updates, mode)
    cfg = SearchConfig(train=train, strategy=strategy, **top)
    _strategy_settings(mode, strategy, "config")
    return cfg


def _train_config(updates: list[tuple[dict[str, Any], str]], mode: str) -> TrainConfig:
    """The train section, validated by the same code as ``hitdet train``'s config."""
    from hitdet.training import config as train_config

    values = TrainConfig().to_dict()
    values["schedule"] = "cosine"  # the search's weight schedule (paper Sec. 4.2)
    values["warmup_iters"] = 0
    values["half_depth"] = mode == "screen"  # screening runs the backbone at half depth
    for data, source in updates:
        train_config._update(values, data, f"{source}: train")
    cfg = TrainConfig(**values)
    train_config._validate(cfg)
    return cfg


def _check_top(key: str, value: Any, source: str) -> Any:
    from search_spaces.ops import OPS

    where = f"{source}: {key}"
    if key == "detector":
        if value not in ("faster_rcnn", "retinanet"):
            raise UserError(f"{where}: expected 'faster_rcnn' or 'retinanet', got {value!r}")
    elif key == "structure":
        from search_spaces.structure import STRUCTURES

        if value not in STRUCTURES:
            raise UserError(f"{where}: expected one of {', '.join(STRUCTURES)}, got {value!r}")
    elif key == "sub_spaces":
        if not isinstance(value, str):
            raise UserError(f"{where}: expected 'all', 'paper-neck' or a sub-spaces JSON path, got {value!r}")
    elif key == "ops" and value is not None:
        lists = value.items() if isinstance(value, dict) else [("all", value)]
        for comp, ops in lists:
            if comp != "all" and comp not in COMPONENTS:
                raise UserError(f"{where}: unknown component {comp!r} (known: {', '.join(COMPONENTS)})")
            if not isinstance(ops, list) or not ops:
                raise UserError(f"{where}: expected a non-empty list of op names, got {ops!r}")
            bad = [op for op in ops if op not in OPS]
            if bad:
                raise UserError(f"{where}: unknown op {bad[0]!r}")
    elif key == "input_size" and value is not None:
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
            raise UserError(f"{where}: expected [height, width], got {value!r}")
    elif key == "target_macs" and value is not None:
        value = parse_macs(value, where)
    elif key in ("num_rois", "steps_per_epoch") and value is not None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{where}: expected a positive integer, got {value!r}")
    return value


def parse_macs(value: Any, where: str = "target_macs") -> float:
    """A MACs count: a number, or a string with a unit (``3.5G``, ``350M``, ``2e9``)."""
    units = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    if isinstance(value, bool):
        raise UserError(f"{where}: expected a MACs count such as 3.5G, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip().upper().removesuffix("MACS").strip()
        unit = text[-1] if text and text[-1] in units else ""
        try:
            number = float(text[: len(text) - len(unit)]) * units[unit]
        except ValueError:
            raise UserError(f"{where}: expected a MACs count such as 3.5G or 350M, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise UserError(f"{where}: must be a positive MACs count, got {value!r}")
    return number


def fixed_macs(space: Any, structure: Any, settings: Any, detector_type: str) -> float:
    """MACs of everything outside the searched positions (the same for every architecture of the space).

    Whole-detector MACs (``search_spaces.costs.detector_cost``, as ``hitdet info`` counts) of
    one sample, minus the searched positions' share from the space's own table.
    """
    from search_spaces.costs import detector_cost

    table = space.candidate_macs()
    sample = {label: next(iter(row)) for label, row in table.items()}
    total = detector_cost(structure, sample, settings.num_classes, tuple(space.input_size),
                          getattr(space, "num_rois", 1), detector_type)["total"].macs
    return float(total - sum(table[label][op] for label, op in sample.items()))


def _check_resume_config(out: Path, cfg: SearchConfig) -> None:
    """Resuming with another space or recipe than the run's would not continue the run: refuse it.

    Only ``train.epochs`` may change (to extend a run); the check itself is :mod:`hitdet.runs`' (shared with train).
    """
    from hitdet.runs import check_resume_config

    check_resume_config(out, cfg.to_dict(), may_change=("train.epochs",))


def resolve_sub_spaces(spec: str) -> dict[str, list[str]] | None:
    """The op lists of ``hitdet search``: None (all 32 ops), the paper's neck sub space, or a file."""
    from strategies import PAPER_NECK_SUB_SPACE, SubSpaces

    if spec == "all":
        return None
    if spec == "paper-neck":
        return {"neck": list(PAPER_NECK_SUB_SPACE)}
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"{spec}: sub-spaces file not found (or use 'all' or 'paper-neck')")
    from hitdet.io import read_json

    data = read_json(path, what="sub-spaces file")  # bounded: size, depth and digits
    if not isinstance(data, dict):
        raise UserError(f"{spec}: expected a JSON object")
    try:
        kept = {c: list(ops) for c, ops in SubSpaces.from_dict(data).kept.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{spec}: {exc}") from None
    from search_spaces.ops import OPS

    for comp, ops in kept.items():
        if comp not in COMPONENTS:
            raise UserError(f"{spec}: components.{comp}: unknown component (known: {', '.join(COMPONENTS)})")
        bad = [op for op in ops if op not in OPS]
        if bad:
            raise UserError(f"{spec}: components.{comp}.ops: unknown op {bad[0]!r}")
    return kept


def _input_size(cfg: SearchConfig, settings: Any) -> tuple[int, int]:
    if cfg.input_size is not None:
        return cfg.input_size[0], cfg.input_size[1]
    return settings.padded_size()


def run_search(
    mode: str,
    out: str | os.PathLike[str],
    cfg: SearchConfig,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    backbone_weights: str | os.PathLike[str] | None = None,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    progress: bool = True,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Run one screening or search stage into ``out``; returns a summary of what it wrote.

    ``callbacks``: extra Lightning callbacks (after the checkpointing one), e.g. to watch α.
    With DDP every rank runs this; only rank 0 writes into ``out`` and returns a summary.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Buffer|LinearCrossEntropyOptions).*", category=RuntimeWarning)
        import pytorch_lightning as pl

        from search_spaces import TrinitySpace

    from hitdet.data import ensure_synthetic
    from hitdet.runs import (
        RunLock,
        check_devices,
        check_out,
        check_resume,
        is_launched_child,
        prepare,
        update_run,
    )
    from hitdet.training.runner import load_datasets, recorded_data
    from search_spaces.detectors import DetectorSettings
    from search_spaces.structure import STRUCTURES

    out = Path(out)
    child = is_launched_child()  # DDP's extra processes re-run the command: rank 0 owns the folder
    # -- validate everything before the run folder is touched
    check_out(out, resume=resume, force=force)
    if resume:
        check_resume(out)
        data_dir = data_dir or recorded_data(out)
        _check_resume_config(out, cfg)
    if strategy == "ddp":
        strategy = "ddp_find_unused_parameters_true"  # a supernet step leaves unchosen candidates without gradients
    check_devices(accelerator, devices, strategy, cfg.train.precision)
    sub_spaces = resolve_sub_spaces(cfg.sub_spaces) if mode == "search" else None
    settings_obj = _strategy_settings(mode, cfg.strategy, "config")
    data_dir = Path(data_dir) if data_dir is not None else ensure_synthetic()
    train_cfg = cfg.train
    train_ds, _ = load_datasets(data_dir, train_cfg)

    pl.seed_everything(train_cfg.seed, verbose=False)  # the supernet's initial weights, too
    structure = STRUCTURES[cfg.structure]
    if train_cfg.half_depth:
        structure = structure.half_depth()
    if train_cfg.width != 1.0:
        structure = structure.scaled(train_cfg.width)
    categories = train_ds.categories()
    settings = train_cfg.apply_to_settings(DetectorSettings(num_classes=len(categories) + 1))
    input_size = _input_size(cfg, settings)
    num_rois = cfg.num_rois or settings.box_batch_size_per_image
    ops = sub_spaces if mode == "search" else cfg.ops
    if cfg.detector == "retinanet":
        from search_spaces import RetinaNetSpace

        structure = dataclasses.replace(structure, head_blocks=2 * structure.head_blocks)  # two towers
        space = RetinaNetSpace(structure, ops, settings, input_size=input_size)
    else:
        space = TrinitySpace(structure, ops, settings, input_size=input_size, num_rois=num_rois)
    if cfg.target_macs is not None:
        if mode != "search":
            raise UserError("target_macs: a MACs budget applies to the search, not to screening")
        fixed = fixed_macs(space, structure, settings, cfg.detector)
        if cfg.target_macs <= fixed:
            raise UserError(f"target_macs: {cfg.target_macs / 1e9:.4g} G is not above the {fixed / 1e9:.4g} G MACs "
                            f"that every detector of this space spends outside the searched positions")
        settings_obj = dataclasses.replace(settings_obj, target_macs=cfg.target_macs - fixed)
    report = None
    if backbone_weights is not None:
        from hitdet.pretrain.weights import load_backbone_weights

        report = load_backbone_weights(space, backbone_weights)

    with RunLock(out):
        prepare(out, resume=resume, force=force)
        if report is not None and not child:
            print(report.summary())
        if not child:
            if not resume:
                write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            update_run(out, data=str(data_dir.resolve()), mode=mode, resumed=resume)
        trainer, strat = _run_experiment(
            mode, out, cfg, space, settings_obj, sub_spaces, train_ds, resume=resume, accelerator=accelerator,
            devices=devices, strategy=strategy, progress=progress, callbacks=callbacks, child=child,
        )
        if not trainer.is_global_zero:
            return {}
        return _write_results(mode, out, cfg, strat, structure, settings, categories)


def _run_experiment(
    mode: str, out: Path, cfg: SearchConfig, space: Any, settings_obj: Any, sub_spaces: Any, train_ds: Any, *,
    resume: bool, accelerator: str, devices: int | str, strategy: str, progress: bool, callbacks: list[Any] | None,
    child: bool,
) -> tuple[Any, Any]:
    """Build the Trainer and NNI's one-shot experiment, and run it (every rank)."""
    import pytorch_lightning as pl
    from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
    from nni.nas.experiment import NasExperiment
    from pytorch_lightning.callbacks import LearningRateMonitor

    from hitdet.data import collate
    from hitdet.runs import build_trainer, checkpoint_callback, fitting
    from hitdet.training.module import DetectionModule
    from strategies import HitDetStrategy

    train_cfg = cfg.train
    last = out / "checkpoints" / "last.ckpt"
    pl.seed_everything(train_cfg.seed, verbose=False)
    keep = train_cfg.keep_checkpoints  # a 32-op epoch checkpoint is ~90 MB: keep the newest few, as train does
    checkpoints = checkpoint_callback(
        out / "checkpoints", filename="epoch{epoch:03d}", auto_insert_metric_name=False, save_top_k=keep,
        monitor="step" if keep != -1 else None, mode="max", save_last=True, every_n_epochs=1,
    )
    trainer = build_trainer(
        out,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        callbacks=[checkpoints, LearningRateMonitor(logging_interval="step"), *(callbacks or [])],
        progress=progress,
        trainer_class=Trainer,
        max_epochs=train_cfg.epochs,
        limit_val_batches=0,
        limit_train_batches=cfg.steps_per_epoch or train_cfg.steps_per_epoch or 1.0,
        precision=train_cfg.precision,
        log_every_n_steps=1,
    )
    loader = DataLoader(
        train_ds, batch_size=train_cfg.batch_size, shuffle=True, collate_fn=collate, num_workers=train_cfg.num_workers
    )
    evaluator = Lightning(
        DetectionModule(config=train_cfg),
        trainer,
        train_dataloaders=loader,
        fit_kwargs={"ckpt_path": str(last)} if resume else None,
    )
    strat = HitDetStrategy.from_settings(settings_obj, sub_spaces=sub_spaces)
    experiment = NasExperiment(space, evaluator, strat)
    # NNI writes an experiment folder in every process; DDP's extra ranks put theirs in a
    # throw-away folder, so that only rank 0 writes into the run.
    scratch = tempfile.TemporaryDirectory(prefix="hitdet-nni-rank-") if child else None
    experiment.config.experiment_working_directory = scratch.name if scratch else str((out / "nni").resolve())
    nni_logger = logging.getLogger("nni")
    level = nni_logger.level
    nni_logger.setLevel(logging.ERROR)  # one-shot runs have no NNI manager: its start-up chatter is noise
    try:
        with fitting(out):
            try:
                experiment.run()
            finally:
                experiment.stop()
    finally:
        nni_logger.setLevel(level)
        if scratch is not None:
            scratch.cleanup()
    return trainer, strat


def _write_results(
    mode: str, out: Path, cfg: SearchConfig, strat: Any, structure: Any, settings: Any, categories: list[Any]
) -> dict[str, Any]:
    """Rank 0: the exported sample, metadata, and the sub spaces (screen) or the architecture (search)."""
    train_cfg = cfg.train
    input_size = _input_size(cfg, settings)
    num_rois = cfg.num_rois or settings.box_batch_size_per_image
    result = strat.export_result()
    write_json_atomic(out / "sample.json", result.sample)
    write_json_atomic(out / "metadata.json", result.metadata)
    summary: dict[str, Any] = {"mode": mode, "out": str(out), "sample": str(out / "sample.json")}
    if mode == "screen":
        summary["sub_spaces"] = str(write_json_atomic(out / "subspaces.json", result.sub_spaces.to_dict()))
        summary["kept"] = {c: list(v) for c, v in result.sub_spaces.kept.items()}
    else:
        metadata = {**result.metadata, "categories": categories, "searched_width": train_cfg.width}
        arch = Architecture.from_sample(result.sample, structure, settings, name=f"hitdet-{out.name}",
                                        detector_type=cfg.detector, metadata=metadata)
        summary["architecture"] = str(arch.save(out / "architecture.json"))
        summary["macs"] = result.metadata.get("macs", {})
        from search_spaces.costs import detector_cost

        cost = detector_cost(structure, arch.sample(), settings.num_classes, input_size, num_rois, cfg.detector)
        summary["detector"] = {
            "macs": cost["total"].macs, "params": cost["total"].params, "input_size": list(input_size),
            "num_rois": num_rois, "target_macs": cfg.target_macs,
            "chosen": {c: [op for label, op in arch.sample().items() if label.startswith(c + "/")]
                       for c in COMPONENTS},
            "decisiveness": result.metadata.get("decisiveness"),
        }
    return summary
