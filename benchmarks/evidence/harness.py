"""Does the search beat chance, and the detectors anyone could pick by hand? The evidence harness.

    OMP_NUM_THREADS=1 python -m benchmarks.evidence --dataset photos --out runs/evidence-photos
    OMP_NUM_THREADS=1 python -m benchmarks.evidence --dataset shapes --out runs/evidence-shapes
    python -m benchmarks.evidence --dataset photos --out runs/ev-quick --scale quick     # smoke run, minutes

The protocol (Yang et al., "NAS evaluation is frustratingly hard", ICLR 2020; Lindauer & Hutter's
NAS best-practice checklist), per dataset, every stage cached in OUT so a rerun resumes:

1. **data**: the dataset generated into OUT/data (``photos``: real objects on real photographs;
   ``shapes``: the demo's set).
2. **learning rates**: for each family (detectors of our space, probed with the ``--probes`` hand
   picks, a shallow and a deep one by default; the torchvision hand-made detector) a sweep over
   ``--lrs`` on a held-out fifth of train, trained on the other four fifths with the full recipe;
   each family then trains at the lr of its best mean AP over its probes.
3. **searches**: for each search seed, the whole pipeline (``hitdet screen`` then ``hitdet search``,
   the same code) of every ``--variants`` recipe, and its *penalty-only* control: the same run
   with the detection loss cut from the architecture step (``strategy.arch_loss_weight=0``), so
   whatever it picks, the FLOPs penalty and the screening regulariser picked.
4. **rows**, each trained by one recipe (:func:`benchmarks.evidence.rows.train_row`, validation every
   epoch, the last epoch's AP reported): the in-space hand picks, the torchvision hand-made detector
   at the MACs of the ``stage-ir`` pick, each search seed's detector, each control's, and K random
   samples of the first seed's sub spaces at that seed's MACs (rejection sampling; the rejections
   are counted); every row with every training seed except the random samples, which take the
   training seeds in turn (K distinct detectors tell more about chance than K/2 trained twice).
5. **report** (OUT/report.md, report.json, curves.png): every row's AP with its curve and whether
   the curve levelled off; paired differences with 95 % bootstrap intervals; how often independent
   search seeds agree per position against chance and against the control; α's decisiveness next to
   what pure noise gives for it. MACs are priced at one RoI count everywhere (the test-time
   proposals, as ``hitdet info``), stated in the report.

Two processes at a time (``--jobs``), one torch thread each.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hitdet.errors import UserError
from hitdet.io import read_json_or_none, write_json_atomic
from hitdet.pipeline import CPU_STAGES

STYLES = ("photos", "shapes", "glyphs")


@dataclass
class Scale:
    """Sizes of one harness run: data, seeds, K, and ``--set`` overrides on top of the recipes."""

    train_images: dict[str, int]
    val_images: dict[str, int]
    k: int = 8
    search_seeds: tuple[int, ...] = (0, 1, 2)
    train_seeds: tuple[int, ...] = (0, 1)
    screen: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)
    lrs: tuple[float, ...] = (0.01, 0.02, 0.04)
    accelerator: str = "cpu"
    max_tries: int = 20000


# The demo's stage settings (hitdet.pipeline.CPU_STAGES): screen a half-width proxy, 4 epochs of 6 steps;
# search 3 epochs of 8 steps; every row retrained by the synth-cpu recipe at the space's own width.
_CPU_SCREEN = list(CPU_STAGES["screen"])
_CPU_SEARCH = list(CPU_STAGES["search"])
SCALES: dict[str, Scale] = {
    "cpu": Scale(train_images={"photos": 480, "shapes": 320, "glyphs": 320},
                 val_images={"photos": 120, "shapes": 80, "glyphs": 80},
                 screen=_CPU_SCREEN, search=_CPU_SEARCH,
                 train=list(CPU_STAGES["train"])),
    # one GPU: the released structure at 1/4 width on 256-px inputs, more data and epochs
    "gpu": Scale(train_images={"photos": 2000, "shapes": 2000, "glyphs": 2000},
                 val_images={"photos": 400, "shapes": 400, "glyphs": 400}, accelerator="gpu",
                 screen=["structure=released", "train.width=0.25", "train.epochs=8", "strategy.arch_start_epoch=3",
                         "train.half_depth=true"],
                 search=["structure=released", "train.width=0.25", "train.epochs=8", "strategy.arch_start_epoch=3"],
                 train=["epochs=24", "milestones=[18, 22]"]),
    # a smoke run of every stage: tiny data, one epoch, K = 2, two seeds
    "quick": Scale(train_images={"photos": 24, "shapes": 24, "glyphs": 24},
                   val_images={"photos": 8, "shapes": 8, "glyphs": 8}, k=2, search_seeds=(0, 1), train_seeds=(0,),
                   screen=["train.width=0.5", "train.epochs=1", "train.half_depth=true", "strategy.arch_start_epoch=0",
                           "steps_per_epoch=2"],
                   search=["train.epochs=1", "strategy.arch_start_epoch=0", "steps_per_epoch=2"],
                   train=["epochs=2", "warmup_iters=2", "milestones=[2]"], lrs=(0.02,), max_tries=2000),
}
# Letters are not mirror-symmetric: a flipped R is no R. The photos set trains (and searches) without flips.
DATASET_TRAIN = {"photos": ["hflip_prob=0.0"], "shapes": [], "glyphs": []}
DATASET_SEARCH = {"photos": ["train.hflip_prob=0.0"], "shapes": [], "glyphs": []}
# Named search variants: (recipe or None for --recipe, --set overrides of both stages). Any other name is a recipe.
VARIANTS: dict[str, tuple[str | None, list[str]]] = {
    "default": (None, []),
    "lambda0": (None, ["strategy.penalty_lambda=0"]),  # the detection loss alone decides
}
FAMILIES = ("space", "torchvision")
PROBES = ("stage-ir", "backbone-ir")  # the lr probes of our space: a shallow and a deep member
CONTROL = "penalty-only"


# ----------------------------------------------------------------------------- jobs (run in worker processes)


def _init_worker() -> None:
    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    import pytorch_lightning  # noqa: F401  (it sets its loggers' level on import: quieten them after)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "nni"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _train_config(spec: dict[str, Any]) -> Any:
    from hitdet.training.config import load_config

    return load_config(spec["recipe"], spec["train_set"])


def _build(spec: dict[str, Any], categories: list[dict[str, Any]], cfg: Any) -> Any:
    """The row's model factory: an architecture sample of the search's structure, or the torchvision hand-made."""
    from hitdet.architecture import Architecture
    from hitdet.builder import build_detector
    from hitdet.training.runner import prepare_architecture
    from search_spaces.detectors import DetectorSettings
    from search_spaces.structure import STRUCTURES

    settings = cfg.apply_to_settings(DetectorSettings(num_classes=len(categories) + 1))
    if spec["kind"] == "torchvision":
        from benchmarks.evidence.handmade import BaselineConfig, build_baseline

        base = BaselineConfig(**{**spec["handmade"], "stages": tuple(map(tuple, spec["handmade"]["stages"]))})
        skip = ("num_classes", "anchor_base", "sampling_ratio")
        rcnn = {k: v for k, v in settings.to_dict().items() if k not in skip}
        return lambda: build_baseline(base, settings.num_classes, anchor_base=settings.anchor_base,
                                      sampling_ratio=settings.sampling_ratio, **rcnn)
    arch = Architecture.from_sample(spec["sample"], STRUCTURES[spec["structure"]], settings, name=spec["name"])
    arch = prepare_architecture(arch, categories, cfg)
    return lambda: build_detector(arch)


def job_train(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one row (or one learning-rate probe) and write its result to ``spec["path"]``."""
    from benchmarks.evidence.rows import train_row
    from hitdet.training.runner import load_datasets

    cfg = _train_config(spec)
    train_ds, val_ds = load_datasets(Path(spec["data"]), cfg)
    build = _build(spec, train_ds.categories(), cfg)
    row = {k: v for k, v in spec.items() if k not in ("path",)}
    row.update(train_row(build, cfg, train_ds, val_ds, spec.get("accelerator", "cpu")))
    write_json_atomic(spec["path"], row)
    return row


def job_search(spec: dict[str, Any]) -> dict[str, Any]:
    """Screen then search one seed of one variant (each stage reused when its result exists)."""
    import contextlib
    import io

    from hitdet.searching import load_search_config, run_search

    folder = Path(spec["folder"])
    seed = [f"train.seed={spec['seed']}"]
    sub_file = folder / "screen" / "subspaces.json"
    t0 = time.perf_counter()
    quiet = contextlib.redirect_stdout(io.StringIO())
    if not sub_file.is_file():
        cfg = load_search_config("screen", spec["recipe"], [*spec["screen"], *seed])
        with quiet:
            run_search("screen", folder / "screen", cfg, spec["data"], force=True, accelerator=spec["accelerator"],
                       progress=False)
    t1 = time.perf_counter()
    arch_file = folder / "search" / "architecture.json"
    if not arch_file.is_file():
        cfg = load_search_config("search", spec["recipe"], [*spec["search"], *seed, f"sub_spaces={sub_file}"])
        with contextlib.redirect_stdout(io.StringIO()):
            run_search("search", folder / "search", cfg, spec["data"], force=True, accelerator=spec["accelerator"],
                       progress=False)
    result = {"seed": spec["seed"], "variant": spec["variant"], "screen_seconds": t1 - t0,
              "search_seconds": time.perf_counter() - t1}
    write_json_atomic(folder / "done.json", result)
    return result


def choose_lrs(results: list[dict[str, Any]]) -> dict[str, float]:
    """Each family's learning rate: the best mean AP over its probes (ties: the one nearer 0.02).

    Args:
        results: sweep runs, each with ``family``, ``probe``, ``lr`` and ``AP``.
    """
    best = {}
    for family in FAMILIES:
        by_lr: dict[float, list[float]] = {}
        for r in results:
            if r["family"] == family:
                by_lr.setdefault(r["lr"], []).append(r["AP"])
        best[family] = max(by_lr, key=lambda lr: (sum(by_lr[lr]) / len(by_lr[lr]), -abs(math.log(lr / 0.02))))
    return best


# ----------------------------------------------------------------------------- the harness


class Harness:
    """One dataset's evidence: the stages of the module docstring, cached in ``out``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.scale = SCALES[args.scale]
        self.dataset = args.dataset
        self.search_seeds = tuple(args.search_seeds) if args.search_seeds else self.scale.search_seeds
        self.train_seeds = tuple(args.train_seeds) if args.train_seeds else self.scale.train_seeds
        self.k = args.k if args.k is not None else self.scale.k
        # --variant NAME[=RECIPE]:KEY=VALUE,... defines a variant; --variants lists the ones to run
        self.defined: dict[str, tuple[str | None, list[str]]] = {}
        for spec in args.variant:
            head, _, rest = spec.partition(":")
            name, _, recipe = head.partition("=")
            self.defined[name] = (recipe or None, [kv for kv in rest.split(",") if kv])
        self.variants = args.variants or list(self.defined) or ["default"]
        self.control = f"{self.variants[0]}-{CONTROL}"
        self.train_set = [*self.scale.train, *DATASET_TRAIN.get(self.dataset, []), *args.train_set]
        self.log = open(self.out / "harness.log", "a") if self.out.is_dir() else None  # noqa: SIM115

    # -- helpers ----------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        if self.log is not None:
            self.log.write(line + "\n")
            self.log.flush()

    def run_jobs(self, fn: Any, specs: list[dict[str, Any]], what: str) -> None:
        """Run ``fn(spec)`` for every spec whose result is missing, ``--jobs`` at a time."""
        todo = [s for s in specs if not Path(s.get("path") or Path(s["folder"]) / "done.json").is_file()]
        if not todo:
            return
        self.say(f"{what}: {len(todo)} job(s) of {len(specs)} to run")
        if self.args.jobs <= 1:
            _init_worker()
            for s in todo:
                fn(s)
                self.say(f"  done {s.get('name') or s.get('folder')}")
            return
        ctx = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(self.args.jobs, mp_context=ctx, initializer=_init_worker) as pool:
            running = {pool.submit(fn, s): s for s in todo}
            for done in futures.as_completed(running):
                s = running[done]
                done.result()  # a failed job stops the harness (its stage reruns next time)
                self.say(f"  done {s.get('name') or s.get('folder')}")

    def check_options(self) -> None:
        """A folder holds one protocol: reusing its stages with other options would mix results."""
        a = self.args
        options = {"dataset": a.dataset, "scale": a.scale, "recipe": a.recipe, "train_set": self.train_set,
                   "data_seed": a.data_seed, "tolerance": a.tolerance, "lrs": list(self.lrs())}
        saved = read_json_or_none(self.out / "options.json")
        if saved is not None and saved != options:
            diff = next(k for k in options if saved.get(k) != options[k])
            raise UserError(f"{self.out}: a harness run with other options ({diff}: {saved.get(diff)!r}, "
                            f"got {options[diff]!r}); use another --out")
        write_json_atomic(self.out / "options.json", options)

    def lrs(self) -> tuple[float, ...]:
        return tuple(self.args.lrs) if self.args.lrs else self.scale.lrs

    def data(self) -> Path:
        from hitdet.data import SynthSpec, write_synthetic

        folder = self.out / "data"
        if not (folder / "annotations" / "instances_val.json").is_file():
            spec = SynthSpec(num_train=self.scale.train_images[self.dataset],
                             num_val=self.scale.val_images[self.dataset], seed=self.args.data_seed, style=self.dataset)
            write_synthetic(folder, spec, force=True)
        return folder

    def holdout(self, data: Path) -> Path:
        """Train split into four fifths (``train``) and a held-out fifth (``val``), for the lr sweep."""
        folder = self.out / "data-holdout"
        if (folder / "annotations" / "instances_val.json").is_file():
            return folder
        import shutil

        coco = json.loads((data / "annotations" / "instances_train.json").read_text())
        images = sorted(coco["images"], key=lambda im: im["id"])
        held = {im["id"] for i, im in enumerate(images) if i % 5 == 4}
        for split, keep in (("train", lambda i: i not in held), ("val", lambda i: i in held)):
            (folder / split).mkdir(parents=True, exist_ok=True)
            ims = [im for im in images if keep(im["id"])]
            for im in ims:
                shutil.copy2(data / "train" / im["file_name"], folder / split / im["file_name"])
            anns = [a for a in coco["annotations"] if keep(a["image_id"])]
            write_json_atomic(folder / "annotations" / f"instances_{split}.json",
                              {**coco, "images": ims, "annotations": anns})
        return folder

    def structure_name(self) -> str:
        from hitdet.searching import load_search_config

        return load_search_config("search", self.args.recipe, self.scale.search).structure

    def settings(self, data: Path) -> tuple[Any, Any, tuple[int, int], int]:
        """(train config, detector settings, priced input size, priced RoIs) of the rows."""
        from hitdet.training.config import load_config
        from hitdet.training.runner import load_datasets
        from search_spaces.detectors import DetectorSettings

        cfg = load_config(self.args.recipe, self.train_set)
        train_ds, _ = load_datasets(data, cfg)
        st = cfg.apply_to_settings(DetectorSettings(num_classes=len(train_ds.categories()) + 1))
        return cfg, st, st.padded_size(), st.priced_rois()

    def macs_of(self, sample: dict[str, str], settings: Any) -> float:
        from search_spaces.costs import detector_cost
        from search_spaces.structure import STRUCTURES

        st = STRUCTURES[self.structure_name()]
        return float(detector_cost(st, sample, settings.num_classes, settings.padded_size(),
                                   settings.priced_rois())["total"].macs)

    # -- stages -----------------------------------------------------------------------------------

    def sweep(self, data: Path, settings: Any) -> dict[str, float]:
        """The learning rate of each family, chosen on the held-out fifth of train."""
        from benchmarks.evidence.handmade import match_width
        from search_spaces.hand_picks import hand_pick
        from search_spaces.structure import STRUCTURES

        held = self.holdout(data)
        st = STRUCTURES[self.structure_name()]
        handmade, _ = match_width(self.macs_of(hand_pick("stage-ir", st), settings), settings.num_classes,
                                  settings.padded_size(), settings.priced_rois())
        # our space is probed with several members (a shallow and a deep one by default): a searched detector is
        # usually deeper than the shallow pick, and deep members starve at the lr the shallow one likes best
        probes = [("torchvision", "torchvision", None)] + [("space", p, hand_pick(p, st)) for p in self.probes()]
        specs = []
        for family, probe, sample in probes:
            for lr in self.lrs():
                name = f"{probe}-lr{lr:g}"
                spec = {"name": name, "kind": "torchvision" if family == "torchvision" else "sweep",
                        "family": family, "probe": probe, "lr": lr, "data": str(held), "recipe": self.args.recipe,
                        "train_set": [*self.train_set, f"lr={lr}", f"seed={self.train_seeds[0]}"],
                        "structure": self.structure_name(), "accelerator": self.scale.accelerator,
                        "path": str(self.out / "sweep" / f"{name}.json")}
                if family == "torchvision":
                    spec["handmade"] = dataclasses.asdict(handmade)
                else:
                    spec["sample"] = sample
                specs.append(spec)
        self.run_jobs(job_train, specs, "learning-rate sweep")
        results = [{**s, **json.loads(Path(s["path"]).read_text())} for s in specs]
        best = choose_lrs(results)
        write_json_atomic(self.out / "sweep" / "best.json", best)
        write_json_atomic(self.out / "sweep" / "table.json",
                          [{k: r[k] for k in ("family", "probe", "lr", "AP", "AP50")} for r in results])
        return best

    def probes(self) -> list[str]:
        return list(self.args.probes or PROBES)

    def searches(self, data: Path) -> None:
        specs = []
        for variant in [*self.variants, *([self.control] if not self.args.no_control else [])]:
            recipe, extra = self.variant_config(variant)
            # a recipe that states its stage sizes keeps them; others get the scale's (the demo's on CPU)
            from hitdet.searching import RECIPES

            sized = bool(RECIPES.get(recipe, {}).get("stages")) and self.args.scale != "quick"
            for seed in self.search_seeds:
                specs.append({"variant": variant, "seed": seed, "data": str(data), "recipe": recipe,
                              "screen": [*([] if sized else self.scale.screen), *extra["screen"]],
                              "search": [*([] if sized else self.scale.search), *extra["search"]],
                              "accelerator": self.scale.accelerator,
                              "folder": str(self.out / "search" / variant / f"seed{seed}")})
        self.run_jobs(job_search, specs, "screen + search")

    def variant_config(self, variant: str) -> tuple[str, dict[str, list[str]]]:
        """(search recipe, extra --set per stage) of a variant; the control is the first variant without the loss."""
        if variant.endswith("-" + CONTROL):
            recipe, extra = self.variant_config(variant[: -len(CONTROL) - 1])
            cut = ["strategy.arch_loss_weight=0"]
            return recipe, {"screen": [*extra["screen"], *cut], "search": [*extra["search"], *cut]}
        recipe, extra = self.defined.get(variant) or VARIANTS.get(variant, (variant, []))
        common = [*DATASET_SEARCH.get(self.dataset, []), *self.args.search_set]
        stage = {"screen": list(common), "search": list(common)}
        for kv in extra:  # "screen.KEY=VALUE" / "search.KEY=VALUE" for one stage, "KEY=VALUE" for both
            head, _, rest = kv.partition(".")
            if head in stage and "=" in rest:
                stage[head].append(rest)
            else:
                stage["screen"].append(kv)
                stage["search"].append(kv)
        return recipe or self.args.recipe, stage

    def searched(self, variant: str, seed: int) -> tuple[dict[str, str], dict[str, list[str]], dict[str, Any]]:
        """(the searched sample, the sub spaces it was searched in, the architecture's metadata)."""
        folder = self.out / "search" / variant / f"seed{seed}"
        arch = json.loads((folder / "search" / "architecture.json").read_text())
        sample = json.loads((folder / "search" / "sample.json").read_text())
        subs = json.loads((folder / "screen" / "subspaces.json").read_text())
        kept = {c: list(v["ops"]) for c, v in subs["components"].items()}
        return {k: str(v) for k, v in sample.items()}, kept, arch.get("metadata", {})

    def row_specs(self, data: Path, settings: Any, lrs: dict[str, float],
                  searched: bool = True) -> list[dict[str, Any]]:
        import numpy as np

        from benchmarks.evidence.handmade import match_width
        from benchmarks.evidence.samples import label_choices, mac_matched_samples
        from search_spaces.hand_picks import HAND_PICKS, hand_pick
        from search_spaces.ops import OP_NAMES
        from search_spaces.structure import STRUCTURES

        st = STRUCTURES[self.structure_name()]
        specs: list[dict[str, Any]] = []

        def add(name: str, kind: str, seeds: tuple[int, ...], **extra: Any) -> None:
            family = "torchvision" if kind == "torchvision" else "space"
            for t in seeds:
                specs.append({"name": f"{name}-t{t}", "row": name, "kind": kind, "train_seed": t, "data": str(data),
                              "recipe": self.args.recipe, "structure": self.structure_name(),
                              "train_set": [*self.train_set, f"lr={lrs[family]}", f"seed={t}"],
                              "accelerator": self.scale.accelerator,
                              "path": str(self.out / "rows" / f"{name}-t{t}.json"), **extra})

        for name in self.args.hand_picks or HAND_PICKS:
            sample = hand_pick(name, st)
            add(name, "hand-pick", self.train_seeds, sample=sample, macs=self.macs_of(sample, settings))
        target = self.macs_of(hand_pick("stage-ir", st), settings)
        handmade, hm_macs = match_width(target, settings.num_classes, settings.padded_size(), settings.priced_rois())
        add("torchvision", "torchvision", self.train_seeds, handmade=dataclasses.asdict(handmade), macs=float(hm_macs))
        if not searched:
            return specs
        for variant in [*self.variants, *([self.control] if not self.args.no_control else [])]:
            control = variant == self.control
            for seed in self.search_seeds:
                sample, kept, _ = self.searched(variant, seed)
                name = f"{variant}-s{seed}"
                add(name, "control" if control else "searched", self.train_seeds, variant=variant, search_seed=seed,
                    sample=sample, macs=self.macs_of(sample, settings))
        # K random samples of the first variant's first seed's sub spaces, at its MACs
        sample, kept, _ = self.searched(self.variants[0], self.search_seeds[0])
        target = self.macs_of(sample, settings)
        choices = label_choices(st.labels(), kept, OP_NAMES)
        rng = np.random.default_rng([self.args.data_seed, STYLES.index(self.dataset)])
        drawn = mac_matched_samples(choices, lambda s: self.macs_of(s, settings), target, self.k, rng,
                                    self.args.tolerance, self.scale.max_tries, exclude=[sample])
        for i, d in enumerate(drawn, start=1):
            seed = self.train_seeds[(i - 1) % len(self.train_seeds)]
            add(f"{self.variants[0]}-random-{i}", "random", (seed,), sample=d.sample, macs=d.macs,
                matched=d.matched, rejected=d.tries - 1, variant=self.variants[0])
        return specs

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.log is None:
            self.log = open(self.out / "harness.log", "a")  # noqa: SIM115
        self.check_options()
        t0 = time.perf_counter()
        data = self.data()
        _, settings, size, rois = self.settings(data)
        lrs = self.sweep(data, settings)
        self.say(f"learning rates: {lrs}")
        if self.args.baselines_only:
            specs = [s for s in self.row_specs(data, settings, lrs, searched=False)]
            self.run_jobs(job_train, specs, "baseline rows")
            return {"markdown": f"baselines of {self.dataset} trained (hand picks, torchvision)"}
        if not self.args.report_now:
            self.searches(data)
        if self.args.searches_only:
            return {"markdown": f"searches of {self.dataset} done ({', '.join(self.variants)})"}
        specs = self.row_specs(data, settings, lrs)
        if self.args.report_now:  # the rows trained so far (another harness may still be training the rest)
            done, seen = [], set()
            for s in specs:  # a row not yet trained at this seed stands with a seed it was trained at
                found = [Path(s["path"])] if Path(s["path"]).is_file() else sorted(
                    (self.out / "rows").glob(f"{s['row']}-t*.json"))
                for path in found:
                    if str(path) not in seen:
                        seen.add(str(path))
                        done.append({**s, "path": str(path)})
            self.say(f"report on {len(done)} trained runs ({len(specs)} specified)")
            specs = done
        else:
            self.run_jobs(job_train, specs, "rows")
        from benchmarks.evidence.report import build_report

        report = build_report(self, specs, settings, lrs)
        report["seconds"] = time.perf_counter() - t0
        return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evidence", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (data, searches, rows, report); reruns resume")
    p.add_argument("--dataset", default="photos", choices=STYLES, help="hitdet data synth style (default photos)")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="cpu (2 cores), gpu (one GPU), quick")
    p.add_argument("--recipe", default="synth-cpu", help="search and train recipe of the rows (default synth-cpu)")
    p.add_argument("--variants", default=None, type=lambda s: [v for v in s.split(",") if v],
                   help="search variants to evaluate, comma-separated: 'default' (the --recipe with --search-set), "
                        "'lambda0', a recipe name (e.g. paper-cpu) or a --variant; the penalty-only control and "
                        "the random samples follow the first (default: the --variant ones, else 'default')")
    p.add_argument("--variant", action="append", default=[], metavar="NAME[=RECIPE]:KEY=VALUE,...",
                   help="define a search variant: --set overrides on top of RECIPE (default --recipe); "
                        "'screen.KEY=VALUE' or 'search.KEY=VALUE' acts on one stage only; repeatable")
    p.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for the default variant's screen and search (hitdet search --set); repeatable")
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the rows' training recipe (hitdet train --set); repeatable")
    p.add_argument("--search-seeds", type=lambda s: [int(v) for v in s.split(",")], default=None)
    p.add_argument("--train-seeds", type=lambda s: [int(v) for v in s.split(",")], default=None)
    p.add_argument("--lrs", type=lambda s: [float(v) for v in s.split(",")], default=None,
                   help="learning rates of the sweep (default 0.01,0.02,0.04)")
    p.add_argument("--probes", type=lambda s: [v for v in s.split(",") if v], default=None,
                   help="hand picks that probe our space's learning rate, comma-separated; the lr with the best "
                        f"mean AP over them is taken (default {','.join(PROBES)})")
    p.add_argument("--hand-picks", type=lambda s: [v for v in s.split(",") if v], default=None,
                   help="in-space hand picks to train, comma-separated (default: all of search_spaces.hand_picks)")
    p.add_argument("--k", type=int, default=None, help="random samples (default 8)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the dataset and of the random samples")
    p.add_argument("--tolerance", type=float, default=0.15, help="MACs tolerance of the random samples (0.15)")
    p.add_argument("--no-control", action="store_true", help="skip the penalty-only control")
    p.add_argument("--jobs", type=int, default=2, help="processes at a time (default 2)")
    p.add_argument("--searches-only", action="store_true", help="stop after the screens and searches")
    p.add_argument("--report-now", action="store_true",
                   help="train nothing more: report on the rows trained so far (needs the searches done)")
    p.add_argument("--baselines-only", action="store_true",
                   help="stop after the learning-rate sweep and the baseline rows (hand picks, torchvision)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        if args.k is not None and args.k < 2:
            raise UserError(f"--k: need at least 2 random samples, got {args.k}")
        from search_spaces.hand_picks import HAND_PICKS

        for option, names in (("--hand-picks", args.hand_picks), ("--probes", args.probes)):
            unknown = [n for n in names or () if n not in HAND_PICKS]
            if unknown:
                raise UserError(f"{option}: unknown {unknown[0]!r}; known: {', '.join(HAND_PICKS)}")
        if not 0 < args.tolerance < 1:
            raise UserError(f"--tolerance: expected a fraction in (0, 1), got {args.tolerance}")
        report = Harness(args).run()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n" + report["markdown"])
    return 0
