"""The built-in synthetic dataset: deterministic, COCO-valid, exercising the quirks training needs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hitdet.cli import main
from hitdet.data import SYNTH_CATEGORIES, SynthSpec, load_split, write_synthetic
from hitdet.data.synth import IMAGE_SIZES


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synth") / "d", SynthSpec(num_train=60, num_val=12, seed=3))


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, synth: Path) -> None:
    again = write_synthetic(tmp_path / "again", SynthSpec(num_train=60, num_val=12, seed=3))
    assert _digest(again) == _digest(synth)
    other = write_synthetic(tmp_path / "other", SynthSpec(num_train=60, num_val=12, seed=4))
    assert _digest(other)["annotations/instances_train.json"] != _digest(synth)["annotations/instances_train.json"]


def test_layout_and_coco_fields(synth: Path) -> None:
    for split, n in (("train", 60), ("val", 12)):
        data = json.loads((synth / "annotations" / f"instances_{split}.json").read_text())
        assert len(data["images"]) == n
        assert sorted(c["id"] for c in data["categories"]) == [c["id"] for c in SYNTH_CATEGORIES]
        for img in data["images"]:
            with Image.open(synth / split / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"])
                assert im.mode == "RGB"
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            img = next(i for i in data["images"] if i["id"] == ann["image_id"])
            assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
            assert ann["area"] == pytest.approx(w * h)
            assert ann["iscrowd"] == 0


def test_ids_not_contiguous_and_labels_contiguous(synth: Path) -> None:
    ids = [c["id"] for c in SYNTH_CATEGORIES]
    assert ids != list(range(1, len(ids) + 1))  # the mapping is always exercised
    ds = load_split(synth, "train")
    assert ds.cat_ids == sorted(ids)
    labels = set(np.concatenate([t["labels"].numpy() for t in ds._targets]).tolist())
    assert labels == set(range(1, len(ids) + 1))


def test_sizes_span_coco_ranges_overlaps_empty_images_and_aspects(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "d", SynthSpec(num_train=200, num_val=2, seed=0))
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    areas = np.array([a["area"] for a in data["annotations"]])
    small, large = (areas < 32**2).mean(), (areas >= 96**2).mean()
    assert small > 0.15 and large > 0.05 and 1 - small - large > 0.3
    by_image: dict[int, list[list[float]]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])

    def overlap(a: list[float], b: list[float]) -> bool:
        return min(a[0] + a[2], b[0] + b[2]) > max(a[0], b[0]) and min(a[1] + a[3], b[1] + b[3]) > max(a[1], b[1])

    overlapping = sum(any(overlap(a, b) for i, a in enumerate(bs) for b in bs[i + 1:]) for bs in by_image.values())
    assert overlapping >= 5
    assert len(by_image) < len(data["images"])  # some images have no objects
    assert {(i["width"], i["height"]) for i in data["images"]} == set(IMAGE_SIZES)
    colours = {a["category_id"] for a in data["annotations"]}
    assert len(colours) == len(SYNTH_CATEGORIES)


def test_cli_synth_refuses_non_empty_folder_without_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "d"
    assert main(["data", "synth", "--out", str(out), "--train", "4", "--val", "2"]) == 0
    before = _digest(out)
    assert main(["data", "synth", "--out", str(out), "--train", "3", "--val", "2", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and str(out) in err and "Traceback" not in err
    assert _digest(out) == before
    assert main(["data", "synth", "--out", str(out), "--train", "3", "--val", "2", "--force"]) == 0
    assert len(list((out / "train").iterdir())) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary folder left behind


def test_cli_check_reports_counts(synth: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", str(synth)]) == 0
    out = capsys.readouterr().out
    assert "train: 60 images" in out and "val: 12 images" in out and "4 categories" in out
