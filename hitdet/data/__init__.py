"""Datasets: COCO-format files, the built-in synthetic dataset, transforms, batching, the split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hitdet.data.coco import CocoDetection, DataError, coco_from_dict, collate, load_rgb, read_annotations
from hitdet.data.loaders import dataset_folder, dataset_identity, load_datasets, make_eval_loader, make_train_loader
from hitdet.data.sampler import AspectRatioBatchSampler, aspect_ratios, unwrap
from hitdet.data.synth import CATEGORIES as SYNTH_CATEGORIES
from hitdet.data.synth import SynthSpec, split_paths, write_synthetic
from hitdet.data.transforms import Compose, RandomHorizontalFlip, train_transforms

__all__ = [
    "AspectRatioBatchSampler",
    "CocoDetection",
    "Compose",
    "DataError",
    "RandomHorizontalFlip",
    "SYNTH_CATEGORIES",
    "SynthSpec",
    "aspect_ratios",
    "coco_from_dict",
    "collate",
    "dataset_folder",
    "dataset_identity",
    "default_data_dir",
    "ensure_synthetic",
    "load_datasets",
    "load_rgb",
    "load_split",
    "make_eval_loader",
    "make_train_loader",
    "read_annotations",
    "resolve_split",
    "split_paths",
    "train_transforms",
    "unwrap",
    "write_synthetic",
]


def resolve_split(data_dir: str | os.PathLike[str], split: str) -> tuple[Path, Path]:
    """(images folder, annotation JSON) of ``split`` under ``data_dir``.

    Accepts hitdet's layout (``annotations/instances_train.json`` + ``train/``) and COCO
    2017's (``annotations/instances_train2017.json`` + ``train2017/``). Raises DataError
    naming what is missing.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    for name in (split, f"{split}2017"):
        images, ann = split_paths(root, name)
        if ann.is_file():
            if not images.is_dir():
                raise DataError(f"{images}: images folder not found (annotations: {ann})")
            return images, ann
    images, ann = split_paths(root, split)
    raise DataError(f"{ann}: annotation file not found (expected the COCO layout annotations/instances_{split}.json)")


def load_split(
    data_dir: str | os.PathLike[str],
    split: str,
    train: bool = False,
    hflip_prob: float = 0.5,
    categories: Sequence[int] | None = None,
    max_problems: int = 1,
) -> CocoDetection:
    """The ``split`` of a dataset folder, with the training augmentation when ``train``
    (``max_problems``: how many problems of the annotation file to collect before raising)."""
    images, ann = resolve_split(data_dir, split)
    return CocoDetection(images, ann, transforms=train_transforms(hflip_prob) if train else None,
                         categories=categories, max_problems=max_problems)


def default_data_dir() -> Path:
    """Where the built-in synthetic dataset is cached ($HITDET_DATA, else ~/.cache/hitdet/synth)."""
    env = os.environ.get("HITDET_DATA")
    return Path(env) if env else Path.home() / ".cache" / "hitdet" / "synth"


def ensure_synthetic(root: str | os.PathLike[str] | None = None, spec: SynthSpec | None = None) -> Path:
    """The built-in dataset (the default wherever a dataset is needed), written once on first use."""
    root = Path(root) if root is not None else default_data_dir()
    if all(split_paths(root, s)[1].is_file() for s in ("train", "val")):
        return root
    return write_synthetic(root, spec, force=True)
