"""``hitdet demo``: the pipeline (:mod:`hitdet.pipeline`) on the built-in synthetic dataset.

data -> check -> screen (32 ops -> per-component sub spaces) -> trinity search with the FLOPs
penalty -> architecture JSON -> retrain -> COCO evaluation: exactly ``hitdet pipeline`` on a set
it writes first, at the pipeline's default sizes (the ``synth-cpu`` recipe, about ten minutes on
2 CPU cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hitdet.pipeline import PipelineSettings, _stage, print_summary, run_stages

__all__ = ["DemoSettings", "print_summary", "run_demo"]


@dataclass
class DemoSettings(PipelineSettings):
    """The pipeline's settings plus the built-in dataset's size and seed.

    Args:
        seed: the synthetic dataset's seed.
        train_images, val_images: its size.
    """

    seed: int = 0
    train_images: int = 320
    val_images: int = 80


def run_demo(out: str | Path, force: bool = False, settings: DemoSettings | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Write the built-in dataset to ``out/data``, then run the pipeline on it into ``out`` (``hitdet demo``).

    Args:
        out: the demo's folder (:class:`hitdet.runs.Run`: checked, locked, replaced with ``force``).
        force: replace a non-empty ``out``.
        settings: the stages' sizes (default :class:`DemoSettings`).
        progress: show progress bars.

    Returns:
        The summary also written to ``out/summary.json``: sub spaces, architecture, parameters, MACs, AP, times.
    """
    from hitdet.data import SynthSpec, write_synthetic
    from hitdet.pipeline import configs
    from hitdet.runs import Run

    s = settings or DemoSettings()
    configs(s)  # a bad recipe or key: one line before the folder is touched
    with Run(out, force=force, command="demo") as run:
        timings: dict[str, float] = {}
        data = run.out / "data"
        _stage("data", timings, lambda: write_synthetic(data, SynthSpec(seed=s.seed, num_train=s.train_images,
                                                                         num_val=s.val_images)))
        return run_stages(data, run.out, s, progress, title="demo", timings=timings)
