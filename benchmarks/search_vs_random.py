"""Does the search beat chance? Searched vs MAC-matched random samples vs a hand-made detector.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search_vs_random.py --out runs/search-vs-random
    .venv/bin/python benchmarks/search_vs_random.py --out runs/svr-quick --quick     # a few minutes

The protocol of Yang et al. ("NAS evaluation is frustratingly hard", ICLR 2020) and Li &
Talwalkar (2019), per dataset (default: both synthetic styles, generated into OUT):

1. screen (32 ops -> 8 per component) and search (the end-to-end trinity search on those sub
   spaces), with the same code as ``hitdet screen`` / ``hitdet search``;
2. retrain, with ONE recipe and seed for every row (:func:`train_row`): (a) the searched
   architecture; (b) K uniform random samples of the same sub spaces whose MACs are within
   +-15 % of the searched one's (rejection sampling; a sample that could not be matched is the
   closest seen and is flagged); (c) a hand-made Faster R-CNN from torchvision parts
   (:mod:`hitdet.baselines`) with its width set so that its MACs match too. MACs are
   ``search_spaces.costs.detector_cost`` at the training input size and RoI count, as
   ``hitdet info`` counts them;
3. COCO AP / AP50 of each on the val split after the last epoch (no best-epoch picking);
4. the supernet's inherited-weight validation loss of every random sample (the search's final
   checkpoint, each sample's path forced; BN uses batch statistics there, see
   :func:`hitdet.search_evidence.inherited_loss`) and its Kendall tau-b with the stand-alone AP.

Writes OUT/report.md (printed too) and OUT/report.json (every row: architecture, MACs,
parameters, AP, AP50, seconds). Stages already finished in OUT (data, screen, search, each
row) are reused when the harness is run again with the same options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hitdet.architecture import Architecture, load_architecture, write_json_atomic, write_text_atomic
from hitdet.errors import NonFiniteLossError, UserError

STYLES = ("shapes", "glyphs")


@dataclass
class Scale:
    """Sizes of one harness run: dataset size, K, and ``--set`` overrides on top of the recipe."""

    train_images: int
    val_images: int
    k: int
    screen: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)
    accelerator: str = "cpu"
    max_tries: int = 20000


SCALES: dict[str, Scale] = {
    # about an hour for both datasets on 2 CPU cores: per dataset ~4 min of screen + search and
    # 7 trainings of 6 epochs on 256 images.
    "cpu": Scale(
        train_images=256, val_images=80, k=5,
        screen=["train.epochs=4", "train.batch_size=4", "strategy.arch_start_epoch=1", "steps_per_epoch=6"],
        search=["train.epochs=3", "train.batch_size=4", "strategy.arch_start_epoch=1", "steps_per_epoch=8"],
        train=["epochs=6", "milestones=[4, 5]", "warmup_iters=50"],
    ),
    # the cpu scale with 32 RoIs per image and 8 retraining epochs: about 1.5 h for both datasets on 2 cores
    # (one process per dataset) when the searched heads are heavy (screening has no cost term, so the head
    # sub space can hold only inverted residuals, which run on every RoI).
    "cpu-short": Scale(
        train_images=256, val_images=80, k=5,
        screen=["train.epochs=4", "train.batch_size=4", "strategy.arch_start_epoch=1", "steps_per_epoch=6"],
        search=["train.epochs=3", "train.batch_size=4", "strategy.arch_start_epoch=1", "steps_per_epoch=8"],
        train=["epochs=8", "milestones=[6, 7]", "warmup_iters=50", "detector.box_batch_size_per_image=32"],
    ),
    # one GPU: more data, 2x the input size, 1/4 width, full epochs.
    "gpu": Scale(
        train_images=2000, val_images=400, k=8, accelerator="gpu",
        screen=["structure=released", "train.epochs=8", "strategy.arch_start_epoch=3", "train.width=0.25",
                "train.detector.min_size=256", "train.detector.max_size=320", "train.detector.anchor_base=32"],
        search=["structure=released", "train.epochs=8", "strategy.arch_start_epoch=3", "train.width=0.25",
                "train.detector.min_size=256", "train.detector.max_size=320", "train.detector.anchor_base=32"],
        train=["epochs=12", "milestones=[8, 11]", "detector.min_size=256", "detector.max_size=320",
               "detector.anchor_base=32"],
    ),
    # a smoke run of the whole harness in a few minutes: tiny data, one epoch everywhere, K = 2.
    "quick": Scale(
        train_images=24, val_images=8, k=2, max_tries=2000,
        screen=["train.epochs=1", "strategy.arch_start_epoch=0", "steps_per_epoch=2"],
        search=["train.epochs=1", "strategy.arch_start_epoch=0", "steps_per_epoch=2"],
        train=["epochs=1", "warmup_iters=2", "milestones=[1]"],
    ),
}


def padded_input(settings: Any) -> tuple[int, int]:
    """The padded batch size entering the backbone for images at (min_size, max_size)."""
    div = settings.size_divisible
    return -(-settings.min_size // div) * div, -(-settings.max_size // div) * div


def train_row(build: Callable[[], torch.nn.Module], cfg: Any, train_ds: Any, val_ds: Any, accelerator: str,
              progress: bool) -> dict[str, Any]:
    """The one training recipe of every row: seed, build, fit ``cfg.epochs``, COCO metrics of the last epoch.

    ``hitdet train``'s module and loaders (``DetectionModule``, ``make_train_loader``,
    ``make_eval_loader``) with a plain Lightning Trainer: no checkpoints, no logger, validation
    once after the last epoch.
    """
    import pytorch_lightning as pl

    from hitdet.training.module import DetectionModule
    from hitdet.training.runner import make_eval_loader, make_train_loader

    pl.seed_everything(cfg.seed, verbose=False)
    model = build()
    params = sum(p.numel() for p in model.parameters())
    pl.seed_everything(cfg.seed, verbose=False)
    module = DetectionModule(model, cfg)
    trainer = pl.Trainer(
        max_epochs=cfg.epochs, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=cfg.epochs, use_distributed_sampler=False,
    )
    start = time.perf_counter()
    row: dict[str, Any] = {"params": params}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*treespec.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        try:
            trainer.fit(module, make_train_loader(train_ds, cfg.batch_size, cfg.seed, cfg.num_workers),
                        make_eval_loader(val_ds, cfg.eval_batch_size, cfg.num_workers))
            row.update(AP=module.last_metrics["AP"], AP50=module.last_metrics["AP50"])
        except NonFiniteLossError as exc:  # counted as AP 0 (it learnt nothing usable), and flagged
            row.update(AP=0.0, AP50=0.0, diverged=str(exc))
    row["seconds"] = time.perf_counter() - start
    return row


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        scale = SCALES["quick" if args.quick else args.scale]
        if args.quick and args.scale == "gpu":
            scale = dataclasses.replace(scale, accelerator="gpu")
        self.scale = scale
        self.k = args.k if args.k is not None else scale.k
        self.progress = not args.no_progress

    def check_configs(self) -> None:
        """Resolve every config up front: a bad recipe or --train-set fails before anything runs."""
        from hitdet.searching import load_search_config
        from hitdet.training.config import load_config

        load_search_config("screen", self.args.recipe, self.scale.screen)
        load_search_config("search", self.args.recipe, self.scale.search)
        load_config(self.args.recipe, [*self.scale.train, *self.args.train_set])

    # -- stages ---------------------------------------------------------------------------------

    def check_options(self) -> None:
        """A run folder holds one set of options: reusing its stages with others would mix results."""
        a = self.args
        options = {"datasets": a.datasets, "k": self.k, "seed": a.seed, "scale": a.scale, "quick": a.quick,
                   "recipe": a.recipe, "tolerance": a.tolerance, "train_set": a.train_set}
        path = self.out / "harness.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved != options:
                diff = next(k for k in options if saved.get(k) != options[k])
                raise UserError(f"{self.out}: a harness run with other options ({diff}: {saved.get(diff)!r}, "
                                f"got {options[diff]!r}); use another --out")
        else:
            write_json_atomic(path, options)

    def data(self, style: str, folder: Path) -> Path:
        from hitdet.data import SynthSpec, write_synthetic

        if (folder / "annotations" / "instances_val.json").is_file():
            return folder
        spec = SynthSpec(num_train=self.scale.train_images, num_val=self.scale.val_images, seed=self.args.seed,
                         style=style)
        return write_synthetic(folder, spec, force=True)

    def search(self, data: Path, folder: Path) -> tuple[Architecture, Any, dict[str, list[str]] | None]:
        """Screen then search (reused when their results exist); the searched architecture."""
        from hitdet.searching import load_search_config, resolve_sub_spaces, run_search

        seed = [f"train.seed={self.args.seed}"]
        sub_file = folder / "screen" / "subspaces.json"
        if not sub_file.is_file():
            cfg = load_search_config("screen", self.args.recipe, [*self.scale.screen, *seed])
            run_search("screen", folder / "screen", cfg, data, force=True, accelerator=self.scale.accelerator,
                       progress=self.progress)
        cfg = load_search_config("search", self.args.recipe, [*self.scale.search, *seed, f"sub_spaces={sub_file}"])
        arch_file = folder / "search" / "architecture.json"
        if not arch_file.is_file():
            run_search("search", folder / "search", cfg, data, force=True, accelerator=self.scale.accelerator,
                       progress=self.progress)
        return load_architecture(arch_file), cfg, resolve_sub_spaces(cfg.sub_spaces)

    def run_dataset(self, style: str) -> dict[str, Any]:
        from hitdet.baselines import build_baseline, match_width
        from hitdet.builder import build_detector
        from hitdet.search_evidence import (
            inherited_loss,
            kendall_tau_b,
            label_choices,
            load_search_supernet,
            mac_matched_samples,
        )
        from hitdet.training.config import load_config
        from hitdet.training.runner import load_datasets, make_eval_loader, prepare_architecture
        from search_spaces.costs import detector_cost
        from search_spaces.ops import OP_NAMES

        folder = self.out / style
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        data = self.data(style, folder / "data")
        searched, search_cfg, sub_spaces = self.search(data, folder)
        timings["data+screen+search"] = time.perf_counter() - t0

        # The searched architecture is already at the search's width: train it (and the samples) at 1x of it.
        cfg = load_config(self.args.recipe, [*self.scale.train, *self.args.train_set, f"seed={self.args.seed}",
                                             "width=1.0", "half_depth=false"])
        train_ds, val_ds = load_datasets(data, cfg)
        categories = train_ds.categories()
        prepared = prepare_architecture(searched, categories, cfg)
        st = prepared.settings
        input_size, num_rois = padded_input(st), st.box_batch_size_per_image

        def macs_of(sample: dict[str, str]) -> float:
            return float(detector_cost(prepared.structure, sample, st.num_classes, input_size, num_rois)["total"].macs)

        target = macs_of(prepared.sample())
        choices = label_choices(prepared.structure.labels(), sub_spaces, OP_NAMES)
        rng = np.random.default_rng([self.args.seed, STYLES.index(style)])
        samples = mac_matched_samples(choices, macs_of, target, self.k, rng, self.args.tolerance,
                                      self.scale.max_tries, exclude=[prepared.sample()])
        base_cfg, base_macs = match_width(target, st.num_classes, input_size, num_rois)

        rows: list[dict[str, Any]] = []
        specs: list[tuple[str, dict[str, Any], Callable[[], torch.nn.Module]]] = []

        def arch_row(name: str, arch: Architecture, extra: dict[str, Any]) -> None:
            specs.append((name, {"kind": name.split("-")[0], "arch": arch.sample(), "macs": macs_of(arch.sample()),
                                 **extra}, lambda: build_detector(arch)))

        arch_row("searched", prepared, {})
        for i, s in enumerate(samples, start=1):
            arch = dataclasses.replace(prepared, choices=dict(s.sample), name=f"random-{i}")
            arch_row(f"random-{i}", arch, {"matched": s.matched, "tries": s.tries})
        rcnn = {k: v for k, v in st.to_dict().items() if k not in ("num_classes", "anchor_base", "sampling_ratio")}
        specs.append(("hand-made", {"kind": "hand-made", "arch": base_cfg.to_dict(), "macs": float(base_macs)},
                      lambda: build_baseline(base_cfg, st.num_classes, anchor_base=st.anchor_base,
                                             sampling_ratio=st.sampling_ratio, **rcnn)))

        for name, info, build in specs:
            path = folder / "rows" / f"{name}.json"
            if path.is_file():
                row = json.loads(path.read_text())
            else:
                print(f"\n=== {style}: training {name} (MACs {info['macs'] / 1e6:.1f} M, "
                      f"target {target / 1e6:.1f} M) ===", flush=True)
                row = {"name": name, **info, **train_row(build, cfg, train_ds, val_ds, self.scale.accelerator,
                                                          self.progress)}
                write_json_atomic(path, row)
            rows.append(row)
        timings["training"] = sum(r["seconds"] for r in rows)

        # Inherited-weight validation loss of the searched architecture and every random sample.
        t1 = time.perf_counter()
        supernet = load_search_supernet(searched.structure, searched.settings, sub_spaces,
                                        folder / "search" / "checkpoints" / "last.ckpt")
        _, search_val = load_datasets(data, search_cfg.train)
        loader = make_eval_loader(search_val, cfg.eval_batch_size)
        device = "cuda" if self.scale.accelerator == "gpu" else "cpu"
        for row in rows:
            if row["kind"] in ("searched", "random"):
                row["inherited_loss"] = inherited_loss(supernet, row["arch"], loader, self.args.seed, device)
        timings["inherited_loss"] = time.perf_counter() - t1

        randoms = [r for r in rows if r["kind"] == "random"]
        ap = np.array([r["AP"] for r in randoms], dtype=float)
        ap50 = np.array([r["AP50"] for r in randoms], dtype=float)
        best = rows[0]
        hand = rows[-1]
        mean = float(ap.mean()) if len(ap) else float("nan")
        summary = {
            "dataset": style,
            "k": len(randoms),
            "target_macs": target,
            "input_size": list(input_size),
            "num_rois": num_rois,
            "sub_spaces": sub_spaces,
            "random_AP_mean": mean,
            "random_AP_std": float(ap.std(ddof=1)) if len(ap) > 1 else float("nan"),
            "random_AP50_mean": float(ap50.mean()) if len(ap50) else float("nan"),
            "random_AP50_std": float(ap50.std(ddof=1)) if len(ap50) > 1 else float("nan"),
            "searched_AP": best["AP"],
            "searched_AP50": best["AP50"],
            "hand_made_AP": hand["AP"],
            "hand_made_AP50": hand["AP50"],
            "searched_vs_random_mean": (best["AP"] - mean) / mean if mean > 0 else float("nan"),
            "searched_rank": 1 + int(sum(a > best["AP"] for a in ap)),
            "kendall_tau_loss_vs_AP": kendall_tau_b([r["inherited_loss"] for r in randoms], list(ap)),
            "unmatched_samples": sum(not r.get("matched", True) for r in randoms),
            "seconds": timings,
            "rows": rows,
        }
        write_json_atomic(folder / "summary.json", _json_safe(summary))
        return summary


def _json_safe(value: Any) -> Any:
    """NaN (e.g. tau of constant APs) as null, so that report.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _f(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def report_markdown(summaries: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Does the search beat chance?", "",
        f"`{command}`", "",
        "| dataset | random AP (mean ± std, K) | random AP50 | searched AP / AP50 (rank among K+1) "
        "| hand-made AP / AP50 | searched vs random mean (AP) | Kendall τ-b (inherited loss vs AP) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['dataset']} | {_f(s['random_AP_mean'])} ± {_f(s['random_AP_std'])} ({s['k']}) "
            f"| {_f(s['random_AP50_mean'])} ± {_f(s['random_AP50_std'])} "
            f"| {_f(s['searched_AP'])} / {_f(s['searched_AP50'])} ({s['searched_rank']} of {s['k'] + 1}) "
            f"| {_f(s['hand_made_AP'])} / {_f(s['hand_made_AP50'])} "
            f"| {_f(100 * s['searched_vs_random_mean'], 1)} % | {_f(s['kendall_tau_loss_vs_AP'], 2)} |"
        )
    lines += ["", "Kendall τ-b < 0 means a lower inherited-weight loss goes with a higher stand-alone AP "
              "(a useful supernet ranking); std is the sample standard deviation.", "",
              "| dataset | row | MACs (M) | MACs / target | params (K) | AP | AP50 | inherited loss | train s | note |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        for r in s["rows"]:
            note = []
            if r.get("matched") is False:
                note.append("MACs not matched (closest sample)")
            if r.get("diverged"):
                note.append("diverged: AP counted as 0")
            lines.append(
                f"| {s['dataset']} | {r['name']} | {r['macs'] / 1e6:.1f} | {r['macs'] / s['target_macs']:.2f} "
                f"| {r['params'] / 1e3:.0f} | {_f(r['AP'])} | {_f(r['AP50'])} | {_f(r.get('inherited_loss'))} "
                f"| {r['seconds']:.0f} | {'; '.join(note)} |"
            )
    lines += ["", "MACs: `search_spaces.costs.detector_cost` convention (convolutions and linear layers, "
              f"per image, the RoI head × RoIs) at input {'x'.join(map(str, summaries[0]['input_size']))} "
              f"with {summaries[0]['num_rois']} RoIs." if summaries else ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/search-vs-random", help="output folder (data, runs, report)")
    p.add_argument("--datasets", default="shapes,glyphs", help="synthetic styles, comma-separated (default both)")
    p.add_argument("--k", type=int, default=None, help="random samples per dataset (default 5; 8 at gpu, 2 quick)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, search, sampling and every training")
    p.add_argument("--scale", choices=["cpu", "cpu-short", "gpu"], default="cpu",
                   help="cpu (~1 h on 2 cores), cpu-short (8 retraining epochs, 32 RoIs per image) or gpu (one GPU)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch, K = 2 (a few minutes)")
    p.add_argument("--recipe", default="synth-cpu", help="search and train recipe name (default synth-cpu)")
    p.add_argument("--tolerance", type=float, default=0.15, help="MACs tolerance of the random samples (0.15)")
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the rows' training recipe, as hitdet train --set (e.g. epochs=12); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    import pytorch_lightning  # noqa: F401  (it sets its loggers' level on import: quieten them after)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):  # per-row start-up chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        bad = [d for d in datasets if d not in STYLES]
        if bad or not datasets:
            raise UserError(f"--datasets: unknown style {bad[0] if bad else '(none)'!r} (known: {', '.join(STYLES)})")
        if args.k is not None and args.k < 2:
            raise UserError(f"--k: need at least 2 random samples, got {args.k}")
        if not 0 < args.tolerance < 1:
            raise UserError(f"--tolerance: expected a fraction in (0, 1), got {args.tolerance}")
        args.datasets = ",".join(datasets)
        harness = Harness(args)
        harness.check_configs()
        harness.out.mkdir(parents=True, exist_ok=True)
        harness.check_options()
        summaries = [harness.run_dataset(style) for style in datasets]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python benchmarks/search_vs_random.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report_markdown(summaries, command.strip())
    write_text_atomic(harness.out / "report.md", text)
    write_json_atomic(harness.out / "report.json", _json_safe({"command": command.strip(), "datasets": summaries}))
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
