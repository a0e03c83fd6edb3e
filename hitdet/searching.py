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
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hitdet.architecture import Architecture
from hitdet.config import canonical, load
from hitdet.errors import UserError
from hitdet.io import write_json_atomic
from hitdet.training.config import TrainConfig
from search_spaces.kinds import detector_kind, detector_types
from search_spaces.positions import COMPONENTS, SpaceError, check_op_list, normalize_ops
from search_spaces.quiet import quiet_nni_import
from strategies.settings import SearchSettings

MODES = ("screen", "search")

# Built-in recipes (``--config NAME``): the paper's settings, and the small CPU setting of the demo.
# The strategy readings of the paper's method as this project first ran it, pinned in the ``paper``
# recipes so that later defaults do not move them (docs/strategy.md, "Defaults and the paper's readings").
PAPER_READINGS: dict[str, Any] = {"decision": None, "scoring": "epoch_mean", "screen_keep": [],
                                  "skip_drop_prob": 0.0, "arch_loss_weight": 1.0}
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {
        "train": {"epochs": 12, "schedule": "cosine", "base_lr": 0.04, "warmup_iters": 0},
        # At 800x1333 the 32-op screening with the plain weighted sum needs 100-240 GiB a GPU
        # (docs/memory.md); recomputing the candidates in the backward pass brings it to 20-40 GiB (an
        # 80 GB GPU) for ~1.2-1.4x the step time, and the 8-op search to 12-26 GiB.
        # The paper's readings, pinned against later defaults: no op kept from screening, skip dropped
        # by drop-path 0.3 while screening.
        "strategy": {"mixed_op": "recompute", **PAPER_READINGS},
        "stages": {"screen": {"strategy": {"skip_drop_prob": 0.3}}},
    },
    "synth-cpu": {
        # The CPU-scale space (search_spaces.structure.CPU_STRUCTURE) at its own width, on 128-160 px images.
        "structure": "cpu",
        "train": {
            "epochs": 4,
            "batch_size": 4,
            "lr": 0.02,
            "schedule": "cosine",
            "warmup_iters": 20,
            "warmup_ratio": 0.1,
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
# The paper's method at the CPU scale, as the demo ran it before the CPU recipe was re-measured
# (docs/evidence.md): every reading the paper prints, pinned so that later defaults do not move it --
# α's argmax, screening by the epoch-mean column probability, the full weighted sum, no op kept from
# screening, skip dropped by drop-path while screening -- and the demo's stage sizes (screen a half-width
# proxy 4 epochs of 6 steps, search 3 epochs of 8).
RECIPES["paper-cpu"] = {
    **RECIPES["synth-cpu"],
    "strategy": {"arch_start_epoch": 1, "arch_travel": 4.4, "mixed_op": "full", **PAPER_READINGS},
    "stages": {
        "screen": {"train": {"width": 0.5, "epochs": 4, "batch_size": 4, "half_depth": True, "steps_per_epoch": 6},
                   "strategy": {"skip_drop_prob": 0.3}},
        "search": {"train": {"epochs": 3, "batch_size": 4, "steps_per_epoch": 8}},
    },
}

@dataclass
class SearchConfig:
    """One screening or search run: the weight training, the strategy, and the space.

    ``train`` and ``strategy`` are sections (:mod:`hitdet.config`): the same ``TrainConfig`` as
    ``hitdet train``'s and the strategy's own ``SearchSettings``, each checking its own ranges.

    One key per setting; two old names are accepted as aliases (``__config_aliases__``), never printed or
    recorded: ``steps_per_epoch`` is ``train.steps_per_epoch``, ``strategy.target_macs`` is ``target_macs``
    (the whole detector's MACs; the strategy's own budget of the searched positions is derived from it).
    """

    __config_aliases__: ClassVar[dict[str, str]] = {
        "steps_per_epoch": "train.steps_per_epoch", "strategy.target_macs": "target_macs"}

    detector: str = "faster_rcnn"  # a registered detector kind: "retinanet" is the one-stage variant (paper Table 6)
    structure: str = "released"  # the space's shape: "released" (the paper's) or "cpu" (small images, CPU runs)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: SearchSettings = field(default_factory=SearchSettings)  # its mode is the command's
    ops: list[str] | dict[str, list[str]] | None = None  # screen: the pool to screen (default: all 32)
    sub_spaces: str = "all"  # search: "all", "paper-neck" or a sub-spaces JSON from hitdet screen
    input_size: list[int] | None = None  # (H, W) the FLOPs penalty prices ops at; default: training size
    target_macs: float | str | None = None  # search towards this many MACs of the whole detector (3.5G or 3.5e9)
    num_rois: int | None = None  # RoIs the head's MACs are priced at; default: the test-time proposals (as info)

    def __post_init__(self) -> None:
        """The ranges of the top-level keys (the sections check their own): ``ValueError("key: why")``."""
        from search_spaces.ops import OPS
        from search_spaces.structure import STRUCTURES

        if self.detector not in detector_types():
            raise ValueError(f"detector: expected {' or '.join(map(repr, detector_types()))}, got {self.detector!r}")
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure: expected one of {', '.join(STRUCTURES)}, got {self.structure!r}")
        if self.ops is not None:
            try:
                normalize_ops(self.ops)  # the spaces' own check: known components, known and distinct ops
            except SpaceError as exc:  # "ops for COMPONENT: why" -> "ops.COMPONENT: why", naming the key path
                found = re.match(rf"ops(?: for ({'|'.join(COMPONENTS)}))?(?: for all components)?: (.*)", str(exc))
                comp, why = found.groups() if found else (None, str(exc))
                raise ValueError(f"ops{'.' + comp if comp else ''}: {why}") from None
        if self.input_size is not None and not (
                len(self.input_size) == 2 and all(isinstance(v, int) and v > 0 for v in self.input_size)):
            raise ValueError(f"input_size: expected [height, width], got {self.input_size!r}")
        if self.target_macs is not None:
            try:
                self.target_macs = parse_macs(self.target_macs)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        if self.num_rois is not None and self.num_rois < 1:
            raise ValueError(f"num_rois: expected a positive integer, got {self.num_rois!r}")
        if self.strategy.num_ops > len(OPS):  # the pool's size is the space's business, not the strategy's
            raise ValueError(f"strategy.num_ops: must be at most the {len(OPS)} ops of the pool, "
                             f"got {self.strategy.num_ops}")
        unknown = set(self.strategy.screen_components or ()) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"strategy.screen_components: unknown component {sorted(unknown)[0]!r} "
                             f"(known: {', '.join(COMPONENTS)})")

    def to_dict(self) -> dict[str, Any]:
        hidden = (*SearchSettings.__config_hidden__, "target_macs")  # the strategy's is derived from target_macs
        return {
            "detector": self.detector,
            "structure": self.structure,
            "train": self.train.to_dict(),
            # as set (None stays None: "the mode's default"), in YAML's types
            "strategy": {k: v for k, v in self.strategy.to_dict(resolved=False).items() if k not in hidden},
            "ops": self.ops,
            "sub_spaces": self.sub_spaces,
            "input_size": self.input_size,
            "target_macs": self.target_macs,
            "num_rois": self.num_rois,
        }


def load_search_config(
    mode: str, config: str | os.PathLike[str] | None = None, overrides: list[str] | None = None, *,
    flags: dict[str, tuple[str, Any]] | None = None,
) -> SearchConfig:
    """A config from a recipe name or YAML file, then ``--set section.key=value`` overrides.

    Sections: ``train`` (the keys of ``hitdet train``'s config), ``strategy`` (the strategy's
    settings), and the top-level keys ``ops``, ``sub_spaces``, ``input_size``, ``num_rois`` ...
    The search's own defaults for the weight training (cosine schedule without warm-up; the
    backbone at half depth when screening) come first, then the layers of :func:`hitdet.config.load`
    (``flags``: the command's flags, ``{"--num-ops": ("strategy.num_ops", 8)}``).

    Args:
        mode: ``"screen"`` or ``"search"``.
        config: a built-in recipe (``"paper"``, ``"synth-cpu"``), a YAML file, or None (the defaults).
        overrides: ``--set`` strings, ``["train.epochs=2", "strategy.mu=0.2"]``.
        flags: the command's flags, named by the flag in errors.

    Returns:
        The resolved, range-checked ``SearchConfig`` (``run_search``'s ``cfg``).

    Raises:
        ValueError: an unknown mode.
        UserError: an unknown recipe or key, a wrong type or a value out of range.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    base = [({"train": {"schedule": "cosine", "warmup_iters": 0, "half_depth": mode == "screen"}},
             f"{mode} defaults")]
    cfg = load(SearchConfig, recipes_for(mode), config, overrides or [], base=base, flags=flags)
    try:
        cfg.strategy = dataclasses.replace(cfg.strategy, mode=mode)
    except ValueError as exc:
        raise UserError(f"config: strategy.{exc}") from None
    return cfg


def recipes_for(mode: str) -> dict[str, dict[str, Any]]:
    """The built-in recipes as one stage sees them: each recipe's ``stages[mode]`` merged over the rest.

    Why: screening and the search are two runs of one method with different sizes (screening a
    half-width proxy of all 32 ops for a few steps, searching the sub spaces for longer); a recipe
    states both, so that ``--config NAME`` means the same method at both stages.
    """

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    return {name: merge({k: v for k, v in r.items() if k != "stages"}, r.get("stages", {}).get(mode, {}))
            for name, r in RECIPES.items()}


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


def macs_range(space: Any, fixed: float) -> tuple[float, float]:
    """MACs of the cheapest and the dearest detector of ``space``: ``fixed`` plus, at every searched position,
    its cheapest (dearest) candidate (the space's own table, at the priced input size and RoI count)."""
    table = space.candidate_macs()
    return (fixed + float(sum(min(row.values()) for row in table.values())),
            fixed + float(sum(max(row.values()) for row in table.values())))


RESUME_MAY_CHANGE = ("train.epochs",)  # --resume --epochs N extends a run; nothing else may change


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

    for comp, ops in kept.items():
        if comp not in COMPONENTS:
            raise UserError(f"{spec}: components.{comp}: unknown component (known: {', '.join(COMPONENTS)})")
        try:
            check_op_list(ops, f"components.{comp}")
        except SpaceError as exc:
            raise UserError(f"{spec}: {exc}") from None
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
    num_nodes: int = 1,
    progress: bool = True,
    callbacks: list[Any] | None = None,
    inputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one screening or search stage into the run folder ``out`` (``hitdet screen``/``hitdet search``).

    The run folder's lifecycle is :class:`hitdet.runs.Run`'s (a ``--resume`` may change only
    ``train.epochs``); this supplies the space, NNI's experiment and the results. With DDP every rank
    runs this; only rank 0 writes into ``out``.

    Args:
        mode: ``"screen"`` or ``"search"``.
        out: the run folder.
        cfg: the config (:func:`load_search_config`).
        data_dir: a COCO-layout dataset folder; default the run's own on ``resume``, else the built-in set.
        resume, force: continue the run in ``out`` / replace it.
        backbone_weights: a pretrained supernet backbone (``hitdet pretrain --space``).
        accelerator, devices, strategy, num_nodes: Lightning's (``ddp``, and ``auto`` on several nodes, becomes
            ``ddp_find_unused_parameters_true``).
        progress: show Lightning's progress bar.
        callbacks: extra Lightning callbacks (after the checkpointing one), e.g. to watch α.
        inputs: further files the caller read, by flag (``{"--config": path}``): ``out`` may not overlap them.

    Returns:
        A summary of what it wrote (paths, the kept ops or the architecture, its MACs); empty on DDP's
        extra ranks.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    with quiet_nni_import():
        import pytorch_lightning as pl

    from hitdet.data import dataset_folder, dataset_identity, load_datasets
    from hitdet.runs import Run
    from search_spaces.detectors import DetectorSettings
    from search_spaces.structure import STRUCTURES

    if strategy == "auto" and num_nodes > 1:
        strategy = "ddp"
    if strategy == "ddp":
        strategy = "ddp_find_unused_parameters_true"  # a supernet step leaves unchosen candidates without gradients
    run = Run(out, resume=resume, force=force, config=cfg.to_dict(), may_change=RESUME_MAY_CHANGE,
              canonical=lambda saved: canonical(SearchConfig, saved, "config.yaml"), accelerator=accelerator,
              devices=devices, strategy=strategy, num_nodes=num_nodes, precision=cfg.train.precision, command=mode,
              inputs={"--data": data_dir, "--backbone-weights": backbone_weights,
                      "--sub-spaces": cfg.sub_spaces if mode == "search" else None, **(inputs or {})})
    sub_spaces = resolve_sub_spaces(cfg.sub_spaces) if mode == "search" else None
    if resume and mode == "search":  # the file may have changed under the same name: the supernet would not fit
        started = run.recorded().get("sub_spaces_ops", "unrecorded")
        if started != "unrecorded" and started != sub_spaces:
            raise UserError(f"{cfg.sub_spaces}: its op lists differ from those the run started with (run.json "
                            f"sub_spaces_ops: {started}); restore the file, or start a new search (another --out)")
    settings_obj = dataclasses.replace(cfg.strategy, mode=mode)
    data_dir = dataset_folder(data_dir, run.recorded_data())
    run.add_inputs(**{"--data": data_dir})
    train_cfg = cfg.train
    train_ds, val_ds = load_datasets(data_dir, train_cfg.hflip_prob)

    pl.seed_everything(train_cfg.seed, verbose=False)  # the supernet's initial weights, too
    structure = STRUCTURES[cfg.structure]
    if train_cfg.half_depth:
        structure = structure.half_depth()
    if train_cfg.width is not None:  # a narrower (or wider) supernet, only where asked for
        structure = structure.scaled(train_cfg.width)
    categories = train_ds.categories()
    settings = train_cfg.apply_to_settings(DetectorSettings(num_classes=len(categories) + 1))
    input_size = _input_size(cfg, settings)
    num_rois = cfg.num_rois or settings.priced_rois()
    ops = sub_spaces if mode == "search" else cfg.ops
    kind = detector_kind(cfg.detector)
    structure = kind.search_structure(structure)  # retinanet: the named structure's head blocks per tower
    with quiet_nni_import():
        space = kind.search_space(structure, ops, settings, input_size=input_size, num_rois=num_rois)
    if cfg.target_macs is not None:
        if mode != "search":
            raise UserError("target_macs: a MACs budget applies to the search, not to screening")
        fixed = fixed_macs(space, structure, settings, cfg.detector)
        floor, ceiling = macs_range(space, fixed)
        g = lambda v: f"{v / 1e9:.4g} G"  # noqa: E731
        if cfg.target_macs < floor:
            raise UserError(f"target_macs: {g(cfg.target_macs)} is below the reachable floor: the cheapest detector "
                            f"of these sub spaces spends {g(floor)} (the dearest {g(ceiling)}; {g(fixed)} of it "
                            f"outside the searched positions)")
        if cfg.target_macs > ceiling:
            raise UserError(f"target_macs: {g(cfg.target_macs)} is above the reachable ceiling: the dearest detector "
                            f"of these sub spaces spends {g(ceiling)} (the cheapest {g(floor)})")
        settings_obj = dataclasses.replace(settings_obj, target_macs=cfg.target_macs - fixed)
    report = None
    if backbone_weights is not None:
        from hitdet.weights.backbone import load_backbone_weights

        report = load_backbone_weights(space, backbone_weights)

    with run:
        if report is not None:
            run.say(report.summary())
        run.record(data=str(data_dir.resolve()), mode=mode, dataset=dataset_identity(data_dir, (train_ds, val_ds)),
                   sub_spaces_ops=sub_spaces)  # a resume checks the file still holds these
        trainer, strat = _run_experiment(run, cfg, space, settings_obj, sub_spaces, train_ds, progress=progress,
                                         callbacks=callbacks)
        if not trainer.is_global_zero:
            return {}
        return _write_results(mode, run.out, cfg, strat, structure, settings, categories)


def _run_experiment(
    run: Any, cfg: SearchConfig, space: Any, settings_obj: Any, sub_spaces: Any, train_ds: Any, *,
    progress: bool, callbacks: list[Any] | None,
) -> tuple[Any, Any]:
    """Build the Trainer and NNI's one-shot experiment, and run it (every rank)."""
    import pytorch_lightning as pl
    from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
    from nni.nas.experiment import NasExperiment
    from pytorch_lightning.callbacks import LearningRateMonitor

    from hitdet.data import collate
    from hitdet.training.module import DetectionModule
    from strategies import HitDetStrategy

    train_cfg = cfg.train
    pl.seed_everything(train_cfg.seed, verbose=False)
    keep = train_cfg.keep_checkpoints  # a 32-op epoch checkpoint is ~90 MB: keep the newest few, as train does
    checkpoints = run.checkpoints(
        filename="epoch{epoch:03d}", auto_insert_metric_name=False, save_top_k=keep,
        monitor="step" if keep != -1 else None, mode="max", save_last=True, every_n_epochs=1,
    )
    trainer = run.trainer(
        callbacks=[checkpoints, LearningRateMonitor(logging_interval="step"), *(callbacks or [])],
        progress=progress,
        trainer_class=Trainer,
        max_epochs=train_cfg.epochs,
        limit_val_batches=0,
        limit_train_batches=train_cfg.steps_per_epoch or 1.0,
        log_every_n_steps=1,
        log_every=train_cfg.log_every_n_steps,
    )
    loader = DataLoader(
        train_ds, batch_size=train_cfg.batch_size, shuffle=True, collate_fn=collate, num_workers=train_cfg.num_workers
    )
    evaluator = Lightning(
        DetectionModule(config=train_cfg),
        trainer,
        train_dataloaders=loader,
        fit_kwargs={"ckpt_path": str(run.last_checkpoint)} if run.resume else None,
    )
    strat = HitDetStrategy.from_settings(settings_obj, sub_spaces=sub_spaces)
    # NNI's log: its start-up chatter ("Config is not provided. Will try to infer.", logged while the
    # experiment is built) is noise for a one-shot run, and so are its ERROR lines when the run stops
    # ("Model 1 fails to be executed."): hitdet reports every stop itself, in one line (hitdet.runs).
    nni_logger = logging.getLogger("nni")
    level = nni_logger.level
    nni_logger.setLevel(logging.CRITICAL)
    scratch = None
    try:
        experiment = NasExperiment(space, evaluator, strat)
        # NNI writes an experiment folder in every process; DDP's extra ranks put theirs in a
        # throw-away folder, so that only rank 0 writes into the run.
        scratch = tempfile.TemporaryDirectory(prefix="hitdet-nni-rank-") if run.child else None
        experiment.config.experiment_working_directory = scratch.name if scratch else str((run.out / "nni").resolve())
        with run.fitting():
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
    num_rois = cfg.num_rois or settings.priced_rois()
    result = strat.export_result()
    write_json_atomic(out / "sample.json", result.sample)
    write_json_atomic(out / "metadata.json", result.metadata)
    summary: dict[str, Any] = {"mode": mode, "out": str(out), "sample": str(out / "sample.json")}
    if mode == "screen":
        summary["sub_spaces"] = str(write_json_atomic(out / "subspaces.json", result.sub_spaces.to_dict()))
        summary["kept"] = {c: list(v) for c, v in result.sub_spaces.kept.items()}
    else:
        metadata = {**result.metadata, "categories": categories}
        if train_cfg.width is not None:  # the JSON states the scaled channels; this says where they came from
            metadata["width"] = {"multiplier": train_cfg.width, "of": f"structure {cfg.structure}", "by": "train.width"}
        arch = Architecture.from_sample(result.sample, structure, settings, name=f"hitdet-{out.name}",
                                        detector_type=cfg.detector, metadata=metadata)
        summary["architecture"] = str(arch.save(out / "architecture.json"))
        summary["macs"] = result.metadata.get("macs", {})
        from search_spaces.costs import detector_cost

        cost = detector_cost(structure, arch.sample(), settings.num_classes, input_size, num_rois, cfg.detector)
        summary["detector"] = {
            "macs": cost["total"].macs, "params": cost["total"].params, "input_size": list(input_size),
            "num_rois": num_rois, "target_macs": cfg.target_macs, "target_tolerance": cfg.strategy.target_tolerance,
            "chosen": {c: [op for label, op in arch.sample().items() if label.startswith(c + "/")]
                       for c in COMPONENTS},
            "decisiveness": result.metadata.get("decisiveness"),
        }
    return summary
