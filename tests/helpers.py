"""Small architectures shared by tests: the preset scaled down to tiny widths and images."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hitdet.architecture import Architecture, load_architecture
from search_spaces.detectors import DetectorSettings
from search_spaces.structure import DetectorStructure

# A tiny trinity structure and detector settings for space and strategy tests (64-96 px images).
TINY = DetectorStructure().scaled(0.125).half_depth()
SETTINGS = DetectorSettings(
    num_classes=3,
    min_size=64,
    max_size=96,
    rpn_pre_nms_top_n_train=50,
    rpn_post_nms_top_n_train=20,
    rpn_pre_nms_top_n_test=50,
    rpn_post_nms_top_n_test=20,
    rpn_batch_size_per_image=32,
    box_batch_size_per_image=16,
)


def tiny_arch(width: float = 0.125, num_classes: int = 4, size: int = 64) -> Architecture:
    """The released Hit-Detector at ``width`` x its channels, for ``size``-pixel images."""
    arch = load_architecture("hit-detector")
    settings = replace(
        arch.settings,
        num_classes=num_classes,
        min_size=size,
        max_size=size * 2,
        rpn_pre_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=50,
        rpn_post_nms_top_n_train=50,
        rpn_post_nms_top_n_test=20,
        box_batch_size_per_image=32,
    )
    return replace(arch, structure=arch.structure.scaled(width), settings=settings, name="tiny")


def spread_scores(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``model`` in eval mode with its box predictor redrawn: class logits of a few units, small box deltas.

    Why: a detector with random weights scores every box about 1/K, and comparisons of two
    runs (eager vs exported, CLI vs direct) would then depend on how near-ties sort.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        predictor = model.roi_heads.box_predictor
        for layer, scale in ((predictor.cls_score, 20.0), (predictor.bbox_pred, 0.05)):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * scale)
    return model.eval()


RUN_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def without_run_log(err: str) -> list[str]:
    """stderr's lines other than the run log's (``--no-progress`` echoes RUN/log.txt there: hitdet.runlog)."""
    return [line for line in err.strip().splitlines() if not RUN_LOG_LINE.match(line)]


def tree(root: Path) -> dict[str, Any]:
    """Every path under ``root`` (links not followed) with its content, link target or mode: the file tree."""
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = ("link", os.readlink(path))
        elif path.is_file():
            found[key] = ("file", path.stat().st_mode, path.read_bytes())
        else:
            found[key] = ("dir", path.stat().st_mode)
    return found


@contextlib.contextmanager
def read_only(*folders: Path) -> Iterator[bool]:
    """Make ``folders`` read-only for the block; yields whether that worked (the caller skips if not).

    An ordinary user gets ``chmod 555``. Root ignores permissions, so for root each folder becomes a
    read-only bind mount of itself (undone on exit) where the system lets root mount; that is a real
    read-only folder (writes fail with EROFS), not a simulation of one.
    """
    if os.geteuid() != 0:
        for f in folders:
            f.chmod(0o555)
        try:
            yield True
        finally:
            for f in folders:
                f.chmod(0o755)
        return
    mounted: list[Path] = []
    try:
        for f in folders:
            if subprocess.run(["mount", "--bind", str(f), str(f)], capture_output=True).returncode != 0:
                break
            mounted.append(f)
            if subprocess.run(["mount", "-o", "remount,ro,bind", str(f)], capture_output=True).returncode != 0:
                break
        else:
            yield bool(folders)
            return
        yield False
    finally:
        for f in reversed(mounted):
            subprocess.run(["umount", str(f)], capture_output=True)
