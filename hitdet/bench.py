"""Latency and throughput of a fixed detector: what ``hitdet bench`` measures, beside the MACs ``hitdet info`` counts.

Why: MACs rank detectors on paper; the time a detector takes on a given device (its memory
traffic, kernel launches, NMS and RoI pooling, which MACs do not count) is what a deployment pays.
A Pareto plot of AP against measured latency needs these numbers.

How it measures: the detector in eval mode under ``torch.inference_mode``, fed a batch of random
images of one size (so every batch takes the same resize and padding), ``warmup`` forward passes
that are not timed (cuDNN autotuning, allocator warm-up, lazy initialisation), then ``runs`` timed
passes, each bracketed by ``torch.cuda.synchronize`` on a GPU. The median of the runs is the
latency (robust to the odd slow pass); throughput is batch size / median latency. Random weights
are fine for the convolutions; trained weights (``weights``) make the NMS and RoI work what a
deployment sees, since the number of boxes that survive the score threshold depends on them.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

BENCH_FORMAT = "hitdet-bench"
# --precision: Lightning's names; the mixed ones run the forward pass under torch.autocast with that dtype
PRECISIONS = {"32-true": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def resized_size(settings: Any, size: tuple[int, int]) -> tuple[int, int]:
    """The padded size torchvision's detection transform makes of an ``size`` (H, W) image: what the network runs on."""
    h, w = size
    scale = min(settings.min_size / min(h, w), settings.max_size / max(h, w))
    rh, rw = int(h * scale), int(w * scale)  # torchvision interpolates to floor(size * scale)
    div = settings.size_divisible
    return -(-rh // div) * div, -(-rw // div) * div


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_forward(
    model: nn.Module, images: list[torch.Tensor], warmup: int, runs: int, device: torch.device,
    precision: str = "32-true",
) -> list[float]:
    """Seconds of each of ``runs`` forward passes of ``model`` on ``images``, after ``warmup`` untimed ones."""
    cuda = device.type == "cuda"
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    times = []
    with torch.inference_mode(), autocast:
        for i in range(warmup + runs):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(images)
            if cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def summarize(times: Sequence[float], batch: int) -> dict[str, Any]:
    """Latency statistics (milliseconds) of a list of pass times and the throughput at their median."""
    ms = [t * 1000.0 for t in times]
    median = statistics.median(ms)
    return {
        "batch": batch,
        "runs": len(ms),
        "latency_ms": {
            "median": median,
            "mean": statistics.fmean(ms),
            "min": min(ms),
            "p90": _percentile(ms, 0.9),
            "max": max(ms),
        },
        "latency_per_image_ms": median / batch,
        "images_per_s": batch / (median / 1000.0),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def benchmark(
    model: nn.Module,
    input_size: tuple[int, int],
    batches: Sequence[int] = (1, 8),
    warmup: int = 5,
    runs: int = 20,
    device: str | torch.device = "cpu",
    seed: int = 0,
    precision: str = "32-true",
) -> dict[str, Any]:
    """Time ``model`` on random ``input_size`` (H, W) images at each batch size in ``batches``.

    ``precision``: "32-true", or "16-mixed"/"bf16-mixed" (the forward pass under ``torch.autocast``).
    Returns a JSON-ready record: the device, torch version, CPU threads, date (UTC), precision and one
    entry per batch size (see :func:`summarize`). The model is left in eval mode on ``device``.
    """
    device = torch.device(device)
    model = model.eval().to(device)
    gen = torch.Generator().manual_seed(seed)
    h, w = input_size
    results = []
    for batch in dict.fromkeys(batches):  # in order, each size once
        images = [torch.rand(3, h, w, generator=gen).to(device) for _ in range(batch)]
        results.append(summarize(time_forward(model, images, warmup, runs, device, precision), batch))
    return {
        "format": BENCH_FORMAT,
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "input_size": [h, w],
        "precision": precision,
        "warmup": warmup,
        "results": results,
    }


def format_bench(record: dict[str, Any], title: str) -> str:
    """One table: a line per batch size with median/p90 latency, latency per image and images/s."""
    header = f"{'batch':>5}  {'median ms':>10}  {'p90 ms':>10}  {'ms/image':>9}  {'images/s':>9}"
    lines = [title, header, "-" * len(header)]
    for r in record["results"]:
        lat = r["latency_ms"]
        lines.append(f"{r['batch']:>5}  {lat['median']:>10.2f}  {lat['p90']:>10.2f}  "
                     f"{r['latency_per_image_ms']:>9.2f}  {r['images_per_s']:>9.2f}")
    return "\n".join(lines)
