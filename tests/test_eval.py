"""COCO evaluation: ground truth scores 1.0, shifted boxes score what pycocotools computes on the files."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hitdet.cli import main
from hitdet.data import SynthSpec, load_split, write_synthetic
from hitdet.errors import UserError
from hitdet.evaluation import (
    METRIC_NAMES,
    available_backends,
    coco_evaluate,
    format_per_class,
    format_table,
    to_coco_results,
)


@pytest.fixture(scope="module")
def val(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = write_synthetic(tmp_path_factory.mktemp("eval") / "d", SynthSpec(num_train=1, num_val=30, seed=7))
    return root, root / "annotations" / "instances_val.json"


def _gt_detections(ann: Path) -> list[dict]:
    data = json.loads(ann.read_text())
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in data["annotations"]]


def _shifted(ann: Path) -> list[dict]:
    """Boxes shifted by a few pixels (a third of them a lot), scores decreasing, one wrong class."""
    dets = []
    for i, d in enumerate(_gt_detections(ann)):
        x, y, w, h = d["bbox"]
        shift = 0.4 * w if i % 3 == 0 else 2.0
        cat = 5 if i == 4 and d["category_id"] != 5 else d["category_id"]
        dets.append({**d, "bbox": [x + shift, y + 1.0, w, h], "score": 1.0 - i * 0.003, "category_id": cat})
    return dets


def _pycocotools_direct(ann: Path, det_file: Path, cat_ids: list[int] | None = None) -> list[float]:
    """COCOeval on the files; ``cat_ids``: evaluate only these categories (one: that category's AP)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        dt = gt.loadRes(str(det_file))
        ev = COCOeval(gt, dt, "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def test_ground_truth_as_detections_scores_one(val: tuple[Path, Path]) -> None:
    _, ann = val
    metrics = coco_evaluate(ann, _gt_detections(ann))
    for name in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100"):
        assert metrics[name] == pytest.approx(1.0), name


def test_shifted_boxes_match_pycocotools_on_the_files(val: tuple[Path, Path], tmp_path: Path) -> None:
    _, ann = val
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(_shifted(ann)))
    expected = _pycocotools_direct(ann, det_file)
    got = coco_evaluate(ann, det_file)
    assert [got[n] for n in METRIC_NAMES] == pytest.approx(expected, abs=1e-12)
    assert 0.2 < got["AP50"] < 1.0 and got["AP"] < got["AP50"]  # really degraded, not trivially 0 or 1


def test_per_class_ap_is_cocoeval_restricted_to_that_category(val: tuple[Path, Path], tmp_path: Path) -> None:
    _, ann = val
    dets = _shifted(ann)
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(dets))
    rows: list[dict] = []
    overall = coco_evaluate(ann, det_file, per_class=rows)
    gt = json.loads(ann.read_text())
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    assert [(r["category_id"], r["name"]) for r in rows] == [(c["id"], c["name"]) for c in cats]
    for r in rows:
        alone = _pycocotools_direct(ann, det_file, [r["category_id"]])
        assert r["AP"] == pytest.approx(alone[0], abs=1e-12), r["name"]
        assert r["AP50"] == pytest.approx(alone[1], abs=1e-12), r["name"]
        assert r["AP75"] == pytest.approx(alone[2], abs=1e-12), r["name"]
        assert r["instances"] == sum(1 for a in gt["annotations"] if a["category_id"] == r["category_id"])
    # the summary's AP is the mean over categories with ground truth
    assert overall["AP"] == pytest.approx(sum(r["AP"] for r in rows) / len(rows), abs=1e-12)
    assert len({round(r["AP"], 6) for r in rows}) > 1  # the categories really differ


def test_per_class_without_ground_truth_is_none_and_printed_n_a(val: tuple[Path, Path]) -> None:
    _, ann = val
    data = json.loads(ann.read_text())
    data["categories"].append({"id": 99, "name": "unseen"})
    rows: list[dict] = []
    coco_evaluate(data, _gt_detections(ann), per_class=rows)
    unseen = [r for r in rows if r["category_id"] == 99]
    assert unseen == [{"category_id": 99, "name": "unseen", "instances": 0, "AP": None, "AP50": None, "AP75": None}]
    assert all(r["AP"] == pytest.approx(1.0) for r in rows if r["category_id"] != 99)
    table = format_per_class(rows, columns=3)
    lines = table.splitlines()
    assert lines[0] == "Per-category box AP" and lines[1].count("category") == 3
    assert len(lines) == 3 + 2  # title, header, rule, then 5 categories in rows of 3
    assert "unseen" in table and "n/a" in table and "1.0000" in table


@pytest.mark.skipif("faster-coco-eval" not in available_backends(), reason="faster-coco-eval not installed")
def test_faster_coco_eval_gives_the_same_numbers(val: tuple[Path, Path]) -> None:
    _, ann = val
    for dets in (_gt_detections(ann), _shifted(ann), []):
        rows_a: list[dict] = []
        rows_b: list[dict] = []
        a = coco_evaluate(ann, dets, backend="pycocotools", per_class=rows_a)
        b = coco_evaluate(ann, dets, backend="faster-coco-eval", per_class=rows_b)
        for name in METRIC_NAMES:
            assert b[name] == pytest.approx(a[name], abs=1e-6), name
        for ra, rb in zip(rows_a, rows_b, strict=True):
            assert {k: v for k, v in rb.items() if not k.startswith("AP")} == {
                k: v for k, v in ra.items() if not k.startswith("AP")}
            for key in ("AP", "AP50", "AP75"):
                assert rb[key] == pytest.approx(ra[key], abs=1e-6), (ra["name"], key)


def test_image_subset_and_no_detections(val: tuple[Path, Path]) -> None:
    _, ann = val
    dets = _gt_detections(ann)
    half = sorted({d["image_id"] for d in dets})[:10]
    only_half = [d for d in dets if d["image_id"] in half]
    assert coco_evaluate(ann, only_half, image_ids=half)["AP"] == pytest.approx(1.0)
    assert coco_evaluate(ann, only_half)["AR100"] < 0.7  # the other images' objects are missed
    assert all(v == 0.0 for v in coco_evaluate(ann, []).values())


def test_bad_detections_are_user_errors(val: tuple[Path, Path], tmp_path: Path) -> None:
    _, ann = val
    good = _gt_detections(ann)[0]
    with pytest.raises(UserError, match=r"detections\[0\]: image_id 999"):
        coco_evaluate(ann, [{**good, "image_id": 999}])
    with pytest.raises(UserError, match=r"detections\[0\]: no 'score'"):
        coco_evaluate(ann, [{k: v for k, v in good.items() if k != "score"}])
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(UserError, match="bad.json: invalid JSON"):
        coco_evaluate(ann, bad)
    with pytest.raises(UserError, match="unknown evaluation backend"):
        coco_evaluate(ann, [good], backend="nope")


def test_to_coco_results_maps_labels_back_and_converts_boxes() -> None:
    out = [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]), "labels": torch.tensor([2]),
            "scores": torch.tensor([0.9])},
           {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}]
    res = to_coco_results(out, [5, 6], {1: 3, 2: 90})
    assert res == [{"image_id": 5, "category_id": 90, "bbox": [10.0, 20.0, 20.0, 40.0], "score": 0.9}]


def test_format_table_lists_every_metric() -> None:
    table = format_table(dict.fromkeys(METRIC_NAMES, 0.5) | {"AP_large": -1.0})
    assert all(name in table for name in METRIC_NAMES) and "n/a" in table


def test_cli_eval_scores_a_detections_file(
    val: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root, ann = val
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(_shifted(ann)))
    arch = tmp_path / "arch.json"
    import dataclasses

    from hitdet import load_architecture

    a = load_architecture("hit-detector")
    dataclasses.replace(a, settings=dataclasses.replace(a.settings, num_classes=5)).save(arch)
    code = main(["eval", str(arch), "--data", str(root), "--detections", str(det_file), "--out", str(tmp_path / "ev")])
    assert code == 0
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    metrics = written["metrics"]
    assert metrics["AP"] == pytest.approx(_pycocotools_direct(ann, det_file)[0], abs=1e-12)
    cat_ids = [c["id"] for c in json.loads(ann.read_text())["categories"]]
    assert [r["category_id"] for r in written["per_class"]] == sorted(cat_ids)
    for r in written["per_class"]:
        assert r["AP"] == pytest.approx(_pycocotools_direct(ann, det_file, [r["category_id"]])[0], abs=1e-12)
    out = capsys.readouterr().out
    assert "AP50" in out and "Per-category box AP" in out
    for r in written["per_class"]:  # each category's line shows its AP as written
        assert f"{r['name']:<8}  {r['AP']:.4f}" in out
    assert load_split(root, "val").num_classes == 4
    # a re-run replaces eval's own results (no --force needed); a folder holding anything else is refused
    (tmp_path / "ev" / "metrics.json").write_text("{}")
    code = main(["eval", str(arch), "--data", str(root), "--detections", str(det_file), "--out", str(tmp_path / "ev")])
    assert code == 0 and json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"] == metrics
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code = main(["eval", str(arch), "--data", str(root), "--detections", str(det_file), "--out",
                 str(tmp_path / "mine")])
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    assert main(["eval", str(arch), "--data", str(root)]) == 2
    assert "--weights: required" in capsys.readouterr().err
