"""The ``photos`` dataset style: real objects pasted on real photographs, made from files that ship in pip packages.

Why: the two drawn styles (``shapes``, ``glyphs``) are what a search can be tuned on without
looking; a detector user judges on photographs. Nothing here is downloaded: every pixel of an
object or a background comes from a file inside an installed package, and the same seed with the
same package versions writes the same bytes.

Sources (``scikit-image`` is needed: ``pip install 'hitdet[photos]'``; matplotlib is a dependency):

- **backgrounds**: random crops (a quarter to the whole of the shorter side, flipped at random) of
  the photographs bundled with scikit-image; train and val crop *different* photographs
  (:data:`TRAIN_PHOTOS`, :data:`VAL_PHOTOS`), so val scenes were never seen in training;
- **face** (id 1): the 100 face crops of scikit-image's ``lfw_subset`` (Labeled Faces in the Wild,
  25x25 grey): faces 0-69 are drawn in train, 70-99 in val;
- **coin** (id 3): the 24 coins segmented out of scikit-image's ``coins`` photograph (pasted with
  their mask, at any rotation): 16 in train, 8 in val;
- **eight letters** (ids 4, 6, 7, 10, 12, 15, 18, 22: A E G K M R S W) rendered from the fonts that
  matplotlib ships: 10 fonts for train, 7 *other* fonts for val (:data:`TRAIN_FONTS`,
  :data:`VAL_FONTS`), filled in a colour that contrasts with the background under them, sometimes
  outlined;
- **clutter** (not annotated): the 100 non-face crops of ``lfw_subset`` (70 train / 30 val), pasted
  like faces, so that "a grey square patch" is not yet a face.

Images are 128x128, 160x120 or 120x160 (as ``shapes``, so the CPU recipes fit), with 0-5 objects
whose boxes overlap by at most IoU 0.2, about 30 % small / 55 % medium / 15 % large. Category ids
are not contiguous, so the id mapping is exercised. Every box is tight around the object's own
pixels (the glyph's ink, the coin's mask, the face crop's square).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from hitdet.errors import UserError

LETTERS = "AEGKMRSW"
_LETTER_IDS = (4, 6, 7, 10, 12, 15, 18, 22)
PHOTO_CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "face", "supercategory": "object"},
    {"id": 3, "name": "coin", "supercategory": "object"},
    *({"id": i, "name": f"letter_{c}", "supercategory": "letter"} for c, i in zip(LETTERS, _LETTER_IDS, strict=True)),
)
FACE, COIN = 1, 3
_LETTER_OF = dict(zip(_LETTER_IDS, LETTERS, strict=True))

# scikit-image's bundled photographs (by loader name) and matplotlib's sample photograph; disjoint per split.
# Photographs that show a face or letters (astronaut, camera, grace_hopper, page, text) are left out: an
# unannotated face or letter in the background would be a true object the val set calls a false positive.
TRAIN_PHOTOS = ("coffee", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "brick", "grass",
                "immunohistochemistry")
VAL_PHOTOS = ("chelsea", "retina", "gravel", "clock", "moon", "cell")
TRAIN_FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSerif", "DejaVuSerif-Bold",
               "DejaVuSansMono", "STIXGeneral", "STIXGeneralBol", "cmr10", "cmss10")
VAL_FONTS = ("DejaVuSans-BoldOblique", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic", "DejaVuSansMono-Bold",
             "STIXGeneralItalic", "cmb10", "cmtt10")
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((128, 128), (160, 120), (120, 160))
_SIDE_RANGES = {"small": (12.0, 30.0), "medium": (33.0, 80.0), "large": (97.0, 112.0)}
_SIZE_PROBS = {"small": 0.3, "medium": 0.55, "large": 0.15}
_MAX_IOU = 0.2


def _skimage_data() -> Any:
    try:
        import skimage.data as data
    except ImportError:
        raise UserError("the photos style needs scikit-image: pip install 'hitdet[photos]' "
                        "(or pip install scikit-image)") from None
    return data


@functools.cache
def _photo(name: str) -> np.ndarray:
    """One background photograph as uint8 RGB."""
    if name == "motorcycle_left" or name == "motorcycle_right":
        left, right, _ = _skimage_data().stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(_skimage_data(), name)()
    img = np.asarray(img)
    if img.dtype != np.uint8:  # float [0, 1] or 16-bit
        img = (np.clip(img / (img.max() or 1), 0, 1) * 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


@functools.cache
def _lfw() -> np.ndarray:
    """scikit-image's 200 LFW crops (25x25, grey, floats): 100 faces, then 100 non-faces."""
    return np.asarray(_skimage_data().lfw_subset())


@functools.cache
def _coins() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The 24 coins of scikit-image's ``coins`` photograph: (grey crop, mask) each, in reading order.

    The segmentation is scikit-image's own textbook one: a Sobel elevation map flooded by a
    watershed from dark (background) and bright (coin) markers, holes filled.
    """
    from scipy import ndimage
    from skimage import filters, measure, segmentation

    img = _skimage_data().coins()
    markers = np.zeros_like(img)
    markers[img < 30], markers[img > 150] = 1, 2
    mask = ndimage.binary_fill_holes(segmentation.watershed(filters.sobel(img), markers) - 1)
    regions = [r for r in measure.regionprops(measure.label(mask)) if r.area > 300]
    regions.sort(key=lambda r: (round(r.bbox[0] / 60), r.bbox[1]))
    out = []
    for r in regions:
        y0, x0, y1, x1 = r.bbox
        out.append((img[y0:y1, x0:x1].copy(), r.image.copy()))
    return tuple(out)


@functools.cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", f"{name}.ttf"), size)


def _split_sources(split: str) -> dict[str, Any]:
    """What a split may draw from: its photos, fonts, face/clutter indices and coins."""
    train = split == "train"
    coins = _coins()
    coin_ids = [i for i in range(len(coins)) if (i % 3 != 2) == train]  # 16 train, 8 val
    return {
        "photos": TRAIN_PHOTOS if train else VAL_PHOTOS,
        "fonts": TRAIN_FONTS if train else VAL_FONTS,
        "faces": range(0, 70) if train else range(70, 100),
        "clutter": range(100, 170) if train else range(170, 200),
        "coins": coin_ids,
    }


def _background(rng: np.random.Generator, photos: tuple[str, ...], w: int, h: int) -> Image.Image:
    src = _photo(photos[rng.integers(len(photos))])
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.25, 1.0) * min(sh / h, sw / w)
    cw, ch = max(8, int(w * scale)), max(8, int(h * scale))
    x0, y0 = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
    img = Image.fromarray(src[y0:y0 + ch, x0:x0 + cw]).resize((w, h), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def _box(rng: np.random.Generator, w: int, h: int, aspect: float,
         placed: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    """A box of a random size class and the given aspect (w/h) overlapping no placed box by more than IoU 0.2."""
    from hitdet.data.synth import _iou

    kinds, probs = list(_SIZE_PROBS), list(_SIZE_PROBS.values())
    for _ in range(20):
        side = rng.uniform(*_SIDE_RANGES[kinds[rng.choice(len(kinds), p=probs)]])
        bw = int(round(min(w - 2, max(6.0, side * np.sqrt(aspect)))))
        bh = int(round(min(h - 2, max(6.0, side / np.sqrt(aspect)))))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        box = (x0, y0, x0 + bw, y0 + bh)
        if all(_iou(box, b) <= _MAX_IOU for b in placed):
            return box
    return None


def _grey_patch(rng: np.random.Generator, grey: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A grey crop resized to ``size`` with jittered brightness and contrast, as RGB."""
    arr = grey.astype(np.float32)
    if arr.max() > 1.5:
        arr = arr / 255.0
    arr = (arr - arr.mean()) * rng.uniform(0.8, 1.25) + arr.mean() + rng.uniform(-0.12, 0.12)
    patch = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    return patch.convert("RGB")


Box = tuple[int, int, int, int]


def _letter(rng: np.random.Generator, font_name: str, cat: int, bg: Image.Image,
            placed: list[Box]) -> tuple[Box, Image.Image, Image.Image] | None:
    """(box, colour layer, mask) of one letter, or None when it does not fit."""
    font = _font(font_name, 96)
    canvas = Image.new("L", (160, 160), 0)
    ImageDraw.Draw(canvas).text((20, 10), _LETTER_OF[cat], font=font, fill=255)
    ink = canvas.getbbox()
    if ink is None:
        return None
    glyph = canvas.crop(ink)
    box = _box(rng, bg.width, bg.height, glyph.width / glyph.height * rng.uniform(0.85, 1.15), placed)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    mask = glyph.resize((x1 - x0, y1 - y0), Image.BILINEAR)
    under = np.asarray(bg.crop(box), np.float32).mean() / 255
    value = rng.uniform(0.0, 0.3) if under > 0.5 else rng.uniform(0.75, 1.0)
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.9), value)
    layer = Image.new("RGB", mask.size, (int(r * 255), int(g * 255), int(b * 255)))
    if rng.random() < 0.3:  # an outline in the opposite tone, as on signs
        edge = mask.filter(ImageFilter.MaxFilter(3))
        outline = Image.new("RGB", mask.size, (255, 255, 255) if value < 0.5 else (0, 0, 0))
        layer = Image.composite(layer, outline, mask)
        mask = edge
    tight = mask.point(lambda v: 255 if v > 96 else 0).getbbox()
    if tight is None:
        return None
    return box, layer, mask


def photo_image(rng: np.random.Generator, split: str, max_objects: int = 5,
                empty_fraction: float = 0.05) -> tuple[Image.Image, list[tuple[int, tuple[int, int, int, int]]]]:
    """One image of the photos style and its (category id, box) list; boxes are (x0, y0, x1, y1), exclusive."""
    src = _split_sources(split)
    w, h = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
    img = _background(rng, src["photos"], w, h)
    placed: list[tuple[int, int, int, int]] = []
    objects: list[tuple[int, tuple[int, int, int, int]]] = []
    # clutter first (under the objects): a non-face crop or two in some images
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.4 else 0):
        box = _box(rng, w, h, rng.uniform(0.85, 1.15), placed)
        if box is not None:
            grey = _lfw()[src["clutter"][rng.integers(len(src["clutter"]))]]
            img.paste(_grey_patch(rng, grey, (box[2] - box[0], box[3] - box[1])), box[:2])
            placed.append(box)
    count = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
    ids = [c["id"] for c in PHOTO_CATEGORIES]
    for _ in range(count):
        cat = ids[rng.integers(len(ids))]
        if cat == FACE:
            box = _box(rng, w, h, rng.uniform(0.85, 1.15), placed)
            if box is None:
                continue
            grey = _lfw()[src["faces"][rng.integers(len(src["faces"]))]]
            img.paste(_grey_patch(rng, grey, (box[2] - box[0], box[3] - box[1])), box[:2])
        elif cat == COIN:
            grey, mask = _coins()[src["coins"][rng.integers(len(src["coins"]))]]
            angle = float(rng.uniform(0, 360))
            patch = Image.fromarray(grey).rotate(angle, expand=True, resample=Image.BILINEAR)
            pmask = Image.fromarray(mask.astype(np.uint8) * 255).rotate(angle, expand=True, resample=Image.BILINEAR)
            inner = pmask.point(lambda v: 255 if v > 127 else 0).getbbox()
            if inner is None:
                continue
            patch, pmask = patch.crop(inner), pmask.crop(inner)
            box = _box(rng, w, h, patch.width / patch.height, placed)
            if box is None:
                continue
            size = (box[2] - box[0], box[3] - box[1])
            img.paste(_grey_patch(rng, np.asarray(patch), size), box[:2], pmask.resize(size, Image.BILINEAR))
        else:
            found = _letter(rng, src["fonts"][rng.integers(len(src["fonts"]))], cat, img, placed)
            if found is None:
                continue
            box, layer, mask = found
            img.paste(layer, box[:2], mask)
            tight = mask.point(lambda v: 255 if v > 96 else 0).getbbox()
            box = (box[0] + tight[0], box[1] + tight[1], box[0] + tight[2], box[1] + tight[3])
        placed.append(box)
        objects.append((cat, box))
    arr = np.asarray(img, np.int16) + rng.integers(-6, 7, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), objects
