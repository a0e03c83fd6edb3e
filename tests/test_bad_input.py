"""Bad input, one table: every case exits 2 with exactly one stderr line, no traceback, and writes nothing.

Each row: the command line (``{tmp}``: the test's folder, ``{data}``: a valid dataset, ``{out}``: an
output folder that must not exist afterwards), the files to write under ``{tmp}`` first, and a
substring of the one error line. Most rows run in-process through :func:`hitdet.cli.main`; a few run
``python -m hitdet`` to prove that no traceback reaches the terminal.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import torch

from hitdet.cli import main
from hitdet.data import SynthSpec, write_synthetic
from hitdet.data.synth import CATEGORIES
from tests.helpers import tree

PRESET: dict[str, Any] = json.loads(files("hitdet.presets").joinpath("hit-detector.json").read_text())
TINY_TRAIN = ["--config", "synth-cpu", "--set", "width=0.0625", "--epochs", "1", "--no-progress"]
TINY_SEARCH = ["--config", "synth-cpu", "--set", "train.width=0.0625", "--epochs", "1", "--no-progress"]


def arch(edit: Any) -> str:
    """The preset's JSON after ``edit(doc)`` (which changes the document in place)."""
    doc = copy.deepcopy(PRESET)
    edit(doc)
    return json.dumps(doc)


def _set(path: str, value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


def _drop(path: str) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[last]
    return edit


def _grouped_odd(doc: dict[str, Any]) -> None:
    doc["backbone"]["stem"]["out_channels"] = 15  # ir_k3_e1_g2: 1x1 conv in 2 groups needs even channels
    doc["backbone"]["stages"][0][0] = {"op": "ir_k3_e1_g2", "out_channels": 47, "stride": 2}


BAD_ARCHS: dict[str, tuple[str, str]] = {  # name: (file text, expected message)
    "truncated": (json.dumps(PRESET)[:300], "arch.json: invalid JSON"),
    "version": (arch(_set("version", 99)), "version"),
    "unknown-op": (arch(_set("backbone.stages.1.2.op", "ir_k9_e6")), "backbone.stages[1][2].op: unknown op 'ir_k9_e6'"),
    "neck-count": (arch(_set("neck.cells", PRESET["neck"]["cells"][:7])), "neck.cells"),
    "head-empty": (arch(_set("head.blocks", [])), "head.blocks: expected at least one block"),
    "stage-count": (arch(_set("backbone.stages", PRESET["backbone"]["stages"][:3])), "backbone.stages"),
    "channels-type": (arch(_set("backbone.stages.0.0.out_channels", "48")), "backbone.stages[0][0].out_channels"),
    "stride-type": (arch(_set("backbone.stem.stride", 1.5)), "backbone.stem.stride"),
    "classes-type": (arch(_set("detector.num_classes", "81")), "detector.num_classes"),
    "unknown-key": (arch(_set("neck.bogus", 1)), "bogus"),
    "missing-key": (arch(_drop("head")), "head"),
    "grouped-channels": (arch(_grouped_odd), "ir_k3_e1_g2"),
    "not-an-object": ("[1, 2]", "arch.json"),
    "stride-3": (arch(_set("backbone.stages.0.0.stride", 3)), "backbone.stages[0][0].stride: must be 1 or 2"),
    "stride-1000": (arch(_set("backbone.stem.stride", 1000)), "backbone.stem.stride: must be 1 or 2"),
    "score-thresh": (arch(_set("detector.box_score_thresh", 5)), "detector.box_score_thresh"),
    "min-size-0": (arch(_set("detector.min_size", 0)), "detector.min_size"),
    "5000-digits": (json.dumps(PRESET).replace('"version": 1', '"version": ' + "1" * 5000), "arch.json: invalid JSON"),
    "nested-100k": ("[" * 100_000 + "]" * 100_000, "arch.json: JSON nested deeper than"),
}

SUBSPACES_OK = {"format": "hitdet-subspaces", "version": 1,
                "components": {"backbone": {"ops": ["ir_k3_e3", "skip"]}, "neck": {"ops": ["sep_k3"]},
                               "head": {"ops": ["ir_k3_e3"]}}}


def _coco(images: list[dict[str, Any]], annotations: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"images": images, "annotations": annotations or [], "categories": [{"id": 1, "name": "a"}]})


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (and holds none): a decompression bomb's shape."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


SYNTH_CLASSES = len(CATEGORIES) + 1  # the synthetic set's shapes + background
ARCH_SYNTH = arch(_set("detector.num_classes", SYNTH_CLASSES))
DET = [{"image_id": 1, "category_id": CATEGORIES[0]["id"], "bbox": [1, 2, 3, 4], "score": 0.5}]


def _dets(**change: Any) -> str:
    return json.dumps([{**DET[0], **change}])


def _subspaces(edit: Any) -> str:
    doc = copy.deepcopy(SUBSPACES_OK)
    edit(doc)
    return json.dumps(doc)


CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    # -- architecture JSON, through hitdet info and hitdet train
    *[(f"info-arch-{name}", ["info", "{tmp}/arch.json"], {"arch.json": text}, msg)
      for name, (text, msg) in BAD_ARCHS.items()],
    *[(f"train-arch-{name}", ["train", "{tmp}/arch.json", "--data", "{data}", "--out", "{out}", *TINY_TRAIN],
       {"arch.json": text}, msg)
      for name, (text, msg) in BAD_ARCHS.items() if name in ("truncated", "unknown-op", "grouped-channels")],
    # -- sub-spaces JSON, through hitdet search --sub-spaces
    ("subspaces-malformed", ["search", "--data", "{data}", "--out", "{out}", "--sub-spaces", "{tmp}/subs.json",
                             *TINY_SEARCH], {"subs.json": '{"format": "hitdet-sub'}, "subs.json: invalid JSON"),
    ("subspaces-not-object", ["search", "--data", "{data}", "--out", "{out}", "--sub-spaces", "{tmp}/subs.json",
                              *TINY_SEARCH], {"subs.json": "[]"}, "subs.json"),
    ("subspaces-unknown-op", ["search", "--data", "{data}", "--out", "{out}", "--sub-spaces", "{tmp}/subs.json",
                              *TINY_SEARCH],
     {"subs.json": _subspaces(_set("components.neck.ops", ["sep_k3", "sep_k9"]))}, "sep_k9"),
    ("subspaces-unknown-component", ["search", "--data", "{data}", "--out", "{out}", "--sub-spaces",
                                     "{tmp}/subs.json", *TINY_SEARCH],
     {"subs.json": _subspaces(_set("components.tail", {"ops": ["skip"]}))}, "tail"),
    # -- config files, train and screen
    ("train-config-unknown-key", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--config",
                                  "{tmp}/c.yaml"], {"c.yaml": "epochz: 3\n"}, "epochz"),
    ("train-config-wrong-type", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--config",
                                 "{tmp}/c.yaml"], {"c.yaml": "epochs: three\n"}, "epochs"),
    ("train-config-not-yaml", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--config",
                               "{tmp}/c.yaml"], {"c.yaml": "epochs: [1\n"}, "c.yaml"),
    ("screen-config-unknown-key", ["screen", "--data", "{data}", "--out", "{out}", "--config", "{tmp}/c.yaml"],
     {"c.yaml": "train:\n  epochz: 3\n"}, "epochz"),
    ("screen-config-wrong-type", ["screen", "--data", "{data}", "--out", "{out}", "--config", "{tmp}/c.yaml"],
     {"c.yaml": "train:\n  epochs: three\n"}, "epochs"),
    ("screen-config-strategy-type", ["screen", "--data", "{data}", "--out", "{out}", "--config", "{tmp}/c.yaml"],
     {"c.yaml": "strategy:\n  mu: lots\n"}, "mu"),
    # -- datasets
    ("train-data-no-annotations", ["train", "hit-detector", "--data", "{tmp}/d", "--out", "{out}", *TINY_TRAIN],
     {"d/train/.keep": ""}, "instances_train.json"),
    ("train-data-malformed", ["train", "hit-detector", "--data", "{tmp}/d", "--out", "{out}", *TINY_TRAIN],
     {"d/annotations/instances_train.json": "{\"images\": [", "d/train/.keep": ""}, "instances_train.json"),
    ("screen-data-malformed", ["screen", "--data", "{tmp}/d", "--out", "{out}", *TINY_SEARCH],
     {"d/annotations/instances_train.json": "{\"images\": [", "d/train/.keep": ""}, "instances_train.json"),
    ("screen-data-missing", ["screen", "--data", "{tmp}/nowhere", "--out", "{out}", *TINY_SEARCH], {}, "nowhere"),
    # -- arguments
    ("info-unknown-preset", ["info", "hit-detektor"], {}, "hit-detektor"),
    ("train-unknown-preset", ["train", "hit-detektor", "--data", "{data}", "--out", "{out}"], {}, "hit-detektor"),
    ("info-directory", ["info", "{tmp}/adir"], {"adir/.keep": ""}, "adir"),
    ("train-config-directory", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--config",
                                "{tmp}/adir"], {"adir/.keep": ""}, "adir"),
    ("search-unknown-sub-spaces", ["search", "--data", "{data}", "--out", "{out}", "--sub-spaces", "paper-head"],
     {}, "paper-head"),
    ("screen-unknown-recipe", ["screen", "--data", "{data}", "--out", "{out}", "--config", "synth-gpu"], {},
     "synth-gpu"),
    ("train-resume-nothing", ["train", "--out", "{out}", "--resume"], {}, "nothing to resume"),
    # -- config ranges: validated before anything is written (issue 14)
    *[(f"train-set-{key}", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", *TINY_TRAIN,
                            "--set", f"{key}={value}"], {}, msg)
      for key, value, msg in [("detector.min_size", "0", "detector.min_size: must be a positive integer"),
                              ("detector.max_size", "-5", "detector.max_size: must be a positive integer"),
                              ("detector.box_score_thresh", "5", "detector.box_score_thresh: must be between 0 and 1"),
                              ("num_workers", "-1", "num_workers: must be >= 0"),
                              ("lr", ".nan", "lr: must be a finite number"),
                              ("lr", ".inf", "lr: must be a finite number"),
                              ("seed", "-1", "seed: must be in [0, 2**32)")]],
    ("screen-arc-betas", ["screen", "--data", "{data}", "--out", "{out}", *TINY_SEARCH, "--set",
                          "strategy.arc_betas=abc"], {}, "strategy.arc_betas: must be two numbers"),
    ("screen-arc-lr", ["screen", "--data", "{data}", "--out", "{out}", *TINY_SEARCH, "--set",
                       "strategy.arc_learning_rate=-1"], {}, "strategy.arc_learning_rate: must be a positive number"),
    ("screen-num-ops-33", ["screen", "--data", "{data}", "--out", "{out}", *TINY_SEARCH, "--num-ops", "33"], {},
     "num_ops: must be at most the 32 ops"),
    ("search-train-lr-inf", ["search", "--data", "{data}", "--out", "{out}", *TINY_SEARCH, "--set", "train.lr=.inf"],
     {}, "lr: must be a finite number"),
    ("data-synth-seed", ["data", "synth", "--out", "{out}", "--seed", "-1", "--train", "1", "--val", "1"], {},
     "--seed: must be in [0, 2**32)"),
    ("data-synth-cls-seed", ["data", "synth-cls", "--out", "{out}", "--seed", "-1"], {},
     "--seed: must be in [0, 2**32)"),
    # -- devices: resolved before anything is written
    *[(f"{cmd}-{name}", [cmd, *pre, "--data", "{data}", "--out", "{out}", *tiny, *flags], {}, msg)
      for cmd, pre, tiny in [("train", ["hit-detector"], TINY_TRAIN), ("screen", [], TINY_SEARCH),
                             ("pretrain", ["--arch", "hit-detector"], ["--epochs", "1"])]
      for name, flags, msg in [("accelerator-bogus", ["--accelerator", "bogus"], "invalid accelerator name"),
                               ("strategy-bogus", ["--strategy", "bogus"], "invalid strategy name")]],
    # -- data files
    ("train-data-duplicate-image-id", ["train", "hit-detector", "--data", "{tmp}/d", "--out", "{out}", *TINY_TRAIN],
     {"d/annotations/instances_train.json": _coco([{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}]),
      "d/train/.keep": ""}, "images[1]: duplicate image id 1"),
    ("train-data-image-bomb", ["train", "hit-detector", "--data", "{tmp}/d", "--out", "{out}", *TINY_TRAIN],
     {"d/annotations/instances_train.json": _coco([{"id": 1, "file_name": "a.png"}]),
      "d/annotations/instances_val.json": _coco([{"id": 1, "file_name": "a.png"}]),
      "d/train/a.png": _png_header(100_000, 100_000), "d/val/a.png": _png_header(100_000, 100_000)},
     "a.png: image too large"),
    ("train-data-nested", ["train", "hit-detector", "--data", "{tmp}/d", "--out", "{out}", *TINY_TRAIN],
     {"d/annotations/instances_train.json": '{"images": ' + "[" * 100_000 + "]" * 100_000 + "}",
      "d/train/.keep": ""}, "instances_train.json: JSON nested deeper than"),
    ("eval-detections-string-boxes", ["eval", "{tmp}/arch.json", "--data", "{data}", "--detections",
                                      "{tmp}/dets.json", "--out", "{out}"],
     {"arch.json": ARCH_SYNTH, "dets.json": _dets(bbox=["1", "2", "3", "4"])}, "dets.json[0]: 'bbox' must be"),
    ("eval-detections-list-image-id", ["eval", "{tmp}/arch.json", "--data", "{data}", "--detections",
                                       "{tmp}/dets.json", "--out", "{out}"],
     {"arch.json": ARCH_SYNTH, "dets.json": _dets(image_id=[1])}, "dets.json[0]: 'image_id' must be an integer"),
    ("eval-detections-5000-digits", ["eval", "{tmp}/arch.json", "--data", "{data}", "--detections",
                                     "{tmp}/dets.json", "--out", "{out}"],
     {"arch.json": ARCH_SYNTH, "dets.json": "[" + "9" * 5000 + "]"}, "dets.json: invalid JSON"),
    # -- the output folder
    ("train-out-symlink", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--force", *TINY_TRAIN],
     {"real/old.txt": "old run", "out": "->real"}, "is a symbolic link"),
    ("screen-out-symlink", ["screen", "--data", "{data}", "--out", "{out}", "--force", *TINY_SEARCH],
     {"real/old.txt": "old run", "out": "->real"}, "is a symbolic link"),
    ("train-out-is-file", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--force", *TINY_TRAIN],
     {"out": "a file"}, "exists and is not a folder"),
    ("screen-resume-nothing", ["screen", "--out", "{out}", "--resume"], {}, "no checkpoint to resume from"),
]

if not torch.cuda.is_available():  # where there is a GPU, --accelerator gpu is valid input
    CASES += [(f"{cmd}-accelerator-gpu-without-gpu", [cmd, *pre, "--data", "{data}", "--out", "{out}", *tiny,
                                                      "--accelerator", "gpu"], {}, "--accelerator gpu")
              for cmd, pre, tiny in [("train", ["hit-detector"], TINY_TRAIN), ("search", [], TINY_SEARCH)]]

# Rows that also run as a subprocess, to prove the terminal sees one line and no traceback.
SUBPROCESS = {"info-arch-truncated", "subspaces-unknown-op", "train-data-malformed"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("bad") / "data", SynthSpec(num_train=2, num_val=2, seed=1))


def _prepare(tmp_path: Path, data: Path, args: list[str], files: dict[str, Any]) -> tuple[list[str], Path]:
    """Write ``files`` (text, bytes, or "->TARGET" for a symbolic link) under ``tmp_path``."""
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content.startswith("->"):
            path.symlink_to(tmp_path / content[2:])
        else:
            path.write_text(content)
    out = tmp_path / "out"
    fill = {"tmp": str(tmp_path), "data": str(data), "out": str(out)}
    return [a.format(**fill) for a in args], out


@pytest.mark.parametrize("name,args,files,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name: str, args: list[str], files: dict[str, str], message: str, data: Path, tmp_path: Path,
                   capsys: pytest.CaptureFixture) -> None:
    argv, out = _prepare(tmp_path, data, args, files)
    before = tree(tmp_path), tree(data)
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert lines[0].startswith(f"hitdet {argv[0]}: error: "), lines[0]
    assert (tree(tmp_path), tree(data)) == before
    assert "out" in files or not out.exists()



@pytest.mark.parametrize("name,args,files,message", [c for c in CASES if c[0] in SUBPROCESS],
                         ids=sorted(SUBPROCESS, key=[c[0] for c in CASES].index))
def test_bad_input_subprocess(name: str, args: list[str], files: dict[str, str], message: str, data: Path,
                              tmp_path: Path) -> None:
    argv, out = _prepare(tmp_path, data, args, files)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "hitdet", *argv], capture_output=True, text=True, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr and message in lines[0], proc.stderr
    assert not out.exists()


# -- existing output is never silently replaced ---------------------------------------------------

REFUSE: list[tuple[str, list[str]]] = [
    ("train", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", *TINY_TRAIN]),
    ("screen", ["screen", "--data", "{data}", "--out", "{out}", *TINY_SEARCH]),
    ("search", ["search", "--data", "{data}", "--out", "{out}", *TINY_SEARCH]),
    ("data-synth", ["data", "synth", "--out", "{out}", "--train", "1", "--val", "1"]),
    ("pretrain", ["pretrain", "--arch", "hit-detector", "--data", "{tmp}/imgs", "--out", "{out}", "--epochs", "1"]),
]


@pytest.mark.parametrize("name,args", REFUSE, ids=[r[0] for r in REFUSE])
def test_existing_output_is_refused_without_force(name: str, args: list[str], data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    argv, out = _prepare(tmp_path, data, args, {"out/precious.txt": "keep me"})
    if name == "pretrain":  # a valid ImageFolder, so that only the output folder is wrong
        from PIL import Image

        for split in ("train", "val"):
            for cls in ("a", "b"):
                (tmp_path / "imgs" / split / cls).mkdir(parents=True)
                Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / split / cls / "x.png")
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "not empty" in lines[0] and "--force" in lines[0], err
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"
