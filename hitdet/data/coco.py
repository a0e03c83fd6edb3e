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
from hitdet.io import open_image, read_json

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


class DataError(UserError):
    """A dataset file or record that cannot be used."""


def _is_id(v: Any) -> bool:
    """An integer id; not a bool (JSON ``true`` is 1 to Python, and would pass for image 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _refers(v: Any, ids: set[int]) -> bool:
    """``v`` is one of ``ids`` (a list or object is not: unhashable; nor ``true``, though ``True in {1}``)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v in ids


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def read_annotations(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a COCO annotation JSON; errors name the file and the record."""
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
    cat_ids = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_id(cat.get("id")):
            raise DataError(f"{path}: categories[{i}]: needs an integer 'id'")
        cat_ids.add(cat["id"])
    image_ids = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_id(img.get("id")):
            raise DataError(f"{path}: images[{i}]: needs an integer 'id'")
        if img["id"] in image_ids:
            raise DataError(f"{path}: images[{i}]: duplicate image id {img['id']}")
        if not isinstance(img.get("file_name"), str):
            raise DataError(f"{path}: images[{i}] (id {img['id']}): needs a 'file_name'")
        for key in ("width", "height"):
            if key in img and not (_is_number(img[key]) and img[key] > 0):
                raise DataError(f"{path}: images[{i}] (id {img['id']}): '{key}' must be a positive number")
        image_ids.add(img["id"])
    for i, ann in enumerate(data["annotations"]):
        has_id = isinstance(ann, dict) and "id" in ann
        where = f"{path}: annotations[{i}]" + (f" (id {ann['id']})" if has_id else "")
        if not isinstance(ann, dict):
            raise DataError(f"{where}: expected an object")
        bbox = ann.get("bbox")
        if bbox is None:
            raise DataError(f"{where}: no 'bbox'")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise DataError(f"{where}: 'bbox' must be [x, y, width, height] numbers, got {bbox!r}")
        if not _refers(ann.get("image_id"), image_ids):
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if not _refers(ann.get("category_id"), cat_ids):
            raise DataError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(bbox[2] * bbox[3]))
        ann.setdefault("id", i + 1)
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
    ) -> None:
        self.images_dir = Path(images)
        self.ann_file = Path(annotations)
        if not self.images_dir.is_dir():
            raise DataError(f"{self.images_dir}: images folder not found")
        data = read_annotations(self.ann_file)
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
        image = image_tensor(img)
        target = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self._targets[index].items()}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def verify_images(self) -> None:
        """Decode every image once (so a bad file fails before training starts, not mid-epoch)."""
        for image_id in self.ids:
            info = self.coco.imgs[image_id]
            load_rgb(self.images_dir / info["file_name"], f"image id {image_id}")


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Batch detection samples as lists (images differ in size; the detector pads them)."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)
