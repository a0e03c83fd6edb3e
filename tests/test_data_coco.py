"""COCO-format reading: the quirks of real files, bad input, flips, batching and the 50/50 split."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hitdet.cli import main
from hitdet.data import (
    AspectRatioBatchSampler,
    CocoDetection,
    DataError,
    RandomHorizontalFlip,
    collate,
    load_split,
    resolve_split,
)
from hitdet.errors import UserError

CATS = [
    {"id": 90, "name": "ninety"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}, {"id": 50, "name": "unused"}
]


def _write_quirky(root: Path, split: str = "train") -> tuple[Path, Path]:
    """Four images (RGB, grayscale JPEG, palette with transparency, RGBA) and quirky annotations."""
    images = root / split
    images.mkdir(parents=True)
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :, 0] = 200
    Image.fromarray(rgb).save(images / "rgb.png")
    Image.fromarray(np.full((60, 40), 77, np.uint8), mode="L").save(images / "gray.jpg", quality=100)
    pal = Image.new("P", (32, 32))
    pal.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    pal.info["transparency"] = 0
    pal.save(images / "palette.png", transparency=0)
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[..., :3] = (1, 2, 3)
    rgba[..., 3] = 128
    Image.fromarray(rgba, mode="RGBA").save(images / "rgba.png")
    data = {
        "images": [
            {"id": 10, "file_name": "rgb.png", "width": 64, "height": 48},
            {"id": 20, "file_name": "gray.jpg", "width": 40, "height": 60},
            {"id": 30, "file_name": "palette.png", "width": 32, "height": 32},
            {"id": 40, "file_name": "rgba.png"},  # no size in the JSON: read from the file
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [4, 5, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 30, 30], "iscrowd": 1},
            {"id": 3, "image_id": 10, "category_id": 90, "bbox": [50, 40, 30, 30], "iscrowd": 0},  # clipped
            {"id": 4, "image_id": 10, "category_id": 90, "bbox": [5, 5, 0, 10], "iscrowd": 0},  # degenerate
            {"id": 5, "image_id": 20, "category_id": 90, "bbox": [1, 2, 3, 4]},
            {"id": 6, "image_id": 40, "category_id": 3, "bbox": [10, 10, 20, 10]},
        ],
        "categories": CATS,
    }
    ann = root / "annotations" / f"instances_{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(data))
    return images, ann


@pytest.fixture()
def quirky(tmp_path: Path) -> Path:
    _write_quirky(tmp_path)
    return tmp_path


def _load(root: Path, **kw) -> CocoDetection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_split(root, "train", **kw)


def test_category_mapping_crowd_clipping_and_one_warning(quirky: Path) -> None:
    with pytest.warns(UserWarning) as record:
        ds = load_split(quirky, "train")
    assert len([w for w in record if "clipped" in str(w.message)]) == 1
    assert "1 box(es) clipped" in str(record[0].message) and "1 degenerate box(es) dropped" in str(record[0].message)
    assert ds.cat_ids == [3, 7, 50, 90]
    assert ds.label_to_cat_id == {1: 3, 2: 7, 3: 50, 4: 90}
    assert ds.box_stats == {"clipped": 1, "dropped": 1, "crowd": 1}
    assert ds.ids == [10, 20, 30, 40]
    _, t = ds[0]
    assert t["image_id"] == 10
    assert t["labels"].tolist() == [2, 4]  # crowd kept out, degenerate dropped
    assert t["boxes"].tolist() == [[4, 5, 14, 25], [50, 40, 64, 48]]  # xyxy, second clipped
    _, empty = ds[2]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_modes_become_rgb(quirky: Path) -> None:
    ds = _load(quirky)
    images = [ds[i][0] for i in range(len(ds))]
    assert [tuple(im.shape) for im in images] == [(3, 48, 64), (3, 60, 40), (3, 32, 32), (3, 30, 50)]
    assert all(im.dtype == torch.float32 and 0 <= im.min() and im.max() <= 1 for im in images)
    assert torch.allclose(images[0][:, 0, 0], torch.tensor([200, 0, 0]) / 255)
    gray = images[1]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert abs(gray.mean().item() * 255 - 77) < 2
    assert torch.allclose(images[3][:, 0, 0], torch.tensor([1, 2, 3]) / 255)  # alpha dropped
    assert ds.aspect_ratios == [64 / 48, 40 / 60, 1.0, 50 / 30]


def test_fixed_category_order_and_unknown_category(quirky: Path) -> None:
    ds = _load(quirky, categories=[90, 7, 3, 50, 99])
    assert ds.label_to_cat_id[1] == 90 and ds[0][1]["labels"].tolist() == [2, 1]
    with pytest.raises(DataError, match=r"category ids \[50\]"):
        _load(quirky, categories=[3, 7, 90])


def _rewrite(ann: Path, edit) -> None:
    data = json.loads(ann.read_text())
    edit(data)
    ann.write_text(json.dumps(data))


def test_bad_inputs_name_file_and_record(tmp_path: Path) -> None:
    images, ann = _write_quirky(tmp_path)
    with pytest.raises(DataError, match="images folder not found"):
        CocoDetection(tmp_path / "nope", ann)
    with pytest.raises(DataError, match="annotation file not found"):
        CocoDetection(images, tmp_path / "missing.json")
    with pytest.raises(DataError, match=r"dataset folder not found"):
        resolve_split(tmp_path / "nothing", "train")
    with pytest.raises(DataError, match=r"instances_val.json: annotation file not found"):
        resolve_split(tmp_path, "val")

    good = ann.read_text()
    ann.write_text(good[:-20])
    with pytest.raises(DataError, match=r"instances_train.json: invalid JSON: .* line 1"):
        CocoDetection(images, ann)

    ann.write_text(good)
    _rewrite(ann, lambda d: d["annotations"][4].pop("bbox"))
    with pytest.raises(DataError, match=r"instances_train.json: annotations\[4\] \(id 5\): no 'bbox'"):
        CocoDetection(images, ann)

    ann.write_text(good)
    _rewrite(ann, lambda d: d["annotations"][0].update(bbox=[1, 2, "x", 4]))
    with pytest.raises(DataError, match=r"annotations\[0\] \(id 1\): 'bbox' must be"):
        CocoDetection(images, ann)

    ann.write_text(good)
    _rewrite(ann, lambda d: d["annotations"][0].update(category_id=11))
    with pytest.raises(DataError, match=r"annotations\[0\] \(id 1\): category_id 11"):
        CocoDetection(images, ann)

    ann.write_text(good)
    (images / "gray.jpg").write_bytes(b"not an image at all")
    ds = _load(tmp_path)
    with pytest.raises(DataError, match=r"gray.jpg: cannot decode image \(image id 20\)"):
        ds[1]
    with pytest.raises(DataError, match=r"gray.jpg"):
        ds.verify_images()
    (images / "gray.jpg").unlink()
    with pytest.raises(DataError, match=r"gray.jpg: image file not found \(image id 20\)"):
        ds[1]
    assert issubclass(DataError, UserError)


def test_cli_bad_data_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, ann = _write_quirky(tmp_path)
    ann.write_text("{ broken")
    assert main(["data", "check", str(tmp_path), "--splits", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "instances_train.json: invalid JSON" in err


def test_coco_2017_layout(tmp_path: Path) -> None:
    _write_quirky(tmp_path, "val2017")
    images, ann = resolve_split(tmp_path, "val")
    assert images == tmp_path / "val2017" and ann.name == "instances_val2017.json"


def test_horizontal_flip_matches_pixels_and_boxes() -> None:
    image = torch.zeros(3, 10, 20)
    image[:, 2:5, 1:4] = 1.0  # object at x 1..4, y 2..5
    target = {"boxes": torch.tensor([[1.0, 2.0, 4.0, 5.0]]), "labels": torch.tensor([1])}
    flipped, t = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(flipped, image.flip(-1))
    assert t["boxes"].tolist() == [[16.0, 2.0, 19.0, 5.0]]
    ys, xs = torch.nonzero(flipped[0], as_tuple=True)
    assert (xs.min().item(), xs.max().item() + 1) == (16, 19)
    back, t2 = RandomHorizontalFlip(p=1.0)(flipped, t)
    assert torch.equal(back, image) and torch.equal(t2["boxes"], target["boxes"])
    same, t3 = RandomHorizontalFlip(p=0.0)(image, target)
    assert same is image and t3 is target
    assert torch.equal(target["boxes"], torch.tensor([[1.0, 2.0, 4.0, 5.0]]))  # input not modified


def test_collate_keeps_lists() -> None:
    a, b = (torch.zeros(3, 4, 5), {"image_id": 1}), (torch.zeros(3, 6, 5), {"image_id": 2})
    images, targets = collate([a, b])
    assert [im.shape[1] for im in images] == [4, 6] and [t["image_id"] for t in targets] == [1, 2]


def test_aspect_ratio_batches() -> None:
    ratios = [1.5, 0.5, 1.0, 0.7, 2.0, 0.6, 1.2, 0.9, 1.1]
    sampler = AspectRatioBatchSampler(ratios, batch_size=2, seed=5)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(ratios)))
    for b in batches:
        assert len({ratios[i] >= 1 for i in b}) == 1
    assert len(sampler) == len(batches) == 5
    assert list(AspectRatioBatchSampler(ratios, batch_size=2, seed=5)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    shards = [list(AspectRatioBatchSampler(ratios, 2, seed=5, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 3
    assert {i for s in shards for b in s for i in b} == set(range(len(ratios)))
    evals = [list(AspectRatioBatchSampler(ratios, 2, shuffle=False, num_replicas=2, rank=r, pad=False)) for r in (0, 1)]
    assert sorted(i for s in evals for b in s for i in b) == list(range(len(ratios)))  # each image once
