"""Batches of images with like aspect ratios, and the deterministic 50/50 split of the search.

Why aspect-ratio grouping: the detector pads every image of a batch to the largest one, so
mixing landscape and portrait images wastes compute on padding (mmdetection and torchvision's
reference scripts group the same way).
Why a fixed split: the search trains weights on one half of the training set and the
architecture on the other (first-order DARTS, as in the paper; docs/hit-detector.md); the halves
must be disjoint and identical between runs, processes and machines.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Dataset, Sampler, Subset


def unwrap(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The base dataset under (nested) ``Subset`` wrappers and the indices into it."""
    indices: list[int] | None = None
    while isinstance(dataset, Subset):
        idx = list(dataset.indices)
        indices = idx if indices is None else [idx[i] for i in indices]
        dataset = dataset.dataset
    if indices is None:
        indices = list(range(len(dataset)))  # type: ignore[arg-type]
    return dataset, indices


def aspect_ratios(dataset: Dataset) -> list[float]:
    """width / height per item of ``dataset`` (a dataset with ``aspect_ratios``, or a Subset of one)."""
    base, indices = unwrap(dataset)
    ratios = getattr(base, "aspect_ratios", None)
    if ratios is None:
        return [1.0] * len(indices)
    return [ratios[i] for i in indices]


class AspectRatioBatchSampler(Sampler[list[int]]):
    """Batches whose images are all landscape (w >= h) or all portrait (w < h).

    Shuffles with ``seed + epoch`` (call :meth:`set_epoch`; Lightning does), and shards the
    batches over ``num_replicas`` processes for DDP; with ``pad`` (training) every replica
    gets the same number of batches, repeating a few; without (evaluation) each image once.
    """

    def __init__(
        self,
        ratios: Sequence[float],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.groups = [0 if r >= 1.0 else 1 for r in ratios]
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.num_replicas, self.rank, self.pad = num_replicas, rank, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        n = len(self.groups)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        buckets: dict[int, list[int]] = {0: [], 1: []}
        batches: list[list[int]] = []
        for i in order.tolist():
            bucket = buckets[self.groups[i]]
            bucket.append(i)
            if len(bucket) == self.batch_size:
                batches.append(bucket[:])
                bucket.clear()
        if not self.drop_last:
            batches.extend(b for b in (buckets[0], buckets[1]) if b)
        if self.num_replicas > 1 and batches and self.pad:
            per = math.ceil(len(batches) / self.num_replicas)
            batches = (batches * self.num_replicas)[: per * self.num_replicas]  # pad by repeating
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._all_batches()[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return len(self._all_batches()[self.rank :: self.num_replicas])
