"""The built-in synthetic detection dataset, written in COCO format.

Why: every command that needs data defaults to this dataset, so a user (and the demo) can
search, retrain and evaluate on CPU in minutes without downloading anything. It is made to
be learnable quickly (few distinct shape classes, colours that lean towards each class) yet
to exercise what real COCO files need: non-contiguous category ids, boxes in COCO's small,
medium and large area ranges, overlapping objects, images without objects and three image
aspect ratios (so the aspect-ratio batch sampler has groups to form).

Two styles, with different statistics, so that a result can be checked on a second dataset:

- ``shapes`` (default): four shape classes (ids 2, 5, 9, 14), colours that lean towards each
  class, textured backgrounds, about 35 % small / 50 % medium / 15 % large boxes;
- ``glyphs``: seven outline-and-fill glyph classes (ids 3, 4, 7, 11, 16, 21, 30) whose colour
  is drawn independently of the class (only the shape tells the class), on gradients with soft
  blobs or on checkerboards, more and smaller objects (about 55 % small / 40 % medium / 5 %
  large, up to 6 per image), other image sizes.

Layout written (the same as COCO's, with ``train``/``val`` split names)::

    DIR/annotations/instances_train.json   DIR/train/000000.png ...
    DIR/annotations/instances_val.json     DIR/val/000000.png ...
"""

from __future__ import annotations

import colorsys
import contextlib
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hitdet.errors import UserError
from hitdet.io import check_creatable, write_json_atomic

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
STYLES = ("shapes", "glyphs", "photos")  # photos: hitdet.data.photos (real objects on real photographs)

# The "glyphs" style: other classes, ids, sizes and colour statistics than "shapes".
GLYPH_CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 3, "name": "ring", "supercategory": "glyph"},
    {"id": 4, "name": "star", "supercategory": "glyph"},
    {"id": 7, "name": "diamond", "supercategory": "glyph"},
    {"id": 11, "name": "bar", "supercategory": "glyph"},
    {"id": 16, "name": "chevron", "supercategory": "glyph"},
    {"id": 21, "name": "ellipse", "supercategory": "glyph"},
    {"id": 30, "name": "hexagon", "supercategory": "glyph"},
)
GLYPH_IMAGE_SIZES: tuple[tuple[int, int], ...] = ((144, 112), (112, 144), (136, 136))
_GLYPH_SIDE_RANGES = {"small": (10.0, 30.0), "medium": (33.0, 80.0), "large": (98.0, 108.0)}
_GLYPH_SIZE_PROBS = {"small": 0.55, "medium": 0.4, "large": 0.05}


def style_categories(style: str) -> tuple[dict[str, Any], ...]:
    """The categories a style writes (ids and names)."""
    if style not in STYLES:
        raise UserError(f"synthetic dataset: unknown style {style!r} (known: {', '.join(STYLES)})")
    if style == "photos":
        from hitdet.data.photos import PHOTO_CATEGORIES

        return PHOTO_CATEGORIES
    return CATEGORIES if style == "shapes" else GLYPH_CATEGORIES


@dataclass(frozen=True)
class SynthSpec:
    """How much synthetic data to write; the defaults train on 2 CPU cores in minutes."""

    num_train: int = 320
    num_val: int = 80
    seed: int = 0
    empty_fraction: float = 0.05
    max_objects: int = 4  # the glyphs style draws up to max_objects + 2, photos up to max_objects + 1
    style: str = "shapes"  # or "glyphs", "photos": other datasets with other statistics (see the module docstring)

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


def _place_box(
    rng: np.random.Generator, w: int, h: int, sides: tuple[float, float], aspects: tuple[float, float],
    min_side: float, max_iou: float, objects: list[tuple[int, tuple[int, ...]]],
) -> tuple[int, int, int, int] | None:
    """A box of a random side and aspect that overlaps no placed object by more than ``max_iou`` (20 tries)."""
    for _attempt in range(20):
        side = rng.uniform(*sides)
        aspect = float(np.exp(rng.uniform(np.log(aspects[0]), np.log(aspects[1]))))
        bw = int(round(min(w - 2, max(min_side, side * np.sqrt(aspect)))))
        bh = int(round(min(h - 2, max(min_side, side / np.sqrt(aspect)))))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        box = (x0, y0, x0 + bw, y0 + bh)
        if all(_iou(box, b) <= max_iou for _, b in objects):
            return box
    return None


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
        # Overlaps are allowed, but not so much that an object is mostly hidden.
        box = _place_box(rng, w, h, _SIDE_RANGES[kind], (0.5, 2.0), 4.0, 0.3, objects)
        if box is None:
            continue
        _draw(draw, cat, box, _colour(rng, cat))
        objects.append((cat, box))
    arr = np.asarray(img, np.int16) + rng.integers(-6, 7, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), objects


def _glyph_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A linear colour gradient with soft blobs, or a checkerboard of two random colours."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(angle) + yy * np.sin(angle)) / max(w, h)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        a, b = rng.uniform(0.1, 0.9, size=3), rng.uniform(0.1, 0.9, size=3)
        img = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
        for _ in range(int(rng.integers(2, 7))):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 40)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
            img = img * (1 - 0.6 * blob) + 0.6 * blob * rng.uniform(0, 1, size=3)[None, None, :]
    else:
        cell = int(rng.integers(6, 20))
        check = ((xx // cell + yy // cell) % 2)[..., None]
        a, b = rng.uniform(0.15, 0.85, size=3), rng.uniform(0.15, 0.85, size=3)
        img = a[None, None, :] * (1 - check) + b[None, None, :] * check
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _glyph_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Any hue, whatever the class: the class is told by the shape alone."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _draw_glyph(draw: ImageDraw.ImageDraw, cat_id: int, box: tuple[int, int, int, int],
                fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    xe, ye = x1 - 1, y1 - 1
    cx, cy = (x0 + xe) / 2, (y0 + ye) / 2
    rx, ry = (xe - x0) / 2, (ye - y0) / 2
    edge = tuple(255 - c for c in fill)  # a contrasting outline: shape, not colour, separates classes
    line = max(1, int(min(x1 - x0, y1 - y0) // 8))
    if cat_id == 3:  # ring: a hollow ellipse
        draw.ellipse((x0, y0, xe, ye), outline=fill, width=max(2, int(min(x1 - x0, y1 - y0) // 5)))
    elif cat_id == 4:  # star: five points
        pts = []
        for k in range(10):
            ang = -np.pi / 2 + k * np.pi / 5
            f = 1.0 if k % 2 == 0 else 0.42
            pts.append((cx + f * rx * np.cos(ang), cy + f * ry * np.sin(ang)))
        draw.polygon(pts, fill=fill, outline=edge)
    elif cat_id == 7:  # diamond
        draw.polygon([(cx, y0), (xe, cy), (cx, ye), (x0, cy)], fill=fill, outline=edge)
    elif cat_id == 11:  # bar: a thick diagonal stroke corner to corner
        draw.line([(x0, y0), (xe, ye)], fill=fill, width=max(2, int(min(x1 - x0, y1 - y0) // 3)))
    elif cat_id == 16:  # chevron: a thick V
        draw.line([(x0, y0), (cx, ye), (xe, y0)], fill=fill, width=max(2, int(min(x1 - x0, y1 - y0) // 4)),
                  joint="curve")
    elif cat_id == 21:  # ellipse: filled, with an outline
        draw.ellipse((x0, y0, xe, ye), fill=fill, outline=edge, width=line)
    else:  # hexagon
        pts = [(cx + rx * np.cos(np.pi / 3 * k), cy + ry * np.sin(np.pi / 3 * k)) for k in range(6)]
        draw.polygon(pts, fill=fill, outline=edge)


def _glyph_image(rng: np.random.Generator, spec: SynthSpec) -> tuple[Image.Image, list[tuple[int, tuple[int, ...]]]]:
    w, h = GLYPH_IMAGE_SIZES[rng.integers(len(GLYPH_IMAGE_SIZES))]
    img = Image.fromarray(_glyph_background(rng, w, h))
    draw = ImageDraw.Draw(img)
    count = 0 if rng.random() < spec.empty_fraction else int(rng.integers(1, spec.max_objects + 3))
    objects: list[tuple[int, tuple[int, ...]]] = []
    kinds, probs = list(_GLYPH_SIZE_PROBS), list(_GLYPH_SIZE_PROBS.values())
    for _ in range(count):
        cat = GLYPH_CATEGORIES[rng.integers(len(GLYPH_CATEGORIES))]["id"]
        kind = kinds[rng.choice(len(kinds), p=probs)]
        box = _place_box(rng, w, h, _GLYPH_SIDE_RANGES[kind], (0.6, 1.6), 6.0, 0.2, objects)
        if box is None:
            continue
        _draw_glyph(draw, cat, box, _glyph_colour(rng))
        objects.append((cat, box))
    arr = np.asarray(img, np.int16) + rng.integers(-10, 11, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), objects


def _write_split(root: Path, split: str, count: int, spec: SynthSpec) -> None:
    folder = root / split
    folder.mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        # One generator per image: an image does not change when the counts do.
        rng = np.random.default_rng([spec.seed, SPLITS.index(split), i])
        if spec.style == "photos":
            from hitdet.data.photos import photo_image

            img, objects = photo_image(rng, split, max_objects=spec.max_objects + 1, empty_fraction=spec.empty_fraction)
        else:
            img, objects = _glyph_image(rng, spec) if spec.style == "glyphs" else _image(rng, spec)
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
            "info": {"description": f"hitdet synthetic {spec.style} ({split})", "version": "1", "seed": spec.seed},
            "images": images,
            "annotations": annotations,
            "categories": [dict(c) for c in style_categories(spec.style)],
        },
    )


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse an existing non-empty output folder unless ``force`` (nothing is written here).

    The run lifecycle's own check (:func:`hitdet.runs.check_out`): also a symlink or an unwritable
    parent is refused, as for every command.
    """
    from hitdet.runs import check_out

    check_out(Path(out), resume=False, force=force, resumable=False)


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO)


@contextlib.contextmanager
def staged_output_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``out`` and rename it to ``out`` when the block succeeds.

    Why: a command killed or failing half-way leaves no half-written output folder behind (the
    temporary one is removed on error). An existing ``out`` is replaced only on success; call
    :func:`check_output_dir` first.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out)
        # the PID in the name lets a later run tell a killed run's leftover from a live run's folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise UserError(f"{out.parent}: cannot write: {exc.strerror or exc}") from None
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as exc:  # a full disk half-way: one line, and nothing left behind
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno not in DISK_ERRORS:
            raise
        name = f" {exc.filename}" if exc.filename else ""
        raise UserError(f"{out}: cannot write{name}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the ``.OUT.PID.*.tmp`` folders next to ``out`` that a killed run left (its PID is gone).

    A run killed with SIGKILL cannot clean up after itself; the next run into the same ``out`` does.
    A folder whose process still runs (another run writing the same place) is left alone.
    """
    removed = []
    for p in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        pid = p.name[len(out.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or not p.is_dir() or p.is_symlink() or _alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def write_synthetic(out: str | os.PathLike[str], spec: SynthSpec | None = None, force: bool = False) -> Path:
    """Write the synthetic dataset to ``out``: deterministic for ``spec.seed``.

    Everything is written to a temporary sibling folder first and renamed at the end, so an
    interrupted run leaves no half-written dataset behind.
    """
    spec = spec or SynthSpec()
    style_categories(spec.style)  # an unknown style fails here, before anything is written
    if spec.num_train < 1 or spec.num_val < 1:
        raise UserError(
            f"synthetic dataset: need at least one train and one val image, got {spec.num_train}/{spec.num_val}"
        )
    out = Path(out)
    check_output_dir(out, force)
    check_creatable(out)  # staged_output_dir creates a sibling of out
    with staged_output_dir(out) as tmp:
        for split, count in zip(SPLITS, (spec.num_train, spec.num_val), strict=True):
            _write_split(tmp, split, count, spec)
    return out
