"""A small synthetic classification set in ``ImageFolder`` layout, for tests and smoke runs.

Each class is one coloured shape (its own hue, and a circle, square, triangle or cross) at a
random size and place on a noisy dark background: easy enough that a tiny backbone beats
chance within a few CPU epochs, so the whole pretraining pipeline can be checked without
ImageNet. ``hitdet data synth-cls --out DIR`` writes it (:func:`register_synth_cls`).
"""

from __future__ import annotations

import argparse
import colorsys
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hitdet.errors import UserError
from hitdet.io import write_json_atomic

SHAPES = ("circle", "square", "triangle", "cross")
FORMAT = "hitdet-synth-cls"
MAX_CLASSES = 64
MAX_SIZE = 1024  # pixels a side: a larger --size is a typo (100000: a 28 GiB image in memory)


def class_name(index: int) -> str:
    return f"class_{index:02d}"


def _colour(index: int, num_classes: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(index / num_classes, 0.9, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def _draw(rng: np.random.Generator, size: int, shape: str, colour: tuple[int, int, int]) -> Image.Image:
    noise = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    img = Image.fromarray(noise, "RGB")
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.25, 0.4) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    jitter = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=jitter)
    elif shape == "square":
        draw.rectangle(box, fill=jitter)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=jitter)
    else:
        w = r / 3
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=jitter)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=jitter)
    return img


def write_synthetic_classification(
    out_dir: str | os.PathLike[str],
    *,
    num_classes: int = 4,
    train_per_class: int = 32,
    val_per_class: int = 8,
    image_size: int = 40,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write ``out_dir/{train,val}/class_NN/NNNN.png`` and ``out_dir/synth-cls.json``; returns ``out_dir``.

    Refuses a non-empty ``out_dir`` unless ``force`` (then only the set's own files are replaced).
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise UserError(f"--classes must be between 2 and {MAX_CLASSES}, got {num_classes}")
    if train_per_class < 1 or val_per_class < 0:
        raise UserError("--train-per-class must be >= 1 and --val-per-class >= 0")
    if not 16 <= image_size <= MAX_SIZE:
        raise UserError(f"--size must be between 16 and {MAX_SIZE} pixels, got {image_size}")
    if not 0 <= seed < 2**32:  # numpy's seeds
        raise UserError(f"--seed: must be in [0, 2**32), got {seed}")
    from hitdet.runs import Run

    # --out as every command checks it; --force replaces only the set's own files, once everything else is checked
    with Run(out_dir, force=force, own=("train", "val", "synth-cls.json"), command="data synth-cls") as run:
        return _write_set(run.out, num_classes, train_per_class, val_per_class, image_size, seed)


def _write_set(out: Path, num_classes: int, train_per_class: int, val_per_class: int, image_size: int,
               seed: int) -> Path:
    rng = np.random.default_rng(seed)
    splits = {"train": train_per_class, "val": val_per_class}
    for split, count in splits.items():
        for k in range(num_classes):
            folder = out / split / class_name(k)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _draw(rng, image_size, SHAPES[k % len(SHAPES)], _colour(k, num_classes)).save(folder / f"{i:04d}.png")
    info: dict[str, Any] = {
        "format": FORMAT,
        "classes": [class_name(k) for k in range(num_classes)],
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "image_size": image_size,
        "seed": seed,
    }
    write_json_atomic(out / "synth-cls.json", info)
    return out


def register_synth_cls(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``synth-cls`` to a subparsers object (``hitdet data``'s)."""
    p = sub.add_parser("synth-cls", help="write a small synthetic classification set (ImageFolder layout)")
    p.add_argument("--out", required=True, help="output folder (gets train/ and val/)")
    p.add_argument("--classes", type=int, default=4, help="number of classes (default 4)")
    p.add_argument("--train-per-class", type=int, default=32, help="training images per class (default 32)")
    p.add_argument("--val-per-class", type=int, default=8, help="validation images per class (default 8)")
    p.add_argument("--size", type=int, default=40, help="image side in pixels (default 40)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace the synthetic set in a non-empty folder")
    p.set_defaults(func=_run_synth_cls)
    return p


def _run_synth_cls(args: argparse.Namespace) -> int:
    out = write_synthetic_classification(args.out, num_classes=args.classes, train_per_class=args.train_per_class,
                                         val_per_class=args.val_per_class, image_size=args.size, seed=args.seed,
                                         force=args.force)
    n = args.classes * (args.train_per_class + args.val_per_class)
    print(f"wrote {n} images of {args.classes} classes to {out} (train/, val/)")
    return 0
