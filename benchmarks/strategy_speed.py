"""Speed of the HitDet strategy: per-step time vs NNI's stock DARTS, and the 32 -> 8 op speed-up.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/strategy_speed.py

One process, one machine, one supernet (a small trinity space: torchvision Faster R-CNN with
searched backbone, neck and head, by default 1/8 width, half depth, 128-px images, all 32
pool ops at each of the 22 positions: 10 backbone, 8 neck, 4 head), one batch size. A
"step" is what both strategies do per batch: an architecture step on one batch, then a
weight step on another. Each variant
runs ``--repeats`` times, interleaved (A B C A B C ...) so that drift on a shared machine
hits them alike; each run skips ``--warmup`` steps and takes the median of the next
``--steps``; the figure is the median over repeats.

Variants: ``darts`` (nni.nas.strategy.DARTS, its per-op probability logging turned off,
which would otherwise add ~1000 scalars every 10 steps), ``hitdet`` (HitDetStrategy search
mode, FLOPs penalty on, defaults), ``hitdet-nofreeze`` (the same with
``freeze_weights_in_arch_step=False``: exactly DARTS's gradient work plus our penalty, to
show the overhead of the strategy itself), and ``hitdet-8`` (HitDet on 8-op sub spaces: the
released neck sub space, the released backbone's 6 ops + 2, the released head's 2 ops + 6;
mostly the heavier inverted-residual ops, so the speed-up is not flattered).
Not a test: it takes about ten minutes on one CPU core. NNI's experiment records go to a
temporary HOME that is removed at exit.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

# NNI records every experiment under ~/nni-experiments (and its manifest there): keep these
# throw-away benchmark runs out of the real home.
_HOME = tempfile.mkdtemp(prefix="hitdet-bench-home-")
os.environ["HOME"] = _HOME
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
warnings.filterwarnings("ignore")
logging.getLogger("nni").setLevel(logging.ERROR)
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from nni.nas.evaluator.pytorch import DataLoader, Lightning, LightningModule, Trainer  # noqa: E402
from nni.nas.experiment import NasExperiment  # noqa: E402
from nni.nas.strategy import DARTS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from search_spaces import TrinitySpace  # noqa: E402
from search_spaces.detectors import DetectorSettings  # noqa: E402
from search_spaces.ops import OP_NAMES  # noqa: E402
from search_spaces.structure import DetectorStructure  # noqa: E402
from strategies import HitDetStrategy  # noqa: E402

SUB_SPACES = {
    "backbone": ["ir_k3_e3", "ir_k3_e3_d2", "ir_k5_e6", "ir_k7_e6", "ir_k5_e6_d2", "ir_k5_e3", "sep_k3", "conv_k3"],
    "neck": ["conv_k1", "ir_k3_e6_d3", "ir_k5_e6", "ir_k5_e6_d3", "sep_k3", "sep_k3_d3", "sep_k5_d2", "sep_k5_d3"],
    "head": ["ir_k5_e6", "ir_k3_e6", "ir_k3_e1", "sep_k3", "sep_k5", "conv_k1", "conv_k3", "skip"],
}


class Detection(LightningModule):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        return sum(self.model(list(images), list(targets)).values())

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)


class Boxes(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int) -> None:
        self.images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        s = self.size
        box = torch.tensor([[s * 0.1 + i % 7, s * 0.2, s * 0.6 + i % 5, s * 0.8]])
        return self.images[i], {"boxes": box, "labels": torch.tensor([1 + i % 2])}


def collate(batch: list[Any]) -> Any:
    return tuple(zip(*batch, strict=True))


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._t)


def one_run(variant: str, args: argparse.Namespace) -> float:
    pl.seed_everything(0, verbose=False)
    structure = DetectorStructure().scaled(args.width).half_depth()
    settings = DetectorSettings(
        num_classes=3,
        min_size=args.size,
        max_size=args.size,
        anchor_base=16,
        rpn_pre_nms_top_n_train=200,
        rpn_post_nms_top_n_train=64,
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=args.rois,
    )
    space = TrinitySpace(structure, list(OP_NAMES), settings, input_size=(args.size, args.size), num_rois=args.rois)
    timer = StepTimer()
    steps = args.warmup + args.steps
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    data = Boxes(2 * steps * args.batch, args.size)
    half = torch.utils.data.Subset(data, range(0, len(data), 2)), torch.utils.data.Subset(data, range(1, len(data), 2))
    if variant == "darts":
        # stock DARTS: arch step on the "val" loader; the same two halves as HitDet's split
        evaluator = Lightning(
            Detection(),
            trainer,
            train_dataloaders=DataLoader(half[0], batch_size=args.batch, shuffle=True, collate_fn=collate),
            val_dataloaders=DataLoader(half[1], batch_size=args.batch, shuffle=True, collate_fn=collate),
        )
        strategy: Any = DARTS(arc_learning_rate=4e-4, log_prob_every_n_step=10**9)
    else:
        evaluator = Lightning(
            Detection(),
            trainer,
            train_dataloaders=DataLoader(data, batch_size=args.batch, shuffle=True, collate_fn=collate),
        )
        kw: dict[str, Any] = {"arch_start_epoch": 0}
        if variant == "hitdet-nofreeze":
            kw["freeze_weights_in_arch_step"] = False
        if variant == "hitdet-8":
            kw["sub_spaces"] = SUB_SPACES
        strategy = HitDetStrategy(**kw)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.run()
    experiment.stop()
    measured = timer.times[args.warmup :]
    if len(measured) < args.steps:
        raise RuntimeError(f"{variant}: only {len(timer.times)} steps ran")
    return statistics.median(measured)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=0.125, help="width multiplier of the released structure")
    p.add_argument("--size", type=int, default=128, help="image size (square)")
    p.add_argument("--rois", type=int, default=64, help="RoIs sampled per image for the head")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default="darts,hitdet,hitdet-nofreeze,hitdet-8")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (on a shared machine more threads than free cores is much slower)",
    )
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    results: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in variants:
            t = one_run(v, args)
            results[v].append(t)
            print(f"repeat {r}: {v:16s} {t * 1000:8.1f} ms/step", flush=True)
    med = {v: statistics.median(ts) for v, ts in results.items()}
    out: dict[str, Any] = {
        "ms_per_step": {v: round(t * 1000, 1) for v, t in med.items()},
        "torch_threads": torch.get_num_threads(),
        "settings": vars(args),
    }
    if "darts" in med and "hitdet" in med:
        out["ratio_hitdet_over_darts"] = round(med["hitdet"] / med["darts"], 3)
    if "darts" in med and "hitdet-nofreeze" in med:
        out["ratio_hitdet_nofreeze_over_darts"] = round(med["hitdet-nofreeze"] / med["darts"], 3)
    if "hitdet" in med and "hitdet-8" in med:
        out["speedup_32_to_8"] = round(med["hitdet"] / med["hitdet-8"], 2)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
