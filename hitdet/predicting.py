"""Detections on plain image files: what ``hitdet predict`` runs.

Why a module of its own: evaluation (:mod:`hitdet.evaluation`) runs a detector over an annotated
COCO split, whereas a shipped detector sees images nobody annotated. This module finds and
decodes those images (every one before the model runs, so a bad file fails before anything is
written), maps the detector's labels back to the category ids and names it was trained with,
and draws labelled boxes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from hitdet.architecture import Architecture
from hitdet.data.coco import image_tensor, load_rgb
from hitdet.errors import UserError
from hitdet.evaluation import to_coco_results

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ACCELERATORS = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class ImageRecord:
    """One input image: its id in the results (1, 2, ... in input order), file and size."""

    id: int
    path: Path
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "file_name": str(self.path), "width": self.width, "height": self.height}


def find_images(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders' image files (not recursive), sorted."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserError(f"{path}: no images in folder (looked for {', '.join(IMAGE_SUFFIXES)})")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path}: no such image file or folder")
    if not found:
        raise UserError("no input images given")
    return found


def read_images(paths: Sequence[Path]) -> list[ImageRecord]:
    """Decode every image once (an unreadable one is a UserError naming it) and record its size."""
    records = []
    for i, path in enumerate(paths, start=1):
        img = load_rgb(path, "input image")
        records.append(ImageRecord(i, path, img.width, img.height))
    return records


def detector_categories(arch: Architecture) -> list[dict[str, Any]]:
    """The categories (``id``, ``name``) of labels 1..K, in label order.

    ``hitdet train`` records the training data's categories in the architecture's metadata;
    an architecture without them (never trained) gets ids 1..K named by their id.
    """
    num = arch.settings.num_classes - 1
    recorded = arch.metadata.get("categories")
    if recorded is None:
        return [{"id": i, "name": str(i)} for i in range(1, num + 1)]
    if not (isinstance(recorded, list) and all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in recorded)):
        raise UserError(f"{arch.name or 'architecture'}: metadata.categories: expected a list of {{id, name}} objects")
    if len(recorded) != num:
        raise UserError(f"{arch.name or 'architecture'}: metadata.categories has {len(recorded)} categories but "
                        f"detector.num_classes is {num + 1} ({num} + background)")
    return [{"id": c["id"], "name": str(c.get("name", c["id"]))} for c in recorded]


def resolve_device(accelerator: str) -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu`` or ``gpu`` (CUDA; an error without it)."""
    if accelerator not in ACCELERATORS:
        raise UserError(f"--accelerator: expected one of {', '.join(ACCELERATORS)}, got {accelerator!r}")
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise UserError("--accelerator gpu: no CUDA device is available (use cpu or auto)")
    if accelerator == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


@torch.no_grad()
def detect(
    model: nn.Module,
    records: Sequence[ImageRecord],
    device: torch.device,
    batch_size: int = 1,
    progress: bool = False,
) -> Iterator[tuple[ImageRecord, torch.Tensor, dict[str, torch.Tensor]]]:
    """Run ``model`` over the images, ``batch_size`` at a time; yield (record, image, output on CPU).

    The image is the float 3xHxW tensor in [0, 1] the model saw, as in training and evaluation.
    """
    from tqdm import tqdm

    model.eval().to(device)
    with tqdm(total=len(records), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(records), batch_size):
            batch = records[start:start + batch_size]
            images = [image_tensor(load_rgb(r.path, "input image")) for r in batch]
            outputs = model([img.to(device) for img in images])
            for record, image, out in zip(batch, images, outputs, strict=True):
                yield record, image, {k: v.detach().cpu() for k, v in out.items()}
            bar.update(len(batch))


def keep_scores(output: dict[str, torch.Tensor], score_thresh: float) -> dict[str, torch.Tensor]:
    """The detections scoring at least ``score_thresh``."""
    keep = output["scores"] >= score_thresh
    return {k: v[keep] for k, v in output.items()}


def coco_results(
    output: dict[str, torch.Tensor], record: ImageRecord, categories: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One image's detections in COCO results format (xywh, original ids), each with its category name."""
    label_to_id = {i: c["id"] for i, c in enumerate(categories, start=1)}
    names = {c["id"]: c["name"] for c in categories}
    results = to_coco_results([output], [record.id], label_to_id)
    return [{**r, "category_name": names[r["category_id"]]} for r in results]


def draw_detections(
    image: torch.Tensor, output: dict[str, torch.Tensor], categories: Sequence[dict[str, Any]]
) -> Image.Image:
    """The image with a box per detection, labelled "name score", one colour per category.

    Each label is written on a tag of its box's colour, in black or white (whichever reads on that colour),
    at a size that follows the image (about 1/40 of its shorter side, at least 11 px), just above its box
    (inside it at the image's top edge). Labels are placed highest score first; one that would cover an
    earlier label moves down (then up) until it is clear, so that neighbours never run together.
    """
    from PIL import ImageDraw, ImageFont

    pixels = image.mul(255).round().clamp(0, 255).to(torch.uint8)
    picture = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    width, height = picture.size
    draw = ImageDraw.Draw(picture)
    size = max(11, round(min(width, height) / 40))
    line = max(2, round(min(width, height) / 300))
    try:
        font: Any = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: its fixed bitmap font
        font = ImageFont.load_default()
    labels = output["labels"].tolist()
    scores = output["scores"].tolist()
    boxes = [[float(v) for v in box] for box in output["boxes"].tolist()]
    for box, label in zip(boxes, labels, strict=True):
        draw.rectangle(box, outline=_color(label), width=line)
    pad = max(1, size // 6)
    texts = [f"{categories[label - 1]['name']} {score:.2f}" for label, score in zip(labels, scores, strict=True)]
    extents = [draw.textbbox((0, 0), text, font=font) for text in texts]
    sizes = [(r - lft + 2 * pad, b - t + 2 * pad) for lft, t, r, b in extents]
    tags = label_tags(boxes, sizes, scores, width, height)
    for i in sorted(range(len(labels)), key=lambda j: scores[j]):  # the best on top, should any still touch
        colour = _color(labels[i])
        draw.rectangle(tags[i], fill=colour)
        draw.text((tags[i][0] + pad - extents[i][0], tags[i][1] + pad - extents[i][1]), texts[i], font=font,
                  fill=_ink(colour))
    return picture


def label_tags(
    boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[float, float]], scores: Sequence[float], width: int,
    height: int,
) -> list[tuple[float, float, float, float]]:
    """Where each box's label tag (``sizes``: width, height) goes: ``(x0, y0, x1, y1)`` per box.

    Just above the box's top-left corner (inside the box at the image's top edge), within the image's width;
    placed highest score first, each moved down (or, at the bottom, up) past the tags it would cover.
    """
    tags: list[tuple[float, float, float, float] | None] = [None] * len(boxes)
    placed: list[tuple[float, float, float, float]] = []
    for i in sorted(range(len(boxes)), key=lambda j: -scores[j]):
        w, h = sizes[i]
        x0 = min(max(0.0, float(boxes[i][0])), max(0.0, width - w))
        y0 = boxes[i][1] - h if boxes[i][1] - h >= 0 else float(boxes[i][1])
        for _ in range(len(placed) + 1):
            hit = next((p for p in placed if x0 < p[2] and p[0] < x0 + w and y0 < p[3] and p[1] < y0 + h), None)
            if hit is None:
                break
            y0 = hit[3] if hit[3] + h <= height else max(0.0, hit[1] - h)
        tags[i] = (x0, y0, x0 + w, y0 + h)
        placed.append(tags[i])  # type: ignore[arg-type]
    return tags  # type: ignore[return-value]


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on a light colour, white on a dark one (relative luminance, ITU-R BT.709)."""
    r, g, b = colour
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else (255, 255, 255)


def _color(label: int) -> tuple[int, int, int]:
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
    return palette[(label - 1) % len(palette)]


def drawn_name(record: ImageRecord, taken: set[str]) -> str:
    """File name of an image's drawing: its own (JPEG stays JPEG, anything else PNG), made unique."""
    suffix = ".jpg" if record.path.suffix.lower() in (".jpg", ".jpeg") else ".png"
    name = record.path.stem + suffix
    if name in taken:
        name = f"{record.path.stem}-{record.id}{suffix}"
    taken.add(name)
    return name


def write_predictions(
    model: nn.Module,
    records: Sequence[ImageRecord],
    categories: Sequence[dict[str, Any]],
    out: Path,
    device: torch.device,
    score_thresh: float = 0.3,
    draw: bool = False,
    batch_size: int = 1,
    progress: bool = False,
    info: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Detect on every image and write ``out``; returns the detections written.

    ``out/detections.json``: COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``)
    plus ``category_name``, the detections scoring at least ``score_thresh``;
    ``out/images.json``: the images (``id``, ``file_name``, ``width``, ``height``), the categories
    and ``info``; with ``draw``, ``out/drawn/NAME`` per image. The folder is written under a
    temporary name and renamed at the end, so a failure leaves nothing; an existing ``out`` is
    replaced (check it with ``check_output_dir`` first).
    """
    from hitdet.data.synth import staged_output_dir
    from hitdet.io import write_json_atomic

    detections: list[dict[str, Any]] = []
    taken: set[str] = set()
    with staged_output_dir(out) as tmp:
        for record, image, output in detect(model, records, device, batch_size, progress):
            kept = keep_scores(output, score_thresh)
            detections.extend(coco_results(kept, record, categories))
            if draw:
                (tmp / "drawn").mkdir(exist_ok=True)
                draw_detections(image, kept, categories).save(tmp / "drawn" / drawn_name(record, taken), quality=95)
        write_json_atomic(tmp / "detections.json", detections)
        write_json_atomic(tmp / "images.json", {
            "images": [r.to_dict() for r in records], "categories": list(categories),
            "score_thresh": score_thresh, **(info or {}),
        })
    return detections
