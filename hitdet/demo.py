"""``hitdet demo``: the whole Hit-Detector pipeline on the built-in synthetic dataset.

data -> screen (32 ops -> per-component sub spaces) -> trinity search with the FLOPs penalty
-> architecture JSON -> retrain -> COCO evaluation. Every stage calls the same code as its
own command (``hitdet data synth``, ``screen``, ``search``, ``train``, ``eval``) with small
settings (the ``synth-cpu`` recipes plus the overrides below), so that it fits in about ten
minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hitdet.io import write_json_atomic
from search_spaces.positions import COMPONENTS


@dataclass
class DemoSettings:
    """The demo's sizes: each list is ``--set`` overrides on top of the stage's synth-cpu recipe."""

    seed: int = 0
    train_images: int = 320
    val_images: int = 80
    # Screening runs all 32 ops at every position: on 2 CPU cores the demo screens a half-width proxy of the
    # CPU-scale space (ops are ranked, not trained for keeps), then searches the screened 8-op sub spaces at
    # the space's own width, as the paper screened a half-depth supernet for memory.
    screen: list[str] = field(
        default_factory=lambda: [
            "train.width=0.5",
            "train.epochs=4",
            "train.batch_size=4",
            "train.half_depth=true",
            "strategy.arch_start_epoch=1",
            "train.steps_per_epoch=6",
        ]
    )
    search: list[str] = field(
        default_factory=lambda: [
            "train.epochs=3",
            "train.batch_size=4",
            "strategy.arch_start_epoch=1",
            "train.steps_per_epoch=8",
        ]
    )
    # the searched architecture is retrained at the channels its JSON states; 12 epochs keep the demo near ten
    # minutes on 2 cores
    train: list[str] = field(default_factory=lambda: ["epochs=12", "milestones=[9, 11]"])


def _stage(name: str, timings: dict[str, float], fn: Callable[[], Any]) -> Any:
    print(f"\n=== {name} ===", flush=True)
    start = time.perf_counter()
    result = fn()
    timings[name] = time.perf_counter() - start
    print(f"=== {name}: {timings[name]:.0f} s ===", flush=True)
    return result


def run_demo(out: str | Path, force: bool = False, settings: DemoSettings | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run every stage into ``out`` (``hitdet demo``), each into a run folder of its own under it.

    Args:
        out: the demo's folder (:class:`hitdet.runs.Run`: checked, locked, replaced with ``force``).
        force: replace a non-empty ``out``.
        settings: the stages' sizes (default :class:`DemoSettings`).
        progress: show Lightning's progress bars.

    Returns:
        The summary also written to ``out/summary.json``: sub spaces, architecture, parameters, MACs, AP, times.
    """
    from hitdet.runs import Run

    with Run(out, force=force, command="demo") as run:
        return _run_stages(run.out, settings or DemoSettings(), progress)


def _run_stages(out: Path, s: DemoSettings, progress: bool) -> dict[str, Any]:
    """The demo's stages, each into its own sub-folder of ``out`` (which the caller locked and emptied)."""
    from hitdet.arch_cost import architecture_cost
    from hitdet.architecture import architecture_categories, load_architecture
    from hitdet.builder import build_detector
    from hitdet.data import SynthSpec, load_split, write_synthetic
    from hitdet.evaluation import coco_evaluate, predict
    from hitdet.searching import load_search_config, run_search
    from hitdet.training.config import load_config
    from hitdet.training.runner import train
    from hitdet.weights.detector import load_weights

    timings: dict[str, float] = {}
    data = out / "data"

    _stage("data", timings, lambda: write_synthetic(data, SynthSpec(seed=s.seed, num_train=s.train_images,
                                                                     num_val=s.val_images)))
    screen_cfg = load_search_config("screen", "synth-cpu", s.screen)
    screen = _stage("screen", timings, lambda: run_search("screen", out / "screen", screen_cfg, data,
                                                          progress=progress))
    search_cfg = load_search_config("search", "synth-cpu", [*s.search, f"sub_spaces={screen['sub_spaces']}"])
    search = _stage("search", timings, lambda: run_search("search", out / "search", search_cfg, data,
                                                          progress=progress))
    arch = load_architecture(search["architecture"])
    train_cfg = load_config("synth-cpu", s.train)
    trained = _stage("train", timings, lambda: train(arch, out / "train", train_cfg, data, progress=progress))

    def evaluate() -> dict[str, float]:
        trained_arch = load_architecture(out / "train" / "architecture.json")
        ds = load_split(data, "val", categories=architecture_categories(trained_arch))
        model = load_weights(build_detector(trained_arch), out / "train" / "best.pt")
        detections = predict(model, ds, batch_size=train_cfg.eval_batch_size)
        metrics = coco_evaluate(ds.coco, detections)
        write_json_atomic(out / "eval" / "detections.json", detections)
        write_json_atomic(out / "eval" / "metrics.json", {"metrics": metrics, "images": len(ds)})
        return metrics

    metrics = _stage("eval", timings, evaluate)
    trained_arch = load_architecture(out / "train" / "architecture.json")
    cost, size, rois = architecture_cost(trained_arch)  # as hitdet info counts it
    summary = {
        "sub_spaces": screen["kept"],
        "architecture": trained_arch.sample(),
        "params": cost["total"].params,
        "macs": cost["total"].macs,
        "macs_input": list(size),
        "macs_rois": rois,
        "decisiveness": arch.metadata.get("decisiveness"),
        "AP": metrics["AP"],
        "AP50": metrics["AP50"],
        "seconds": timings,
        "artefacts": {
            "data": str(data),
            "sub_spaces": screen["sub_spaces"],
            "architecture": search["architecture"],
            "trained_weights": str(out / "train" / "best.pt"),
            "metrics": str(out / "eval" / "metrics.json"),
            "tensorboard": [str(out / d / "tensorboard") for d in ("screen", "search", "train")],
        },
        "best_epoch": (trained.get("best") or {}).get("epoch"),
    }
    write_json_atomic(out / "summary.json", summary)
    print_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print("\n" + "=" * 72)
    print("Hit-Detector demo: summary")
    print("=" * 72)
    for comp, ops in summary["sub_spaces"].items():
        print(f"sub space {comp:<9} {', '.join(ops)}")
    arch = summary["architecture"]
    for comp in COMPONENTS:
        ops = [op for label, op in arch.items() if label.startswith(comp + "/")]
        print(f"searched {comp:<10} {' '.join(ops)}")
    h, w = summary["macs_input"]
    print(f"parameters         {summary['params'] / 1e6:.3f} M")
    print(f"MACs               {summary['macs'] / 1e9:.3f} G (multiply-accumulates, {h}x{w} input, "
          f"{summary['macs_rois']} RoIs)")
    from strategies.export import describe_decisiveness

    text = describe_decisiveness(summary.get("decisiveness") or {})
    if text:
        print(f"alpha              {text}")
    print(f"AP / AP50 (val)    {summary['AP']:.3f} / {summary['AP50']:.3f}")
    total = sum(summary["seconds"].values())
    print("time               " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["seconds"].items())
          + f" (total {total / 60:.1f} min)")
    print("artefacts")
    for key, value in summary["artefacts"].items():
        print(f"  {key:<16} {', '.join(value) if isinstance(value, list) else value}")
