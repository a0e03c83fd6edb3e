"""COCO box evaluation: detections in COCO results format, scored by ``COCOeval``.

Why one module: retraining validation (Lightning), ``hitdet eval`` and the search all score
detectors the same way. The default backend is pycocotools, the reference implementation;
``backend="faster-coco-eval"`` (``pip install faster-coco-eval``, extra ``hitdet[fast]``)
gives the same numbers faster on large validation sets.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hitdet.errors import UserError

# The 12 numbers of COCOeval.summarize(), in its order.
METRIC_NAMES = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)
BACKENDS = ("pycocotools", "faster-coco-eval")


def available_backends() -> list[str]:
    """The evaluation backends importable here."""
    found = ["pycocotools"]
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return found
    return found + ["faster-coco-eval"]


def _as_gt(gt: COCO | Mapping[str, Any] | str | os.PathLike[str]) -> COCO:
    if isinstance(gt, COCO):
        return gt
    from hitdet.data.coco import coco_from_dict, read_annotations

    return coco_from_dict(gt if isinstance(gt, Mapping) else read_annotations(gt))  # type: ignore[arg-type]


def load_detections(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a COCO results file (a JSON list of {image_id, category_id, bbox, score})."""
    from hitdet.io import read_json

    path = Path(path)
    data = read_json(path, what="detections file")
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of detections")
    return data


def _is_finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _results_dataset(gt: COCO, detections: Sequence[Mapping[str, Any]], source: str) -> dict[str, Any]:
    """What ``COCO.loadRes`` builds for boxes, with checks that name the bad record."""
    anns = []
    for i, det in enumerate(detections):
        where = f"{source}[{i}]"
        if not isinstance(det, Mapping):
            raise UserError(f"{where}: expected an object")
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in det:
                raise UserError(f"{where}: no '{key}'")
        for key in ("image_id", "category_id"):
            if not isinstance(det[key], int) or isinstance(det[key], bool):
                raise UserError(f"{where}: '{key}' must be an integer, got {det[key]!r}")
        if det["image_id"] not in gt.imgs:
            raise UserError(f"{where}: image_id {det['image_id']!r} is not in the ground truth")
        if det["category_id"] not in gt.cats:
            raise UserError(f"{where}: category_id {det['category_id']!r} is not in the ground truth")
        bbox = det["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_finite(v) for v in bbox)):
            raise UserError(f"{where}: 'bbox' must be [x, y, width, height] finite numbers, got {bbox!r}")
        if not _is_finite(det["score"]):
            raise UserError(f"{where}: 'score' must be a finite number, got {det['score']!r}")
        x, y, w, h = (float(v) for v in bbox)
        anns.append({
            "id": i + 1,
            "image_id": det["image_id"],
            "category_id": det["category_id"],
            "bbox": [x, y, w, h],
            "score": float(det["score"]),
            "area": w * h,
            "iscrowd": 0,
            "segmentation": [[x, y, x, y + h, x + w, y + h, x + w, y]],
        })
    return {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": anns}


def coco_evaluate(
    gt: COCO | Mapping[str, Any] | str | os.PathLike[str],
    detections: Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    image_ids: Iterable[int] | None = None,
    backend: str = "pycocotools",
    source: str | None = None,
    per_class: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """COCO box metrics (:data:`METRIC_NAMES`) of ``detections`` against ``gt``.

    ``gt`` is a ``COCO`` object, an annotation dict or JSON path; ``detections`` a list in
    COCO results format (original category ids) or a path to one. ``image_ids`` restricts
    the evaluation (e.g. to a split's half); by default every ground-truth image counts,
    including those without detections. No detections at all score 0 (or -1 where a size
    range has no ground truth), as COCOeval would. ``per_class``: a list to extend with one
    row per category ({category_id, name, instances, AP, AP50, AP75}, AP None where the
    category has no ground truth), from the same evaluation.
    """
    coco_gt = _as_gt(gt)
    source = source or "detections"  # the file already-loaded detections came from, for error messages
    if isinstance(detections, (str, os.PathLike)):
        source = str(detections)
        detections = load_detections(detections)
    res = _results_dataset(coco_gt, detections, source)
    ids = sorted(coco_gt.getImgIds()) if image_ids is None else sorted(set(image_ids))
    if backend == "pycocotools":
        from hitdet.data.coco import coco_from_dict

        evaluator = COCOeval(coco_gt, coco_from_dict(res), iouType="bbox")
    elif backend == "faster-coco-eval":
        try:
            from faster_coco_eval import COCO as FasterCOCO
            from faster_coco_eval import COCOeval_faster
        except ImportError:
            raise UserError(
                "backend faster-coco-eval: not installed (pip install faster-coco-eval, or hitdet[fast])"
            ) from None
        with contextlib.redirect_stdout(io.StringIO()):
            fgt = FasterCOCO(coco_gt.dataset)
            fdt = FasterCOCO(res)
        evaluator = COCOeval_faster(fgt, fdt, iouType="bbox", print_function=lambda *a, **k: None)
    else:
        raise UserError(f"backend: unknown evaluation backend {backend!r} (known: {', '.join(BACKENDS)})")
    evaluator.params.imgIds = ids
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, dtype=float)[: len(METRIC_NAMES)]
    metrics = {name: float(v) for name, v in zip(METRIC_NAMES, stats, strict=True)}
    if per_class is not None:
        per_class.extend(_per_class_ap(evaluator, coco_gt, ids))
    return metrics


def _mean_precision(precision: np.ndarray) -> float | None:
    """COCOeval's AP of a slice of its precision array: the mean over entries that have ground truth."""
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else None


def _per_class_ap(evaluator: Any, coco_gt: COCO, image_ids: Sequence[int]) -> list[dict[str, Any]]:
    """AP, AP50 and AP75 of each category from COCOeval's accumulated precision (as detectron2 reports them).

    ``precision`` is indexed [IoU threshold, recall, category, area range, max detections]; the
    summary's AP is area "all" (index 0) at 100 detections (the last index), averaged over IoU
    thresholds and recall points with ground truth. A category with no ground truth in the evaluated
    images has no AP (None).
    """
    precision = np.asarray(evaluator.eval["precision"], dtype=float)
    iou_thrs = np.asarray(evaluator.params.iouThrs, dtype=float)
    at50, at75 = (int(np.argmin(np.abs(iou_thrs - t))) for t in (0.5, 0.75))
    wanted = set(image_ids)
    rows = []
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(catIds=[cat_id]))
        rows.append({
            "category_id": int(cat_id),
            "name": str(coco_gt.cats[cat_id].get("name", cat_id)),
            "instances": sum(1 for a in anns if a["image_id"] in wanted and not a.get("iscrowd", 0)),
            "AP": _mean_precision(p),
            "AP50": _mean_precision(p[at50]),
            "AP75": _mean_precision(p[at75]),
        })
    return rows


def format_per_class(rows: Sequence[Mapping[str, Any]], columns: int = 3, title: str = "Per-category box AP") -> str:
    """detectron2's per-category table: (category, AP) pairs, ``columns`` pairs a line; n/a: no ground truth."""
    if not rows:
        return f"{title}: no categories"
    width = max(8, *(len(str(r["name"])) for r in rows))
    cells = [f"{str(r['name']):<{width}}  {'n/a' if r['AP'] is None else format(r['AP'], '.4f'):>6}" for r in rows]
    header = "  |  ".join([f"{'category':<{width}}  {'AP':>6}"] * min(columns, len(cells)))
    lines = [title, header, "-" * len(header)]
    for start in range(0, len(cells), columns):
        lines.append("  |  ".join(cells[start:start + columns]))
    return "\n".join(lines)


def format_table(metrics: Mapping[str, float], title: str = "COCO box metrics") -> str:
    """A two-column text table of the metrics (-1 means no ground truth in that size range)."""
    width = max(len(n) for n in METRIC_NAMES)
    lines = [title, "-" * (width + 10)]
    for name in METRIC_NAMES:
        if name in metrics:
            v = metrics[name]
            lines.append(f"{name:<{width}}  {'n/a' if v < 0 else f'{v:.4f}'}")
    return "\n".join(lines)


def to_coco_results(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    label_to_cat_id: Mapping[int, int],
) -> list[dict[str, Any]]:
    """torchvision detector outputs (xyxy boxes, labels 1..K) -> COCO results (xywh, category ids)."""
    results = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().cpu().double()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        for box, label, score in zip(xywh, out["labels"].tolist(), out["scores"].tolist(), strict=True):
            results.append({
                "image_id": int(image_id),
                "category_id": int(label_to_cat_id[int(label)]),
                "bbox": [round(v, 3) for v in box],
                "score": round(float(score), 5),
            })
    return results


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run a detector over a (COCO) dataset or a Subset of one; detections in COCO results format.

    ``progress``: a progress bar over the batches (``hitdet eval``).
    """
    from hitdet.data import AspectRatioBatchSampler, aspect_ratios, collate, unwrap

    base, _ = unwrap(dataset)
    mapping = getattr(base, "label_to_cat_id", None)
    if mapping is None:
        raise TypeError("predict needs a CocoDetection (or a Subset of one) to map labels to category ids")
    # The batches of validation during training (aspect-ratio groups, in order): padding depends
    # on the batch, so the same batches give the same numbers as the run's validation.
    sampler = AspectRatioBatchSampler(aspect_ratios(dataset), batch_size, shuffle=False, pad=False)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
    was_training = model.training
    model.eval().to(device)
    results: list[dict[str, Any]] = []
    batches: Any = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc="eval", unit="batch", leave=False)
    try:
        for images, targets in batches:
            outputs = model([img.to(device) for img in images])
            results.extend(to_coco_results(outputs, [t["image_id"] for t in targets], mapping))
    finally:
        model.train(was_training)
    return results
