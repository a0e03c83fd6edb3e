"""COCO-format detection datasets (an images folder + an annotation JSON) for torchvision.

Why a class of our own rather than ``torchvision.datasets.CocoDetection``: real COCO files
have quirks that training must handle and the search must see identically:

- category ids that are not contiguous (COCO's run 1..90 with gaps) become training labels
  1..K (0 is the background) and are mapped back with :attr:`CocoDetection.label_to_cat_id`
  when results are written;
- ``iscrowd`` annotations are kept out of the training targets (the evaluator reads them
  from the JSON);
- images with no annotations are kept (empty targets);
- out-of-image boxes are clipped, degenerate ones (no area after clipping) dropped, both
  counted in :attr:`CocoDetection.box_stats` with one warning per dataset;
- grayscale, palette, RGBA and other modes are converted to RGB.

Malformed input raises :class:`hitdet.errors.UserError` naming the file and the record.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from hitdet.errors import UserError
from hitdet.io import MAX_IMAGE_PIXELS, open_image, read_json

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


class DataError(UserError):
    """A dataset file or record that cannot be used.

    ``problems``: every problem found (up to the limit asked for; the message is the first), for
    ``hitdet data check``, which lists them.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class Problems:
    """Collects a dataset's problems; raises a :class:`DataError` once ``limit`` are found (1: the first)."""

    def __init__(self, limit: int = 1) -> None:
        self.limit = max(1, limit)
        self.found: list[str] = []

    def add(self, message: str) -> None:
        self.found.append(message)
        if len(self.found) >= self.limit:
            self.raise_any()

    def raise_any(self) -> None:
        if self.found:
            raise DataError(self.found[0], list(self.found))


def _is_id(v: Any) -> bool:
    """An integer id; not a bool (JSON ``true`` is 1 to Python, and would pass for image 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _refers(v: Any, ids: set[int]) -> bool:
    """``v`` is one of ``ids`` (a list or object is not: unhashable; nor ``true``, though ``True in {1}``)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v in ids


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def read_annotations(path: str | os.PathLike[str], max_problems: int = 1) -> dict[str, Any]:
    """Read and check a COCO annotation JSON; errors name the file and the record.

    ``max_problems``: how many problems to collect before raising (:class:`DataError`'s ``problems``);
    1 raises at the first.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    data = read_json(path, what="annotation file", error=DataError)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: '{key}' is missing or not a list")
    data.setdefault("annotations", [])
    if not isinstance(data["annotations"], list):
        raise DataError(f"{path}: 'annotations' is not a list")
    problems = Problems(max_problems)
    cat_ids = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_id(cat.get("id")):
            problems.add(f"{path}: categories[{i}]: needs an integer 'id'")
            continue
        cat_ids.add(cat["id"])
    image_ids = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_id(img.get("id")):
            problems.add(f"{path}: images[{i}]: needs an integer 'id'")
            continue
        if img["id"] in image_ids:
            problems.add(f"{path}: images[{i}]: duplicate image id {img['id']}")
            continue
        image_ids.add(img["id"])
        if not isinstance(img.get("file_name"), str):
            problems.add(f"{path}: images[{i}] (id {img['id']}): needs a 'file_name'")
        for key in ("width", "height"):
            if key in img and not (_is_number(img[key]) and img[key] > 0):
                problems.add(f"{path}: images[{i}] (id {img['id']}): '{key}' must be a positive number")
        w, h = img.get("width"), img.get("height")
        if _is_number(w) and _is_number(h) and w > 0 and h > 0 and w * h > MAX_IMAGE_PIXELS:
            problems.add(f"{path}: images[{i}] (id {img['id']}): declares {w:g}x{h:g} pixels, more than any image "
                         f"hitdet reads ({MAX_IMAGE_PIXELS} pixels); the JSON's width/height are wrong")
    ann_ids: dict[int, int] = {}
    for i, ann in enumerate(data["annotations"]):
        has_id = isinstance(ann, dict) and "id" in ann
        where = f"{path}: annotations[{i}]" + (f" (id {ann['id']})" if has_id else "")
        if not isinstance(ann, dict):
            problems.add(f"{where}: expected an object")
            continue
        bbox = ann.get("bbox")
        if bbox is None:
            problems.add(f"{where}: no 'bbox'")
        elif not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problems.add(f"{where}: 'bbox' must be [x, y, width, height] numbers, got {bbox!r}")
        if not _refers(ann.get("image_id"), image_ids):
            problems.add(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if not _refers(ann.get("category_id"), cat_ids):
            problems.add(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        crowd = ann.get("iscrowd", 0)
        if not (isinstance(crowd, bool) or (isinstance(crowd, int) and crowd in (0, 1))):
            problems.add(f"{where}: 'iscrowd' must be 0 or 1 (or true/false), got {crowd!r}")
        if has_id:
            if not _is_id(ann["id"]):
                problems.add(f"{where}: 'id' must be an integer, got {ann['id']!r}")
            elif ann["id"] in ann_ids:
                problems.add(f"{where}: duplicate annotation id {ann['id']} (also annotations[{ann_ids[ann['id']]}]); "
                             "evaluation would merge them")
            else:
                ann_ids[ann["id"]] = i
    problems.raise_any()
    next_id = max(ann_ids, default=0) + 1
    for ann in data["annotations"]:
        ann["iscrowd"] = int(ann.get("iscrowd", 0))
        bbox = ann["bbox"]
        ann.setdefault("area", float(bbox[2] * bbox[3]))
        if "id" not in ann:  # numbered after the file's own ids, never onto one of them
            ann["id"] = next_id
            next_id += 1
    return data


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` index over an already-loaded dict, without its prints."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_rgb(path: Path, record: str) -> Image.Image:
    """Open an image as RGB (grayscale, palette, RGBA, CMYK... converted); errors name it."""
    try:
        with open_image(path, record) as img:
            img.load()
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(img, dtype=np.float32)
                scale = 255.0 / max(float(arr.max()), 1.0) if arr.max() > 255 else 1.0
                img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8))
            return img.convert("RGB")
    except UserError as exc:
        raise DataError(str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode image ({record}): {exc}") from None


def image_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB image as the float 3xHxW tensor in [0, 1] every detector here takes."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)


class CocoDetection(Dataset):
    """A COCO-format dataset giving ``(image, target)`` pairs for torchvision detectors.

    ``image`` is a float tensor 3xHxW in [0, 1]; ``target`` has ``boxes`` (float Nx4, xyxy,
    pixels), ``labels`` (int64, 1..K), ``image_id`` (int, the COCO id) and ``iscrowd`` (0).
    ``categories``, when given, fixes the label order (label i+1 is ``categories[i]``): pass
    the category ids a model was trained with so that its labels mean the same here.
    """

    def __init__(
        self,
        images: str | os.PathLike[str],
        annotations: str | os.PathLike[str],
        transforms: Transform | None = None,
        categories: Sequence[int] | None = None,
        max_problems: int = 1,
    ) -> None:
        self.images_dir = Path(images)
        self.ann_file = Path(annotations)
        if not self.images_dir.is_dir():
            raise DataError(f"{self.images_dir}: images folder not found")
        data = read_annotations(self.ann_file, max_problems=max_problems)
        self.coco = coco_from_dict(data)
        self.transforms = transforms
        found = sorted(self.coco.getCatIds())
        if categories is None:
            categories = found
        else:
            categories = [int(c) for c in categories]
            missing = sorted(set(found) - set(categories))
            if missing:
                raise DataError(f"{self.ann_file}: category ids {missing} are not among the model's {categories}")
        self.cat_ids: list[int] = list(categories)
        self.cat_id_to_label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.label_to_cat_id = {i + 1: cid for i, cid in enumerate(self.cat_ids)}
        self.ids: list[int] = sorted(self.coco.imgs)
        self.box_stats = {"clipped": 0, "dropped": 0, "crowd": 0}
        self._targets = [self._make_target(i) for i in self.ids]
        if self.box_stats["clipped"] or self.box_stats["dropped"]:
            warnings.warn(
                f"{self.ann_file}: {self.box_stats['clipped']} box(es) clipped to their image, "
                f"{self.box_stats['dropped']} degenerate box(es) dropped",
                UserWarning,
                stacklevel=2,
            )

    @property
    def num_classes(self) -> int:
        """Number of object classes, without the background."""
        return len(self.cat_ids)

    def categories(self) -> list[dict[str, Any]]:
        """The category records (id, name), in label order."""
        return [{"id": c, "name": self.coco.cats[c].get("name", str(c))} if c in self.coco.cats else {"id": c}
                for c in self.cat_ids]

    def image_size(self, image_id: int) -> tuple[int, int]:
        """(width, height) from the JSON, or read from the image header when absent."""
        info = self.coco.imgs[image_id]
        if "width" in info and "height" in info:
            return int(info["width"]), int(info["height"])
        path = self.images_dir / info["file_name"]
        try:
            with open_image(path, f"image id {image_id}") as img:
                info["width"], info["height"] = img.size
        except UserError as exc:
            raise DataError(str(exc)) from None
        return int(info["width"]), int(info["height"])

    @property
    def aspect_ratios(self) -> list[float]:
        """width / height of every image, in dataset order (for aspect-ratio batching)."""
        return [w / h for w, h in (self.image_size(i) for i in self.ids)]

    def _make_target(self, image_id: int) -> Target:
        w, h = self.image_size(image_id)
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0):
                self.box_stats["crowd"] += 1
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            x0, y0, x1, y1 = x, y, x + bw, y + bh
            cx0, cy0, cx1, cy1 = min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h)
            if cx1 - cx0 < 1.0 or cy1 - cy0 < 1.0:
                self.box_stats["dropped"] += 1
                continue
            if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
                self.box_stats["clipped"] += 1
            boxes.append([cx0, cy0, cx1, cy1])
            labels.append(self.cat_id_to_label[ann["category_id"]])
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": image_id,
        }

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        img = load_rgb(self.images_dir / info["file_name"], f"image id {image_id}")
        self._check_size(image_id, img)
        image = image_tensor(img)
        target = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self._targets[index].items()}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _check_size(self, image_id: int, img: Image.Image) -> None:
        """The JSON's width/height (which place and clip the boxes) are the file's."""
        info = self.coco.imgs[image_id]
        if "width" in info and "height" in info and (int(info["width"]), int(info["height"])) != img.size:
            raise DataError(f"{self.ann_file}: image id {image_id} ({info['file_name']}) declares "
                            f"{info['width']}x{info['height']} pixels, the file has {img.size[0]}x{img.size[1]}")

    def verify_images(self, max_problems: int = 1) -> None:
        """Decode every image once (so a bad file fails before training starts, not mid-epoch), and check
        its size against the JSON's; ``max_problems``: how many to collect before raising :class:`DataError`."""
        problems = Problems(max_problems)
        for image_id in self.ids:
            info = self.coco.imgs[image_id]
            try:
                self._check_size(image_id, load_rgb(self.images_dir / info["file_name"], f"image id {image_id}"))
            except DataError as exc:
                problems.add(str(exc))
        problems.raise_any()


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Batch detection samples as lists (images differ in size; the detector pads them)."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)
