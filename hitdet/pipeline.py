"""``hitdet pipeline``: the whole Hit-Detector pipeline on any COCO-layout folder.

data check -> screen (32 ops -> per-component sub spaces) -> trinity search with the FLOPs
penalty -> architecture JSON -> retrain -> COCO evaluation, and, when asked, the in-space hand
pick trained and evaluated by the same recipe beside it (``--baseline``), so that every user sees
on their own data whether the search paid off. Every stage calls the same code as its own command
(``hitdet data check``, ``screen``, ``search``, ``train``, ``eval``), each into a sub-folder of
the run. ``hitdet demo`` is exactly this on the built-in synthetic set.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hitdet.errors import UserError
from hitdet.io import write_json_atomic
from search_spaces.positions import COMPONENTS

# The CPU recipe's stage sizes, the demo's (about ten minutes on 2 CPU cores at 128-160 px): screening runs
# all 32 ops at every position, so it screens a half-width, half-depth proxy of the space for a few steps (ops
# are ranked, not trained for keeps, as the paper screened a half-depth supernet for memory); the search runs
# the screened 8-op sub spaces at the space's own width; the searched detector is retrained at the channels
# its JSON states. Other recipes (``paper``, a YAML file) run at their own sizes.
CPU_STAGES: dict[str, list[str]] = {
    "screen": ["train.width=0.5", "train.epochs=4", "train.batch_size=4", "train.half_depth=true",
               "strategy.arch_start_epoch=1", "train.steps_per_epoch=6"],
    "search": ["train.epochs=3", "train.batch_size=4", "strategy.arch_start_epoch=1", "train.steps_per_epoch=8"],
    "train": ["epochs=12", "milestones=[9, 11]"],
}


@dataclass
class PipelineSettings:
    """The stages' settings: ``recipe`` for every stage, then each stage's ``--set`` overrides on top.

    With the ``synth-cpu`` recipe the stages first get :data:`CPU_STAGES` (the demo's sizes); any other
    recipe runs at its own sizes.

    Args:
        recipe: a recipe name (``hitdet search --config``'s) or a YAML file, for all three stages.
        screen, search, train: ``--set`` overrides of each stage (``train`` takes ``hitdet train``'s keys),
            applied after the recipe and its stage sizes.
        baseline: a hand pick of :data:`search_spaces.hand_picks.HAND_PICKS` to train and evaluate
            beside the searched detector with the same recipe, or None.
    """

    recipe: str = "synth-cpu"
    screen: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)
    baseline: str | None = None

    def __post_init__(self) -> None:
        from search_spaces.hand_picks import HAND_PICKS

        if self.baseline is not None and self.baseline not in HAND_PICKS:
            raise UserError(f"--baseline: unknown hand pick {self.baseline!r} (known: {', '.join(HAND_PICKS)})")

    def sets(self, stage: str) -> list[str]:
        """The ``--set`` overrides of ``stage`` as run: the CPU stage sizes for ``synth-cpu``, then the stage's own."""
        return [*(CPU_STAGES[stage] if self.recipe == "synth-cpu" else []), *getattr(self, stage)]


def _stage(name: str, timings: dict[str, float], fn: Callable[[], Any]) -> Any:
    print(f"\n=== {name} ===", flush=True)
    start = time.perf_counter()
    result = fn()
    timings[name] = time.perf_counter() - start
    print(f"=== {name}: {timings[name]:.0f} s ===", flush=True)
    return result


def configs(settings: PipelineSettings) -> tuple[Any, Any, Any]:
    """(screen, search, train) configs, checked before anything is written (the search's sub spaces come later)."""
    from hitdet.searching import load_search_config
    from hitdet.training.config import load_config

    return (load_search_config("screen", settings.recipe, settings.sets("screen")),
            load_search_config("search", settings.recipe, settings.sets("search")),
            load_config(settings.recipe, settings.sets("train")))


def run_pipeline(data: str | os.PathLike[str], out: str | os.PathLike[str], settings: PipelineSettings | None = None,
                 force: bool = False, progress: bool = True, title: str = "pipeline") -> dict[str, Any]:
    """Run every stage on ``data`` into ``out`` (``hitdet pipeline``), each into a sub-folder of its own.

    Args:
        data: a COCO-layout dataset folder (``train/``, ``val/``, ``annotations/instances_{train,val}.json``).
        out: the run folder (:class:`hitdet.runs.Run`: checked, locked, replaced with ``force``).
        settings: the stages' settings (default :class:`PipelineSettings`, the demo's sizes).
        force: replace a non-empty ``out``.
        progress: show progress bars.
        title: the summary's heading.

    Returns:
        The summary also written to ``out/summary.json``: sub spaces, architecture, parameters, MACs, AP,
        the baseline's when asked, times, artefacts.
    """
    from hitdet.runs import Run

    settings = settings or PipelineSettings()
    configs(settings)  # a bad recipe or key: one line before the run folder is touched
    with Run(out, force=force, command="pipeline", inputs={"--data": data, "--config": settings.recipe}) as run:
        return run_stages(Path(data), run.out, settings, progress, title=title)


def _check_data(data: Path) -> dict[str, int]:
    from hitdet.data import load_split

    counts = {}
    for split in ("train", "val"):
        ds = load_split(data, split)
        ds.verify_images()
        counts[split] = len(ds)
        print(f"{split}: {len(ds)} images, {ds.num_classes} categories, "
              f"{sum(len(t['labels']) for t in ds._targets)} boxes", flush=True)
    return counts


def _evaluate(run: Path, evals: Path, data: Path, cfg: Any) -> tuple[dict[str, Any], Any]:
    """Evaluate the best weights of the trained run ``run`` on val into ``evals``: (metrics, trained arch)."""
    from hitdet.architecture import architecture_categories, load_architecture
    from hitdet.builder import build_detector
    from hitdet.data import load_split
    from hitdet.evaluation import coco_evaluate, predict
    from hitdet.weights.detector import load_weights

    trained = load_architecture(run / "architecture.json")
    ds = load_split(data, "val", categories=architecture_categories(trained))
    model = load_weights(build_detector(trained), run / "best.pt")
    detections = predict(model, ds, batch_size=cfg.eval_batch_size)
    metrics = coco_evaluate(ds.coco, detections)
    write_json_atomic(evals / "detections.json", detections)
    write_json_atomic(evals / "metrics.json", {"metrics": metrics, "images": len(ds)})
    return metrics, trained


def _row(arch: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    from hitdet.arch_cost import architecture_cost

    cost, size, rois = architecture_cost(arch)  # as hitdet info counts it
    return {"architecture": arch.sample(), "params": cost["total"].params, "macs": cost["total"].macs,
            "macs_input": list(size), "macs_rois": rois, "AP": metrics["AP"], "AP50": metrics["AP50"]}


def run_stages(data: Path, out: Path, s: PipelineSettings, progress: bool, title: str = "pipeline",
               timings: dict[str, float] | None = None) -> dict[str, Any]:
    """The stages, each into its own sub-folder of ``out`` (which the caller locked and emptied)."""
    from hitdet.architecture import Architecture, load_architecture
    from hitdet.searching import load_search_config, run_search
    from hitdet.training.runner import train
    from search_spaces.hand_picks import hand_pick

    timings = timings if timings is not None else {}
    screen_cfg, _, train_cfg = configs(s)
    _stage("check", timings, lambda: _check_data(data))
    screen = _stage("screen", timings, lambda: run_search("screen", out / "screen", screen_cfg, data,
                                                          progress=progress))
    search_cfg = load_search_config("search", s.recipe, [*s.sets("search"), f"sub_spaces={screen['sub_spaces']}"])
    search = _stage("search", timings, lambda: run_search("search", out / "search", search_cfg, data,
                                                          progress=progress))
    arch = load_architecture(search["architecture"])
    _stage("train", timings, lambda: train(arch, out / "train", train_cfg, data, progress=progress))
    metrics, trained = _stage("eval", timings, lambda: _evaluate(out / "train", out / "eval", data, train_cfg))
    summary: dict[str, Any] = {"title": title, "data": str(data), "recipe": str(s.recipe),
                               "sub_spaces": screen["kept"], **_row(trained, metrics),
                               "decisiveness": arch.metadata.get("decisiveness")}
    if s.baseline:
        picked = Architecture.from_sample(hand_pick(s.baseline, arch.structure), arch.structure, arch.settings,
                                          name=f"hand pick {s.baseline}")
        picked = dataclasses.replace(picked, metadata={"hand_pick": s.baseline})
        base = out / "baseline"
        _stage("baseline train", timings, lambda: train(picked, base / "train", train_cfg, data, progress=progress))
        b_metrics, b_trained = _stage("baseline eval", timings, lambda: _evaluate(
            base / "train", base / "eval", data, train_cfg))
        summary["baseline"] = {"name": s.baseline, **_row(b_trained, b_metrics)}
    summary["seconds"] = timings
    summary["artefacts"] = {
        "data": str(data),
        "sub_spaces": screen["sub_spaces"],
        "architecture": search["architecture"],
        "trained_weights": str(out / "train" / "best.pt"),
        "metrics": str(out / "eval" / "metrics.json"),
        **({"baseline_metrics": str(out / "baseline" / "eval" / "metrics.json")} if s.baseline else {}),
        "tensorboard": [str(out / d / "tensorboard") for d in ("screen", "search", "train")],
    }
    write_json_atomic(out / "summary.json", summary)
    print_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """The summary as text: sub spaces, searched ops, cost, AP (and the hand pick's), times, artefacts."""
    print("\n" + "=" * 72)
    print(f"Hit-Detector {summary.get('title', 'pipeline')}: summary")
    print("=" * 72)
    for comp, ops in summary["sub_spaces"].items():
        print(f"sub space {comp:<9} {', '.join(ops)}")
    arch = summary["architecture"]
    for comp in COMPONENTS:
        ops = [op for label, op in arch.items() if label.startswith(comp + "/")]
        print(f"searched {comp:<10} {' '.join(ops)}")
    h, w = summary["macs_input"]
    print(f"MACs priced at     {h}x{w} input, {summary['macs_rois']} RoIs (as hitdet info)")
    from strategies.export import describe_decisiveness

    text = describe_decisiveness(summary.get("decisiveness") or {})
    if text:
        print(f"alpha              {text}")
    rows = [("searched", summary)]
    if summary.get("baseline"):
        rows.append((f"hand pick {summary['baseline']['name']}", summary["baseline"]))
    print(f"{'detector':<26} {'params':>9} {'GMACs':>7} {'AP':>6} {'AP50':>6}")
    for name, row in rows:
        print(f"{name:<26} {row['params'] / 1e6:>8.3f}M {row['macs'] / 1e9:>7.3f} {row['AP']:>6.3f} "
              f"{row['AP50']:>6.3f}")
    if summary.get("baseline"):
        b = summary["baseline"]
        verdict = ("the search paid off" if summary["AP"] >= b["AP"] and summary["macs"] <= b["macs"] else
                   "the hand pick is at least as good for no more MACs: the search did not pay off on this run"
                   if b["AP"] >= summary["AP"] and b["macs"] <= summary["macs"] else "a trade-off (AP vs MACs)")
        print(f"verdict            {verdict} (one training seed: see docs/evidence.md for the protocol)")
    total = sum(summary["seconds"].values())
    print("time               " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["seconds"].items())
          + f" (total {total / 60:.1f} min)")
    print("artefacts")
    for key, value in summary["artefacts"].items():
        print(f"  {key:<16} {', '.join(value) if isinstance(value, list) else value}")
