"""The built-in synthetic detection dataset, written in COCO format.

Why: every command that needs data defaults to this dataset, so a user (and the demo) can
search, retrain and evaluate on CPU in minutes without downloading anything. It is made to
be learnable quickly (few distinct shape classes, colours that lean towards each class) yet
to exercise what real COCO files need: non-contiguous category ids, boxes in COCO's small,
medium and large area ranges, overlapping objects, images without objects and three image
aspect ratios (so the aspect-ratio batch sampler has groups to form).

Layout written (the same as COCO's, with ``train``/``val`` split names)::

    DIR/annotations/instances_train.json   DIR/train/000000.png ...
    DIR/annotations/instances_val.json     DIR/val/000000.png ...
"""

from __future__ import annotations

import colorsys
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hitdet.architecture import write_json_atomic
from hitdet.errors import UserError

# Category ids deliberately not contiguous (like COCO's 1..90 with gaps), so the id <-> label
# mapping is exercised by every run. Each class has a base hue; colours are jittered around it.
CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 2, "name": "disc", "supercategory": "shape"},
    {"id": 5, "name": "box", "supercategory": "shape"},
    {"id": 9, "name": "triangle", "supercategory": "shape"},
    {"id": 14, "name": "cross", "supercategory": "shape"},
)
_HUES = {2: 0.0, 5: 0.33, 9: 0.6, 14: 0.15}
# (width, height) of the images: square, landscape and portrait.
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((128, 128), (160, 120), (120, 160))
# COCO's area ranges (absolute pixels): small < 32^2 <= medium < 96^2 <= large.
_SIDE_RANGES = {"small": (8.0, 30.0), "medium": (33.0, 90.0), "large": (100.0, 118.0)}
_SIZE_PROBS = {"small": 0.35, "medium": 0.5, "large": 0.15}
SPLITS = ("train", "val")


@dataclass(frozen=True)
class SynthSpec:
    """How much synthetic data to write; the defaults train on 2 CPU cores in minutes."""

    num_train: int = 320
    num_val: int = 80
    seed: int = 0
    empty_fraction: float = 0.05
    max_objects: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**32:  # numpy's seeds
            raise UserError(f"--seed: must be in [0, 2**32), got {self.seed}")


def split_paths(root: str | os.PathLike[str], split: str) -> tuple[Path, Path]:
    """(images folder, annotation JSON) of ``split`` in a COCO-layout dataset folder."""
    root = Path(root)
    return root / split, root / "annotations" / f"instances_{split}.json"


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A muted texture: low-frequency noise, stripes and fine grain, tinted."""
    grid = rng.random((rng.integers(3, 9), rng.integers(3, 9)))
    low = np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32) / 255
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 24)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    tex = 0.55 * low + rng.uniform(0.1, 0.35) * stripes + 0.1 * rng.random((h, w))
    tint = rng.uniform(0.25, 0.6, size=3)
    img = tex[..., None] * tint[None, None, :] + rng.uniform(0.05, 0.2)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, cat_id: int) -> tuple[int, int, int]:
    hue = (_HUES[cat_id] + rng.uniform(-0.06, 0.06)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _draw(draw: ImageDraw.ImageDraw, cat_id: int, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box  # inclusive pixel extent is [x0, x1-1] x [y0, y1-1]
    xe, ye = x1 - 1, y1 - 1
    dark = tuple(int(c * 0.55) for c in fill)
    if cat_id == 2:
        draw.ellipse((x0, y0, xe, ye), fill=fill)
    elif cat_id == 5:
        draw.rectangle((x0, y0, xe, ye), fill=fill, outline=dark, width=max(1, (x1 - x0) // 10))
    elif cat_id == 9:
        draw.polygon([((x0 + xe) / 2, y0), (x0, ye), (xe, ye)], fill=fill)
    else:
        tw, th = max(2, (x1 - x0) // 3), max(2, (y1 - y0) // 3)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((x0, cy - th // 2, xe, cy - th // 2 + th - 1), fill=fill)
        draw.rectangle((cx - tw // 2, y0, cx - tw // 2 + tw - 1, ye), fill=fill)


def _image(rng: np.random.Generator, spec: SynthSpec) -> tuple[Image.Image, list[tuple[int, tuple[int, ...]]]]:
    w, h = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
    img = Image.fromarray(_background(rng, w, h))
    draw = ImageDraw.Draw(img)
    count = 0 if rng.random() < spec.empty_fraction else int(rng.integers(1, spec.max_objects + 1))
    objects: list[tuple[int, tuple[int, ...]]] = []
    kinds, probs = list(_SIZE_PROBS), list(_SIZE_PROBS.values())
    for _ in range(count):
        cat = CATEGORIES[rng.integers(len(CATEGORIES))]["id"]
        kind = kinds[rng.choice(len(kinds), p=probs)]
        for _attempt in range(20):
            side = rng.uniform(*_SIDE_RANGES[kind])
            aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
            bw = int(round(min(w - 2, max(4.0, side * np.sqrt(aspect)))))
            bh = int(round(min(h - 2, max(4.0, side / np.sqrt(aspect)))))
            x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            box = (x0, y0, x0 + bw, y0 + bh)
            # Overlaps are allowed, but not so much that an object is mostly hidden.
            if all(_iou(box, b) <= 0.3 for _, b in objects):
                break
        else:
            continue
        _draw(draw, cat, box, _colour(rng, cat))
        objects.append((cat, box))
    arr = np.asarray(img, np.int16) + rng.integers(-6, 7, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), objects


def _write_split(root: Path, split: str, count: int, spec: SynthSpec) -> None:
    folder = root / split
    folder.mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        # One generator per image: an image does not change when the counts do.
        rng = np.random.default_rng([spec.seed, SPLITS.index(split), i])
        img, objects = _image(rng, spec)
        name = f"{i:06d}.png"
        img.save(folder / name)
        images.append({"id": i + 1, "file_name": name, "width": img.width, "height": img.height})
        for cat, (x0, y0, x1, y1) in objects:
            bw, bh = x1 - x0, y1 - y0
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": i + 1,
                "category_id": cat,
                "bbox": [float(x0), float(y0), float(bw), float(bh)],
                "area": float(bw * bh),
                "iscrowd": 0,
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            })
    write_json_atomic(
        root / "annotations" / f"instances_{split}.json",
        {
            "info": {"description": f"hitdet synthetic shapes ({split})", "version": "1", "seed": spec.seed},
            "images": images,
            "annotations": annotations,
            "categories": [dict(c) for c in CATEGORIES],
        },
    )


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse an existing non-empty output folder unless ``force`` (nothing is written here)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out}: folder exists and is not empty (use --force to replace it)")


def write_synthetic(out: str | os.PathLike[str], spec: SynthSpec | None = None, force: bool = False) -> Path:
    """Write the synthetic dataset to ``out``: deterministic for ``spec.seed``.

    Everything is written to a temporary sibling folder first and renamed at the end, so an
    interrupted run leaves no half-written dataset behind.
    """
    spec = spec or SynthSpec()
    if spec.num_train < 1 or spec.num_val < 1:
        raise UserError(
            f"synthetic dataset: need at least one train and one val image, got {spec.num_train}/{spec.num_val}"
        )
    out = Path(out)
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for split, count in zip(SPLITS, (spec.num_train, spec.num_val), strict=True):
            _write_split(tmp, split, count, spec)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
