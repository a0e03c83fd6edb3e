"""Peak memory and step time of a supernet training step, per mixed-op mode, vs the fixed detector.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/supernet_memory.py            # CPU, ~8 min on 2 cores
    .venv/bin/python benchmarks/supernet_memory.py --device cuda                # one GPU

Variants, each in a fresh subprocess, run one after the other: ``fixed`` (the released
Hit-Detector built by the fixed builder, full depth, a plain training step) and the trinity
supernet (torchvision Faster R-CNN with searched backbone, neck and head) with 8-op sub spaces
(the sub spaces of benchmarks/strategy_speed.py) or all 32 ops, at half or full depth, in each
mixed-op mode (``full``, ``recompute``, ``sample``). A supernet step is what the search does per
batch: an architecture step, then a weight step (``HitDetStrategy``, search mode, architecture
steps from the first step).

Memory: CPU, the growth of the process's peak resident set over the training steps (the peak is
reset to the current RSS through /proc/self/clear_refs when training starts, after the model, the
data and the optimisers are built); CUDA, ``torch.cuda.max_memory_allocated`` minus the memory
allocated when training starts. On CPU the workers run with ``MALLOC_MMAP_THRESHOLD_=65536`` and
``MALLOC_ARENA_MAX=1``: glibc then hands large freed blocks back at once, so that the resident set follows
the memory actually in use (with its defaults it keeps freed blocks, and the peak RSS of the recomputing
supernet, which frees and allocates a lot, was ~100 MiB higher at 32 ops; ``--glibc-cache`` keeps the
defaults). Time: the median step time after the first step, under the same allocator settings for every
variant. Ratios are to ``fixed``.

Predicted memory of the paper's setting (800x1333 images, full width, 512 RoIs per image): the
measured growth minus the weight-sized state (weights' gradients and SGD momentum, 8 bytes a
parameter, measured count) is activation memory; it is taken as proportional to the pixels per
image, to the channel width (activations are linear in channels) and to the images per batch.
The benchmark samples RoIs at the paper's density (512 RoIs per 800x1333 image, so 18 at 192 px),
so the RoI head's activations are in the per-pixel figure too. The weight-sized state at full
width is the measured parameter count times width^-2 (convolution weights are quadratic in
channels) times 8 bytes, plus the weights themselves (4 bytes a parameter, already resident on a
GPU). This is a prediction from a linear model, not a measurement: allocator caches,
fragmentation and cuDNN workspaces are not in it.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER_SIZE = (800, 1333)
PAPER_ROIS = 512
MODES = ("full", "recompute", "sample")
GPUS = (("V100 16 GB", 16), ("V100 32 GB", 32), ("A100/H100 80 GB", 80), ("H200 141 GB", 141))


def parse_size(text: str) -> tuple[int, int]:
    """``"192"`` (square) or ``"800x1333"`` (height x width)."""
    parts = [int(v) for v in str(text).lower().split("x")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 32:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with sides >= 32, got {text!r}")
    return parts[0], parts[1]


def paper_rois(size: tuple[int, int]) -> int:
    """RoIs per image at the paper's density (512 per 800x1333 image)."""
    return max(4, round(PAPER_ROIS * size[0] * size[1] / (PAPER_SIZE[0] * PAPER_SIZE[1])))


def variants(modes: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": "fixed", "kind": "fixed"}]
    for ops in (8, 32):
        for depth in ("half", "full"):
            for mode in modes:
                out.append({"name": f"{ops} ops {depth} {mode}", "kind": "supernet", "ops": ops, "depth": depth,
                            "mode": mode})  # fmt: skip
    return out


# -- the worker (one variant, one process) -----------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def worker(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    home = tempfile.mkdtemp(prefix="hitdet-bench-home-")
    os.environ["HOME"] = home  # NNI's experiment records: not in the real home
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    warnings.filterwarnings("ignore")
    logging.getLogger("nni").setLevel(logging.ERROR)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    import pytorch_lightning as pl
    import torch

    from search_spaces.detectors import DetectorSettings
    from search_spaces.structure import DetectorStructure

    torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)
    cuda = args.device == "cuda"
    steps = args.steps
    h, w = parse_size(args.size)
    rois = args.rois or paper_rois((h, w))
    settings = DetectorSettings(
        num_classes=3,
        min_size=min(h, w),
        max_size=max(h, w),
        anchor_base=16,
        rpn_pre_nms_top_n_train=200,
        rpn_post_nms_top_n_train=max(64, rois),
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=rois,
    )
    full_structure = DetectorStructure().scaled(args.width)

    class Probe(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.base = self.peak = 0
            self._t = 0.0

        def on_train_start(self, trainer: Any, module: Any) -> None:
            gc.collect()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.base = torch.cuda.memory_allocated()
            else:
                try:
                    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
                except OSError:
                    pass
                self.base = _status_kib("VmRSS") * 1024

        def on_train_batch_start(self, *_: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self._t = time.perf_counter()

        def on_train_batch_end(self, *_: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._t)

        def on_train_end(self, *_: Any) -> None:
            self.peak = torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024

    class Boxes(torch.utils.data.Dataset):
        def __init__(self, n: int) -> None:
            self.images = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0))

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, i: int) -> Any:
            box = torch.tensor([[w * 0.1 + i % 7, h * 0.2, w * 0.6 + i % 5, h * 0.8]])
            return self.images[i], {"boxes": box, "labels": torch.tensor([1 + i % 2])}

    def collate(batch: list[Any]) -> Any:
        return tuple(zip(*batch, strict=True))

    probe = Probe()
    trainer_kw: dict[str, Any] = dict(
        max_epochs=1,
        limit_train_batches=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
        accelerator="gpu" if cuda else "cpu",
        devices=1,
    )
    n_images = 2 * steps * args.batch

    if spec["kind"] == "fixed":
        from dataclasses import replace

        from hitdet.architecture import load_architecture
        from hitdet.builder import build_detector

        arch = load_architecture("hit-detector")
        model = build_detector(replace(arch, structure=full_structure, settings=settings, name="bench"))

        class Plain(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
                images, targets = batch
                return sum(self.model(list(images), list(targets)).values())

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

        loader = torch.utils.data.DataLoader(Boxes(n_images // 2), batch_size=args.batch, collate_fn=collate)
        pl.Trainer(**trainer_kw).fit(Plain(), loader)
        params = sum(p.numel() for p in model.parameters())
    else:
        from nni.nas.evaluator.pytorch import DataLoader, Lightning, LightningModule, Trainer
        from nni.nas.experiment import NasExperiment

        from benchmarks.strategy_speed import SUB_SPACES
        from search_spaces import TrinitySpace
        from search_spaces.ops import OP_NAMES
        from strategies import HitDetStrategy

        class Detection(LightningModule):
            def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
                images, targets = batch
                return sum(self.model(list(images), list(targets)).values())

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

        structure = full_structure.half_depth() if spec["depth"] == "half" else full_structure
        ops: Any = list(OP_NAMES) if spec["ops"] == 32 else SUB_SPACES
        space = TrinitySpace(structure, ops, settings, input_size=(h, w), num_rois=rois)
        evaluator = Lightning(
            Detection(),
            Trainer(**trainer_kw),
            train_dataloaders=DataLoader(Boxes(n_images), batch_size=args.batch, shuffle=True, collate_fn=collate),
        )
        strategy = HitDetStrategy(arch_start_epoch=0, mixed_op=spec["mode"], sample_k=args.sample_k)
        experiment = NasExperiment(space, evaluator, strategy)
        experiment.run()
        experiment.stop()
        module = strategy.oneshot_module
        arch_ids = {id(p) for p in module.arch_parameters()}
        params = sum(p.numel() for p in module.model.parameters() if id(p) not in arch_ids)
    if len(probe.times) < steps:
        raise RuntimeError(f"{spec['name']}: only {len(probe.times)} of {steps} steps ran")
    timed = probe.times[1:] or probe.times
    return {
        **spec,
        "peak_growth_bytes": probe.peak - probe.base,
        "step_s": statistics.median(timed),
        "params": params,
        "rois": rois,
    }


# -- the parent: run every variant, print the table --------------------------------------------


def predict_bytes(r: dict[str, Any], args: argparse.Namespace) -> float:
    """Module docstring: activation memory scaled to the paper's images, width and batch."""
    state_small = 8 * r["params"]
    act = max(r["peak_growth_bytes"] - state_small, 0)
    h, w = parse_size(args.size)
    pixels = PAPER_SIZE[0] * PAPER_SIZE[1] / (h * w)
    act_paper = act * pixels / args.width * args.paper_batch / args.batch
    params_full = r["params"] / args.width**2
    return act_paper + 12 * params_full


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    fixed = next((r for r in results if r["name"] == "fixed"), None)
    plain = {(r.get("ops"), r.get("depth")): r for r in results if r.get("mode") == "full"}
    unit = "GiB"
    rows = [
        f"| variant | peak growth (MiB) | x fixed | step (s) | x full mode's step | "
        f"predicted at 800x1333, full width, {args.paper_batch} img ({unit}) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        mib = r["peak_growth_bytes"] / 2**20
        ratio = f"{r['peak_growth_bytes'] / fixed['peak_growth_bytes']:.2f}" if fixed else "-"
        base = plain.get((r.get("ops"), r.get("depth")))
        t_ratio = f"{r['step_s'] / base['step_s']:.2f}" if base is not None else "-"
        pred = predict_bytes(r, args) / 2**30
        rows.append(f"| {r['name']} | {mib:.0f} | {ratio} | {r['step_s']:.2f} | {t_ratio} | {pred:.1f} |")
    fits = []
    for r in results:
        pred = predict_bytes(r, args) / 2**30
        gpu = next((g for g, cap in GPUS if pred <= 0.9 * cap), "none of " + ", ".join(g for g, _ in GPUS))
        fits.append(f"{r['name']}: {pred:.1f} GiB -> {gpu}")
    return "\n".join(rows) + "\n\npredicted to fit (90% of the memory):\n" + "\n".join(fits)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--width", type=float, default=0.125, help="width multiplier of the released structure")
    p.add_argument("--size", default="192", help="image size: N (square) or HxW, e.g. 800x1333")
    p.add_argument("--rois", type=int, default=0, help="RoIs per image for the head (0: the paper's density)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="training steps per variant (time: median after the first)")
    p.add_argument("--sample-k", type=int, default=2)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    p.add_argument("--paper-batch", type=int, default=2, help="images per GPU for the prediction")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--keep-going", action="store_true", help="report a failed variant (out of memory), go on")
    p.add_argument(
        "--glibc-cache", action="store_true", help="CPU: keep glibc's default caching of freed memory (RSS overstates)"
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        job = json.loads(args.worker)
        print("RESULT " + json.dumps(worker(job["spec"], argparse.Namespace(**job["args"]))), flush=True)
        return 0
    specs = variants(args.modes.split(","))
    if args.only:
        wanted = set(args.only.split(","))
        specs = [s for s in specs if s["name"] in wanted or s["name"] == "fixed"]
    results = []
    for spec in specs:
        t0 = time.perf_counter()
        job = json.dumps({"spec": spec, "args": vars(args)})
        flags = ["-S"] if sys.flags.no_site else []  # as this interpreter was started
        cmd = [sys.executable, *flags, str(Path(__file__).resolve()), "--worker", job]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if args.device == "cpu" and not args.glibc_cache:
            env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_ARENA_MAX="1")  # module docstring
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            sys.stderr.write(done.stderr[-3000:])
            if not args.keep_going:
                raise SystemExit(f"variant {spec['name']!r} failed (exit {done.returncode})")
            oom = "out of memory" in done.stderr.lower()
            print(f"{spec['name']:24s} FAILED ({'out of memory' if oom else f'exit {done.returncode}'})", flush=True)
            continue
        r = json.loads(line[len("RESULT ") :])
        results.append(r)
        print(
            f"{r['name']:24s} peak growth {r['peak_growth_bytes'] / 2**20:8.0f} MiB  step {r['step_s']:7.2f} s"
            f"  ({time.perf_counter() - t0:.0f} s wall)",
            flush=True,
        )
    if not results:
        raise SystemExit("no variant ran")
    print()
    print(f"device {args.device}, width {args.width}, {args.size} px, batch {args.batch}, "
          f"{results[0]['rois']} RoIs/image, {args.steps} steps")  # fmt: skip
    print(table(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
