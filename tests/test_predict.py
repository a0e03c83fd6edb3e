"""``hitdet predict``: the eager detector's detections on image files, with the trained categories.

The expected detections are computed here independently: images read with PIL, the detector run
directly, boxes converted to COCO's xywh and labels mapped to the recorded category ids by hand.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from hitdet.architecture import load_architecture
from hitdet.builder import build_detector
from hitdet.cli import main
from hitdet.predicting import _color
from hitdet.weights.detector import load_weights, save_weights
from tests.helpers import spread_scores, tiny_arch

CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 42, "name": "car"}]
SIZES = [(64, 80), (72, 64), (60, 60)]  # (H, W) of the three test images


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An architecture with recorded categories, its weights and a folder of three PNG images."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    arch = dataclasses.replace(tiny_arch(), metadata={"categories": CATEGORIES})
    arch.save(root / "arch.json")
    save_weights(root / "w.pt", spread_scores(build_detector(arch), seed=1).state_dict())
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image, not picked up from a folder")
    return {"root": root, "arch": root / "arch.json", "weights": root / "w.pt", "images": folder}


def expected(trained: dict[str, Path], score_thresh: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Detections above ``score_thresh`` per image, computed without hitdet.predicting; and all of them."""
    model = load_weights(build_detector(load_architecture(trained["arch"])), trained["weights"]).eval()
    kept, everything = [], []
    for image_id, path in enumerate(sorted(trained["images"].glob("*.png")), start=1):
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        with torch.no_grad():
            out = model([torch.from_numpy(pixels).permute(2, 0, 1)])[0]
        for (x1, y1, x2, y2), label, score in zip(out["boxes"].tolist(), out["labels"].tolist(),
                                                  out["scores"].tolist(), strict=True):
            cat = CATEGORIES[label - 1]
            det = {"image_id": image_id, "category_id": cat["id"], "category_name": cat["name"],
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            everything.append(det)
            if score >= score_thresh:
                kept.append(det)
    return kept, everything


def predict(trained: dict[str, Path], out: Path, *extra: str, inputs: list[str] | None = None) -> int:
    args = ["predict", str(trained["arch"]), *(inputs or [str(trained["images"])]), "--weights",
            str(trained["weights"]), "--out", str(out), "--accelerator", "cpu", "--no-progress", *extra]
    return main(args)


def test_folder_detections_equal_the_eager_detector_with_category_ids_and_names(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    scores = [d["score"] for d in expected(trained, 0.0)[1]]
    thresh = float(np.median(scores))  # keeps about half: the threshold is exercised both ways
    want, everything = expected(trained, thresh)
    assert 0 < len(want) < len(everything)
    assert predict(trained, tmp_path / "out", "--score-thresh", str(thresh)) == 0
    got = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g["image_id"], g["category_id"], g["category_name"]) == (w["image_id"], w["category_id"],
                                                                         w["category_name"])
        assert g["bbox"] == pytest.approx(w["bbox"], abs=1e-3)
        assert g["score"] == pytest.approx(w["score"], abs=1e-5)
    info = json.loads((tmp_path / "out" / "images.json").read_text())
    files = sorted(trained["images"].glob("*.png"))
    assert [(i["id"], Path(i["file_name"]).name, i["height"], i["width"]) for i in info["images"]] == [
        (n, p.name, h, w) for n, (p, (h, w)) in enumerate(zip(files, SIZES, strict=True), start=1)]
    assert info["categories"] == CATEGORIES
    assert not (tmp_path / "out" / "drawn").exists()


def test_draw_writes_each_image_with_its_boxes(trained: dict[str, Path], tmp_path: Path) -> None:
    want, _ = expected(trained, 0.3)
    assert want, "no detection above 0.3: nothing would be drawn"
    assert predict(trained, tmp_path / "out", "--draw") == 0  # default --score-thresh 0.3
    for path in sorted(trained["images"].glob("*.png")):
        drawn = np.asarray(Image.open(tmp_path / "out" / "drawn" / path.name).convert("RGB"))
        original = np.asarray(Image.open(path).convert("RGB"))
        assert drawn.shape == original.shape
    first = want[0]
    x, y = (int(v) for v in first["bbox"][:2])
    drawn = np.asarray(Image.open(tmp_path / "out" / "drawn" / "img0.png").convert("RGB"))
    label = [c["id"] for c in CATEGORIES].index(first["category_id"]) + 1
    assert tuple(drawn[y, x]) == _color(label)  # the box's corner has its category's colour


def test_nothing_above_the_threshold_draws_the_image_unchanged(trained: dict[str, Path], tmp_path: Path) -> None:
    assert predict(trained, tmp_path / "out", "--draw", "--score-thresh", "1.0") == 0
    assert json.loads((tmp_path / "out" / "detections.json").read_text()) == []
    for path in trained["images"].glob("*.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "drawn" / path.name).convert("RGB")),
                              np.asarray(Image.open(path).convert("RGB")))


def test_single_image_and_an_untrained_architecture_numbers_categories(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    arch = tiny_arch()  # no recorded categories: ids 1..K named by their id
    arch.save(tmp_path / "plain.json")
    image = trained["images"] / "img1.png"
    args = ["predict", str(tmp_path / "plain.json"), str(image), "--weights", str(trained["weights"]),
            "--out", str(tmp_path / "out"), "--score-thresh", "0", "--accelerator", "auto"]
    assert main(args) == 0
    got = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert got and {d["image_id"] for d in got} == {1}
    assert all(d["category_name"] == str(d["category_id"]) and 1 <= d["category_id"] <= 3 for d in got)


def _bad_unreadable(folder: Path) -> list[str]:
    (folder / "broken.png").write_bytes(b"not a png")
    return [str(folder / "broken.png")]


def _bad_empty_folder(folder: Path) -> list[str]:
    (folder / "empty").mkdir()
    return [str(folder / "empty")]


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "no such image file or folder"),
    ("unreadable", "cannot decode image"),
    ("empty", "no images in folder"),
    ("existing", "folder exists and is not empty"),
    ("no-weights", "--weights: required"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    out = tmp_path / "out"
    inputs = [str(trained["images"])]
    if case == "missing":
        inputs = [str(trained["images"] / "img0.png"), str(tmp_path / "nope.jpg")]
    elif case == "unreadable":
        inputs = [str(trained["images"])] + _bad_unreadable(tmp_path)
    elif case == "empty":
        inputs = _bad_empty_folder(tmp_path)
    elif case == "existing":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()
    if case == "no-weights":
        code = main(["predict", str(trained["arch"]), *inputs, "--out", str(out)])
    else:
        code = predict(trained, out, inputs=inputs)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available here")
def test_gpu_without_cuda_is_bad_input(trained: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert predict(trained, tmp_path / "out", "--accelerator", "gpu") == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_labels_are_tags_that_never_cover_each_other() -> None:
    """Crowded boxes: every label tag inside the image, none over another; black ink on light colours."""
    from hitdet.predicting import _ink, draw_detections, label_tags

    boxes = [[10, 0, 80, 60], [40, 5, 120, 70], [45, 8, 118, 66], [150, 100, 250, 200], [155, 105, 245, 190],
             [280, 150, 318, 238], [5, 228, 60, 239]]
    sizes = [(60, 14)] * len(boxes)
    scores = [0.9, 0.85, 0.8, 0.7, 0.65, 0.6, 0.5]
    tags = label_tags(boxes, sizes, scores, 320, 240)
    for i, (x0, y0, x1, y1) in enumerate(tags):
        assert 0 <= x0 and x1 <= 320 and 0 <= y0 and y1 <= 240, tags[i]
        for j in range(i):
            a = tags[j]
            assert not (x0 < a[2] and a[0] < x1 and y0 < a[3] and a[1] < y1), (tags[i], a)
    assert tags[3] == (150, 86, 210, 100)  # room above its box: just above the top-left corner
    assert tags[0] == (10, 0, 70, 14)  # at the image's top edge: inside the box
    assert _ink((60, 180, 75)) == (0, 0, 0) and _ink((255, 225, 25)) == (0, 0, 0) and _ink((0, 0, 128)) == (255,) * 3
    # the drawing: a tag of the box's colour under each label, at a size that follows the image
    image = torch.full((3, 480, 640), 0.5)
    out = {"boxes": torch.tensor([[100.0, 100, 300, 300]]), "labels": torch.tensor([2]), "scores": torch.tensor([0.9])}
    drawn = np.asarray(draw_detections(image, out, [{"id": 1, "name": "a"}, {"id": 2, "name": "circle"}]))
    tag_rows = [y for y in range(60, 100) if (drawn[y, 101:110] == _color(2)).all()]
    assert tag_rows and 100 - tag_rows[0] >= 480 // 40  # a tag at least one text line (12 px at 480 px) high
    ink = (drawn[tag_rows[0]:100, 100:300] == 0).all(axis=-1)
    assert ink.any()  # black text on the light green tag
