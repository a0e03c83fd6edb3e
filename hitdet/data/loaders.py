"""The detection datasets and loaders every training-like run reads: train, screen/search, NNI trials.

Below the runners that use them (:mod:`hitdet.training.runner`, :mod:`hitdet.searching`), so that neither
borrows them from the other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from hitdet.data.coco import CocoDetection, collate
from hitdet.data.sampler import AspectRatioBatchSampler, aspect_ratios
from hitdet.errors import UserError

VERIFY_LIMIT = 5000  # decode every image up front when a dataset is at most this big


def load_datasets(
    data_dir: str | os.PathLike[str], hflip_prob: float = 0.5, categories: Sequence[int] | None = None
) -> tuple[CocoDetection, CocoDetection]:
    """The train (with flips) and val splits of ``data_dir``; bad files fail here, before anything is written.

    Args:
        data_dir: a dataset folder in COCO layout (``annotations/instances_train.json`` + ``train/``, val alike).
        hflip_prob: probability of a horizontal flip of a training image.
        categories: the category ids in label order (a resumed run's, from its architecture); default: the
            training annotations' own, sorted.

    Returns:
        ``(train, val)``, both mapping the same category ids to labels 1..K.
    """
    from hitdet.data import load_split

    train_ds = load_split(data_dir, "train", train=True, hflip_prob=hflip_prob, categories=categories)
    val_ds = load_split(data_dir, "val", categories=train_ds.cat_ids)
    for ds in (train_ds, val_ds):
        if len(ds) == 0:
            raise UserError(f"{ds.ann_file}: no images")
        if len(ds) <= VERIFY_LIMIT:
            ds.verify_images()
    return train_ds, val_ds


def dataset_identity(data_dir: str | os.PathLike[str], datasets: Sequence[CocoDetection]) -> dict[str, object]:
    """What a run records of its dataset (run.json's ``dataset``): the folder, and a SHA-256 of each annotation
    file it read and of them together (``sha256``: the digests in file-name order), so that ``hitdet compare``
    can tell runs on different data apart however the folder was moved or named."""
    import hashlib

    root = Path(data_dir).resolve()
    files: dict[str, str] = {}
    for ds in datasets:
        path = Path(ds.ann_file).resolve()
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        files[name] = digest.hexdigest()
    whole = hashlib.sha256("".join(f"{name}\0{files[name]}\n" for name in sorted(files)).encode()).hexdigest()
    return {"path": str(root), "annotations": files, "sha256": whole}


def dataset_folder(data_dir: str | os.PathLike[str] | None, recorded: Path | None = None) -> Path:
    """``--data`` if given, else the dataset a resumed run recorded, else the built-in synthetic set."""
    from hitdet.data import ensure_synthetic

    if data_dir is not None:
        return Path(data_dir)
    return recorded if recorded is not None else ensure_synthetic()


def make_train_loader(
    dataset: Dataset, batch_size: int, seed: int = 0, num_workers: int = 0, num_replicas: int = 1, rank: int = 0
) -> DataLoader:
    """Shuffled, aspect-ratio grouped batches (sharded over DDP replicas, equal counts per replica)."""
    sampler = AspectRatioBatchSampler(aspect_ratios(dataset), batch_size, shuffle=True, seed=seed,
                                      num_replicas=num_replicas, rank=rank)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)


def make_eval_loader(
    dataset: Dataset, batch_size: int, num_workers: int = 0, num_replicas: int = 1, rank: int = 0
) -> DataLoader:
    """In-order batches for validation; every image exactly once over all replicas."""
    sampler = AspectRatioBatchSampler(aspect_ratios(dataset), batch_size, shuffle=False,
                                      num_replicas=num_replicas, rank=rank, pad=False)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
