"""Classification data for pretraining: any folder in torchvision ``ImageFolder`` layout.

``DIR/train/CLASS/*.jpg`` and ``DIR/val/CLASS/*.jpg`` (ImageNet's layout as is); a folder
without ``train/`` is used whole for training, with no validation. Augmentation is the
usual ImageNet one: RandomResizedCrop + horizontal flip for training, resize + centre crop
for validation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets, transforms

from hitdet.errors import UserError
from hitdet.pretrain.config import PretrainConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ClassificationData:
    """The training set, the validation set (or None) and the class names they share."""

    train: Dataset
    val: Dataset | None
    classes: list[str]
    root: Path


def train_transform(cfg: PretrainConfig) -> transforms.Compose:
    steps: list = [transforms.RandomResizedCrop(cfg.image_size, scale=(cfg.crop_scale, 1.0))]
    if cfg.hflip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return transforms.Compose(steps)


def val_transform(cfg: PretrainConfig) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(round(cfg.image_size / cfg.val_crop_ratio)),
            transforms.CenterCrop(cfg.image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _image_folder(path: Path, transform: transforms.Compose) -> datasets.ImageFolder:
    try:
        ds = datasets.ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise UserError(f"{path}: not a classification folder (expected CLASS/IMAGE files): {exc}") from None
    if len(ds) == 0:
        raise UserError(f"{path}: no images found")
    return ds


def load_classification_data(root: str | os.PathLike[str], cfg: PretrainConfig) -> ClassificationData:
    """Read ``root`` (with ``train/`` and optionally ``val/``, or class folders directly)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such data folder")
    train_dir = root / "train" if (root / "train").is_dir() else root
    train = _image_folder(train_dir, train_transform(cfg))
    val = None
    if train_dir != root and (root / "val").is_dir():
        val = _image_folder(root / "val", val_transform(cfg))
        if val.classes != train.classes:
            extra = sorted(set(val.classes) ^ set(train.classes))
            raise UserError(f"{root}: train/ and val/ have different classes (first difference: {extra[0]!r})")
    if len(train.classes) < 2:
        raise UserError(f"{train_dir}: a classifier needs at least 2 class folders, found {len(train.classes)}")
    return ClassificationData(train, val, list(train.classes), root)
