"""The examples/ scripts: each ``--smoke`` run end to end in a subprocess, checked on its real outputs.

Why subprocesses: the examples are scripts users copy and run as they are; running them as such
catches argument, import-path and output-layout mistakes that importing them would hide.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hitdet.architecture import load_architecture
from search_spaces import DetectorStructure
from strategies import load_subspaces

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
AP_KEYS = ("AP", "AP50", "AP75")


def run_example(name: str, *args: str, tmp: Path, timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    """Run ``examples/NAME`` with one thread and a throw-away HOME; fail with its output on error."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": str(home),
           "NNI_EXPERIMENT_DIR": str(home / "nni-experiments"), "TORCH_HOME": str(home / "torch")}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], env=env, cwd=tmp, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_pipeline_outputs(out: Path, detector: str) -> None:
    searched = load_architecture(out / "search" / "architecture.json")  # validates the JSON
    trained = load_architecture(out / "train" / "architecture.json")
    assert searched.detector_type == trained.detector_type == detector
    # the search ran on the screened sub spaces: every chosen op was kept by screening
    kept = load_subspaces(out / "screen" / "subspaces.json").kept
    for label, op in searched.sample().items():
        component = label.split("/")[0]
        assert op in kept[component], f"{label}: {op} not in the screened {component} sub space"
    metrics = json.loads((out / "eval" / "metrics.json").read_text())["metrics"]
    for key in AP_KEYS:
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    assert all(v == -1.0 or 0.0 <= v <= 1.0 for v in metrics.values()), metrics
    summary = json.loads((out / "summary.json").read_text())
    assert summary["detector"] == detector and summary["architecture"] == trained.sample()
    assert (out / "train" / "best.pt").is_file()
    # the data folder is made of links to the synthetic set, as it would be to a real COCO folder
    assert (out / "data" / "train").is_symlink() and (out / "data" / "annotations" / "instances_val.json").is_symlink()


def test_coco_twostage_smoke(tmp_path: Path) -> None:
    run_example("coco_twostage.py", "--smoke", "--no-progress", "--out", str(tmp_path / "run"), tmp=tmp_path)
    check_pipeline_outputs(tmp_path / "run", "faster_rcnn")


def test_coco_twostage_smoke_ddp_two_cpu_processes(tmp_path: Path) -> None:
    """--strategy ddp: Lightning's children re-run the script; rank 0 writes every result."""
    run_example("coco_twostage.py", "--smoke", "--no-progress", "--out", str(tmp_path / "run"), "--devices", "2",
                "--strategy", "ddp", tmp=tmp_path)
    check_pipeline_outputs(tmp_path / "run", "faster_rcnn")
    assert not list((tmp_path / "run").glob(".rank*"))  # the child ranks share rank 0's folders, write nothing


def test_retinanet_onestage_smoke(tmp_path: Path) -> None:
    run_example("retinanet_onestage.py", "--smoke", "--no-progress", "--out", str(tmp_path / "run"), tmp=tmp_path)
    check_pipeline_outputs(tmp_path / "run", "retinanet")
    searched = load_architecture(tmp_path / "run" / "search" / "architecture.json")
    head = [label for label in searched.sample() if label.startswith("head/")]
    # two searched towers (classification and box regression) of the default 4 blocks each
    assert len(head) == searched.structure.head_blocks == 2 * DetectorStructure().head_blocks


@pytest.mark.parametrize("search_neck", [False, True], ids=["backbone", "backbone+neck"])
def test_reuse_backbone_space_smoke(tmp_path: Path, search_neck: bool) -> None:
    out = tmp_path / "run"
    args = ["--smoke", "--out", str(out)] + (["--search-neck"] if search_neck else [])
    run_example("reuse_backbone_space.py", *args, tmp=tmp_path)
    example = load_example("reuse_backbone_space.py")
    structure = DetectorStructure().half_depth()  # labels do not depend on the width
    expected = structure.backbone_labels() + (structure.neck_labels() if search_neck else [])
    sample = json.loads((out / "sample.json").read_text())
    assert sorted(sample) == sorted(expected)
    for label, op in sample.items():
        allowed = example.BACKBONE_OPS if label.startswith("backbone/") else example.NECK_OPS
        assert op in allowed, (label, op)
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["sample"] == sample
    assert metadata["macs"]["source"] == "space"  # the user's space forwarded our analytic MAC table


def test_coco_layouts_become_one_linked_folder(tmp_path: Path) -> None:
    """COCO 2014 trainval35k (two image folders, two JSONs) is merged into one split of links."""
    example = load_example("coco_twostage.py")
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    cats = [{"id": 1, "name": "a"}]
    files = {"train2014": ["COCO_train2014_1.jpg"], "val2014": ["COCO_val2014_2.jpg", "COCO_val2014_3.jpg"]}
    for folder, names in files.items():
        (root / folder).mkdir()
        for name in names:
            (root / folder / name).write_bytes(b"jpg")

    def ann(name: str, images: list[tuple[int, str]]) -> None:
        data = {"images": [{"id": i, "file_name": f, "width": 4, "height": 4} for i, f in images],
                "annotations": [{"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4,
                                 "iscrowd": 0} for i, _ in images],
                "categories": cats}
        (root / "annotations" / name).write_text(json.dumps(data))

    ann("instances_train2014.json", [(1, "COCO_train2014_1.jpg")])
    ann("instances_valminusminival2014.json", [(2, "COCO_val2014_2.jpg")])
    ann("instances_minival2014.json", [(3, "COCO_val2014_3.jpg")])
    splits = example.find_coco(root)
    data = tmp_path / "data"
    for split, (images, anns) in splits.items():
        example.link_split(data, split, images, anns)
    merged = json.loads((data / "annotations" / "instances_train.json").read_text())
    assert [im["id"] for im in merged["images"]] == [1, 2] and len(merged["annotations"]) == 2
    assert sorted(p.name for p in (data / "train").iterdir()) == ["COCO_train2014_1.jpg", "COCO_val2014_2.jpg"]
    assert (data / "train" / "COCO_val2014_2.jpg").resolve() == (root / "val2014" / "COCO_val2014_2.jpg").resolve()
    assert (data / "val").resolve() == (root / "val2014").resolve()

    from hitdet.data import resolve_split

    assert resolve_split(data, "train")[0] == data / "train"
    assert resolve_split(data, "val")[1] == data / "annotations" / "instances_val.json"


def test_data_arguments_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    example = load_example("coco_twostage.py")
    parser = example.build_parser("test")
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit, match="give --coco-root"):
        example.data_splits(parser.parse_args(["--out", out, "--train-images", str(tmp_path)]))
    args = parser.parse_args(["--out", out, "--train-images", str(tmp_path), "--train-ann", str(tmp_path / "b.json"),
                              "--val-images", str(tmp_path), "--val-ann", str(tmp_path / "d.json")])
    with pytest.raises(SystemExit, match=r"not found: .*b\.json, .*d\.json$"):
        example.data_splits(args)
    assert example.data_splits(parser.parse_args(["--out", "x", "--smoke"])) is None
    assert not (tmp_path / "run").exists()
