"""Joint image + target transforms. The paper retrains with horizontal flip only.

Resizing is not here: the torchvision detector resizes (``min_size``/``max_size`` of the
architecture's settings) and maps its boxes back to the input image itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hitdet.data.coco import Target, Transform


class RandomHorizontalFlip:
    """Flip the image and its boxes left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.p = p
        self.generator = generator

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if self.p <= 0 or torch.rand((), generator=self.generator).item() >= self.p:
            return image, target
        width = image.shape[-1]
        image = image.flip(-1)
        target = dict(target)
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        target["boxes"] = boxes
        return image, target


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


def train_transforms(hflip_prob: float = 0.5) -> Transform | None:
    """The retraining augmentation of the paper: horizontal flip only."""
    return RandomHorizontalFlip(hflip_prob) if hflip_prob > 0 else None
