"""Bad input, one table: every case exits 2 with exactly one stderr line, no traceback, and writes nothing.

Each row: the command line (``{tmp}``: the test's folder, ``{data}``: a valid dataset, ``{model}``: a
folder with a tiny detector's arch.json and w.pt for it, ``{out}``: an output folder that must not exist
afterwards), the files to write under ``{tmp}`` first (see :func:`_prepare`), and a substring of the one
error line, which starts ``hitdet COMMAND: error:`` (``hitdet data synth: error:`` for a data action),
argparse's own usage errors included. Most rows run in-process through :func:`hitdet.cli.main`; a few run
``python -m hitdet`` to prove that no traceback reaches the terminal. The first rows (``CASES``) are
grouped by input; the later ones (``NEW_CASES``) by command.
"""

from __future__ import annotations

import copy
import dataclasses
import io
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
from tests.helpers import read_only, tiny_arch, tree

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


def _wide(doc: dict[str, Any]) -> None:
    for stage in doc["backbone"]["stages"]:
        for block in stage:
            block["out_channels"] = 4096  # each within the per-layer bound; the whole detector is not


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
    # upper bounds (issue 23): hitdet info refuses what train would refuse
    "channels-1e9": (arch(_set("backbone.stages.0.0.out_channels", 10**9)),
                     "backbone.stages[0][0].out_channels: must be at most 4096, got 1000000000"),
    "roi-size-1e6": (arch(_set("head.roi_size", 10**6)), "head.roi_size: must be at most 64, got 1000000"),
    "neck-channels-5000": (arch(_set("neck.channels", 5000)), "neck.channels: must be at most 4096"),
    "fc-channels-1e5": (arch(_set("head.fc_channels", 10**5)), "head.fc_channels: must be at most 4096"),
    "stage-100-blocks": (arch(_set("backbone.stages.0", [PRESET["backbone"]["stages"][0][1]] * 100)),
                         "backbone.stages[0]: must be at most 64 blocks"),
    "min-size-1e5": (arch(_set("detector.min_size", 10**5)), "detector.min_size: must be at most 4096 pixels"),
    "proposals-1e9": (arch(_set("detector.rpn_post_nms_top_n_test", 10**9)),
                      "detector.rpn_post_nms_top_n_test: must be at most 100000"),
    "params-4096-wide": (arch(_wide), "G parameters, more than the 1 G"),
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
      for name, (text, msg) in BAD_ARCHS.items()
      if name in ("truncated", "unknown-op", "grouped-channels", "channels-1e9", "roi-size-1e6", "params-4096-wide")],
    ("train-width-past-bounds", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", *TINY_TRAIN,
                                 "--width", "3"], {}, "backbone.tail[1].out_channels: must be at most 4096"),
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
     "--num-ops: must be at most the 32 ops"),
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

READ_ONLY = "<read-only folder>"  # a files value: make this folder (with what is written inside it) read-only


def _png(width: int = 8, height: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


PNG = _png()
IMAGE_FOLDER = {f"imgs/{split}/{cls}/x.png": PNG for split in ("train", "val") for cls in ("a", "b")}
ARCH_OTHER = json.dumps(dataclasses.replace(tiny_arch(width=0.125, num_classes=SYNTH_CLASSES),
                                            metadata={"categories": CATEGORIES}).to_dict())

TRAIN = ["train", "hit-detector", "--data", "{data}", "--out", "{out}", *TINY_TRAIN]
SCREEN = ["screen", "--data", "{data}", "--out", "{out}", *TINY_SEARCH]
SEARCH = ["search", "--data", "{data}", "--out", "{out}", *TINY_SEARCH]
PRETRAIN = ["pretrain", "--arch", "hit-detector", "--width", "0.0625", "--data", "{tmp}/imgs", "--out", "{out}",
            "--config", "synth-cpu", "--epochs", "1", "--no-progress"]
EVAL = ["eval", "{model}/arch.json", "--weights", "{model}/w.pt", "--data", "{data}", "--out", "{out}", "--no-progress"]
PREDICT = ["predict", "{model}/arch.json", "{tmp}/img.png", "--weights", "{model}/w.pt", "--out", "{out}"]
EXPORT = ["export", "{model}/arch.json", "--weights", "{model}/w.pt", "--out", "{out}"]
BENCH = ["bench", "{model}/arch.json", "--out", "{out}", "--runs", "1", "--warmup", "0", "--batch", "1"]
CONVERT = ["convert-weights", "{tmp}/w.pth", "--out", "{out}"]
CHECK = ["data", "check", "{tmp}/d"]


def _check_set(images: list[dict[str, Any]] | None = None, annotations: list[dict[str, Any]] | None = None,
               **files: Any) -> dict[str, Any]:
    """A one-image COCO folder for ``data check`` (d/annotations/instances_{train,val}.json, d/{train,val}/a.png)."""
    images = images if images is not None else [{"id": 1, "file_name": "a.png"}]
    ann = _coco(images, annotations)
    return {"d/annotations/instances_train.json": ann, "d/annotations/instances_val.json": ann,
            "d/train/a.png": PNG, "d/val/a.png": PNG, **files}


def _ann(**change: Any) -> list[dict[str, Any]]:
    return [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], **change}]


NEW_CASES: list[tuple[str, list[str], dict[str, Any], str]] = [
    # -- hitdet info
    ("info-no-arch", ["info"], {}, "the following arguments are required: arch"),
    ("info-rois-negative", ["info", "hit-detector", "--rois", "-1"], {}, "--rois must be >= 0"),
    ("info-rois-not-int", ["info", "hit-detector", "--rois", "many"], {}, "--rois: invalid int value"),
    ("info-input-size-zero", ["info", "hit-detector", "--input-size", "0x800"], {}, "sizes must be positive"),
    ("info-input-size-three", ["info", "hit-detector", "--input-size", "8x8x8"], {}, "expected HEIGHTxWIDTH"),
    ("info-arch-missing-file", ["info", "{tmp}/nope.json"], {}, "nope.json: no such file"),
    ("info-arch-empty-file", ["info", "{tmp}/arch.json"], {"arch.json": ""}, "arch.json: invalid JSON"),
    ("info-arch-not-utf8", ["info", "{tmp}/arch.json"], {"arch.json": b'{"format": "\xff\xfe"}'}, "not UTF-8"),
    ("info-arch-null", ["info", "{tmp}/arch.json"], {"arch.json": "null"}, "arch.json"),
    ("info-arch-symlink-loop", ["info", "{tmp}/loop.json"], {"loop.json": "->loop.json"}, "loop.json"),
    ("info-arch-nan-thresh", ["info", "{tmp}/arch.json"],
     {"arch.json": arch(_set("detector.box_score_thresh", float("nan")))}, "detector.box_score_thresh"),
    ("info-arch-classes-0", ["info", "{tmp}/arch.json"], {"arch.json": arch(_set("detector.num_classes", 0))},
     "detector.num_classes"),
    ("info-arch-channels-0", ["info", "{tmp}/arch.json"],
     {"arch.json": arch(_set("backbone.stages.0.0.out_channels", 0))}, "backbone.stages[0][0].out_channels"),
    ("info-arch-channels-bool", ["info", "{tmp}/arch.json"],
     {"arch.json": arch(_set("backbone.stem.out_channels", True))}, "backbone.stem.out_channels"),
    ("info-arch-version-string", ["info", "{tmp}/arch.json"], {"arch.json": arch(_set("version", "1"))}, "version"),
    ("info-arch-detector-type", ["info", "{tmp}/arch.json"], {"arch.json": arch(_set("detector.type", "yolo"))},
     "detector.type: unknown detector type 'yolo'"),
    ("info-arch-block-no-op", ["info", "{tmp}/arch.json"], {"arch.json": arch(_drop("backbone.stages.2.0.op"))},
     "backbone.stages[2][0]"),
    ("info-arch-format", ["info", "{tmp}/arch.json"], {"arch.json": arch(_set("format", "onnx"))}, "format"),
    ("info-arch-neck-channels-negative", ["info", "{tmp}/arch.json"],
     {"arch.json": arch(_set("neck.channels", -256))}, "neck.channels"),
    # -- hitdet data synth, data synth-cls
    ("data-synth-no-out", ["data", "synth", "--train", "1"], {}, "the following arguments are required: --out"),
    ("data-synth-train-0", ["data", "synth", "--out", "{out}", "--train", "0", "--val", "1"], {},
     "--train/--val: need at least one image each"),
    ("data-synth-val-negative", ["data", "synth", "--out", "{out}", "--train", "1", "--val", "-4"], {},
     "--train/--val"),
    ("data-synth-style", ["data", "synth", "--out", "{out}", "--style", "watercolours"], {}, "--style: invalid choice"),
    ("data-synth-seed-2-32", ["data", "synth", "--out", "{out}", "--seed", str(2**32), "--train", "1", "--val", "1"],
     {}, "--seed: must be in [0, 2**32)"),
    ("data-synth-out-is-file", ["data", "synth", "--out", "{out}", "--train", "1", "--val", "1"], {"out": "a file"},
     "exists and is not a folder"),
    ("data-synth-out-under-file", ["data", "synth", "--out", "{tmp}/afile/set", "--train", "1", "--val", "1"],
     {"afile": "a file"}, "afile"),
    ("data-synth-out-symlink-force", ["data", "synth", "--out", "{out}", "--force", "--train", "1", "--val", "1"],
     {"real/old.txt": "old", "out": "->real"}, "is a symbolic link"),
    ("data-synth-out-read-only", ["data", "synth", "--out", "{tmp}/ro/set", "--train", "1", "--val", "1"],
     {"ro": READ_ONLY}, "ro"),
    ("data-synth-cls-classes-1", ["data", "synth-cls", "--out", "{out}", "--classes", "1"], {},
     "--classes must be between 2 and"),
    ("data-synth-cls-size-8", ["data", "synth-cls", "--out", "{out}", "--size", "8"], {},
     "--size must be between 16 and"),
    ("data-synth-cls-size-huge", ["data", "synth-cls", "--out", "{out}", "--size", "100000"], {}, "--size must be"),
    ("data-synth-cls-train-0", ["data", "synth-cls", "--out", "{out}", "--train-per-class", "0"], {},
     "--train-per-class must be >= 1"),
    ("data-synth-cls-out-under-file", ["data", "synth-cls", "--out", "{tmp}/afile/set"], {"afile": "x"}, "afile"),
    ("data-synth-cls-out-is-file", ["data", "synth-cls", "--out", "{out}"], {"out": "x"}, "exists and is not a folder"),
    # -- hitdet data check: COCO annotation files and images
    ("data-check-missing-folder", ["data", "check", "{tmp}/nowhere"], {}, "nowhere"),
    ("data-check-unknown-split", [*CHECK, "--splits", "test"], _check_set(), "instances_test.json"),
    ("data-check-ann-empty", CHECK, _check_set(**{"d/annotations/instances_train.json": ""}),
     "instances_train.json: invalid JSON"),
    ("data-check-ann-not-utf8", CHECK, _check_set(**{"d/annotations/instances_train.json": b"\x80\x81{}"}),
     "instances_train.json"),
    ("data-check-ann-list", CHECK, _check_set(**{"d/annotations/instances_train.json": "[]"}),
     "instances_train.json: expected a JSON object"),
    ("data-check-ann-folder", CHECK, {**{k: v for k, v in _check_set().items() if "instances_train" not in k},
                                      "d/annotations/instances_train.json/x": ""}, "instances_train.json"),
    ("data-check-no-images-key", CHECK,
     _check_set(**{"d/annotations/instances_train.json": json.dumps({"categories": []})}), "'images' is missing"),
    ("data-check-no-categories", CHECK,
     _check_set(**{"d/annotations/instances_train.json": json.dumps({"images": []})}), "'categories' is missing"),
    ("data-check-annotations-object", CHECK, _check_set(**{"d/annotations/instances_train.json": json.dumps(
        {"images": [], "categories": [], "annotations": {}})}), "'annotations' is not a list"),
    ("data-check-category-id-string", CHECK, _check_set(**{"d/annotations/instances_train.json": json.dumps(
        {"images": [], "categories": [{"id": "1"}]})}), "categories[0]: needs an integer 'id'"),
    ("data-check-image-id-bool", CHECK, _check_set([{"id": True, "file_name": "a.png"}]),
     "images[0]: needs an integer 'id'"),
    ("data-check-image-no-file-name", CHECK, _check_set([{"id": 1}]), "images[0] (id 1): needs a 'file_name'"),
    ("data-check-image-width-0", CHECK, _check_set([{"id": 1, "file_name": "a.png", "width": 0, "height": 8}]),
     "'width' must be a positive number"),
    ("data-check-image-height-string", CHECK,
     _check_set([{"id": 1, "file_name": "a.png", "width": 8, "height": "8"}]), "'height' must be a positive number"),
    ("data-check-ann-not-object", CHECK, _check_set(annotations=[7]), "annotations[0]: expected an object"),
    ("data-check-no-bbox", CHECK, _check_set(annotations=[{"id": 1, "image_id": 1, "category_id": 1}]),
     "annotations[0] (id 1): no 'bbox'"),
    ("data-check-bbox-3", CHECK, _check_set(annotations=_ann(bbox=[1, 1, 4])), "'bbox' must be [x, y, width, height]"),
    ("data-check-bbox-strings", CHECK, _check_set(annotations=_ann(bbox=["1", "1", "4", "4"])), "'bbox' must be"),
    ("data-check-bbox-nan", CHECK, _check_set(annotations=_ann(bbox=[1, 1, float("nan"), 4])), "'bbox' must be"),
    ("data-check-bbox-object", CHECK, _check_set(annotations=_ann(bbox={"x": 1})), "'bbox' must be"),
    ("data-check-unknown-category", CHECK, _check_set(annotations=_ann(category_id=99)),
     "category_id 99 is not in 'categories'"),
    ("data-check-image-id-list", CHECK, _check_set(annotations=_ann(image_id=[1])), "image_id [1] is not in"),
    ("data-check-category-id-bool", CHECK, _check_set(annotations=_ann(category_id=True)), "category_id True"),
    ("data-check-unknown-image", CHECK, _check_set(annotations=_ann(image_id=5)), "image_id 5 is not in 'images'"),
    ("data-check-image-missing", CHECK, _check_set([{"id": 1, "file_name": "gone.png"}]),
     "gone.png: image file not found"),
    ("data-check-image-corrupt", CHECK, _check_set(**{"d/train/a.png": b"\x89PNG\r\n\x1a\nnot really"}),
     "a.png: cannot decode image"),
    ("data-check-image-truncated", CHECK, _check_set(**{"d/train/a.png": _png(64, 64)[:70]}), "a.png"),
    ("data-check-image-is-folder", CHECK, _check_set([{"id": 1, "file_name": "sub"}], **{"d/train/sub/x": ""}),
     "sub"),
    ("data-check-images-folder-missing", CHECK,
     {k: v for k, v in _check_set().items() if not k.startswith("d/train/")}, "images folder not found"),
    ("data-check-nested", CHECK, _check_set(**{"d/annotations/instances_train.json": json.dumps(
        {"images": [], "categories": [], "info": json.loads("[" * 70 + "]" * 70)})}), "JSON nested deeper than"),
    # -- messages (issue 23)
    ("screen-components-nested", [*SCREEN, "--set", "strategy.screen_components=[[backbone]]"], {},
     "strategy.screen_components: must be a list of component names, e.g. [backbone, neck], got [['backbone']]"),
    ("search-subspaces-components-list", [*SEARCH, "--sub-spaces", "{tmp}/subs.json"],
     {"subs.json": json.dumps({**SUBSPACES_OK, "components": [["backbone"]]})}, "'components' must be a"),
    ("info-arch-utf16", ["info", "{tmp}/arch.json"], {"arch.json": json.dumps(PRESET).encode("utf-16")},
     "arch.json: cannot read: UTF-16 or UTF-32 text; JSON must be UTF-8"),
    ("train-data-newline", ["train", "hit-detector", "--data", "{tmp}/two\nlines", "--out", "{out}", *TINY_TRAIN],
     {}, "two\\nlines"),
    ("info-arch-newline", ["info", "{tmp}/a\nb.json"], {}, "a\\nb.json: no such file"),
    # -- COCO values (issue 23): iscrowd 0/1 or a bool, annotation ids unique, sizes as the files have them
    *[(f"data-check-iscrowd-{name}", CHECK, _check_set(annotations=_ann(iscrowd=value)),
       f"'iscrowd' must be 0 or 1 (or true/false), got {value!r}")
      for name, value in [("no", "no"), ("2", 2), ("float", 1.0), ("null", None)]],
    ("data-check-duplicate-ann-id", CHECK, _check_set(annotations=[*_ann(), *_ann(bbox=[2, 2, 3, 3])]),
     "annotations[1] (id 1): duplicate annotation id 1 (also annotations[0])"),
    ("data-check-ann-id-string", CHECK, _check_set(annotations=_ann(id="a")), "'id' must be an integer, got 'a'"),
    ("data-check-size-1e12", CHECK, _check_set([{"id": 1, "file_name": "a.png", "width": 10**12, "height": 8}]),
     "images[0] (id 1): declares 1e+12x8 pixels, more than any image"),
    ("data-check-size-wrong", CHECK, _check_set([{"id": 1, "file_name": "a.png", "width": 9, "height": 8}]),
     "image id 1 (a.png) declares 9x8 pixels, the file has 8x8"),
    ("data-check-max-problems-0", [*CHECK, "--max-problems", "0"], _check_set(), "--max-problems: must be at least 1"),
    ("eval-duplicate-ann-id", [*EVAL[:4], "--data", "{tmp}/d", *EVAL[6:]],
     _check_set(annotations=[*_ann(), *_ann(bbox=[2, 2, 3, 3])]), "duplicate annotation id 1"),
    # -- hitdet train: flags, --set keys, config files, data
    ("train-no-arch", ["train", "--data", "{data}", "--out", "{out}"], {}, "ARCH: give an architecture JSON"),
    ("train-no-out", ["train", "hit-detector", "--data", "{data}"], {}, "the following arguments are required: --out"),
    ("train-epochs-0", [*TRAIN, "--epochs", "0"], {}, "epochs: must be a positive integer"),
    ("train-epochs-negative", [*TRAIN, "--epochs", "-3"], {}, "epochs: must be a positive integer"),
    ("train-epochs-float", [*TRAIN, "--epochs", "1.5"], {}, "--epochs: invalid int value"),
    ("train-batch-size-0", [*TRAIN, "--batch-size", "0"], {}, "--batch-size: must be a positive integer"),
    ("train-lr-negative", [*TRAIN, "--lr", "-0.1"], {}, "lr: must be positive"),
    ("train-lr-nan", [*TRAIN, "--lr", "nan"], {}, "lr: must be a finite number"),
    ("train-width-0", [*TRAIN, "--width", "0"], {}, "width: must be positive"),
    ("train-width-inf", [*TRAIN, "--width", "inf"], {}, "width"),
    ("train-devices-0", [*TRAIN, "--devices", "0"], {}, "--devices must be >= 1"),
    ("train-devices-abc", [*TRAIN, "--devices", "abc"], {}, "abc"),
    ("train-num-workers-negative", [*TRAIN, "--num-workers", "-2"], {}, "--num-workers: must be >= 0, got -2"),
    ("train-precision", [*TRAIN, "--precision", "8-true"], {}, "--precision: invalid choice"),
    ("train-set-no-equals", [*TRAIN, "--set", "epochs"], {}, "--set epochs: expected key=value"),
    ("train-set-unknown-key", [*TRAIN, "--set", "epocs=2"], {}, "epocs: unknown key"),
    ("train-set-epochs-string", [*TRAIN, "--set", "epochs=two"], {}, "epochs"),
    ("train-set-momentum-nan", [*TRAIN, "--set", "momentum=.nan"], {}, "momentum: must be a finite number"),
    ("train-set-schedule", [*TRAIN, "--set", "schedule=linear"], {}, "schedule: expected 'step' or 'cosine'"),
    ("train-set-milestones-order", [*TRAIN, "--set", "milestones=[11, 8]"], {}, "milestones: must be increasing"),
    ("train-set-milestones-strings", [*TRAIN, "--set", "milestones=[a, b]"], {}, "milestones"),
    ("train-set-hflip-2", [*TRAIN, "--set", "hflip_prob=2"], {}, "hflip_prob: must be between 0 and 1"),
    ("train-set-backend", [*TRAIN, "--set", "backend=detectron"], {}, "backend: unknown evaluation backend"),
    ("train-set-keep-checkpoints-0", [*TRAIN, "--set", "keep_checkpoints=0"], {}, "keep_checkpoints"),
    ("train-set-steps-0", [*TRAIN, "--set", "steps_per_epoch=0"], {}, "steps_per_epoch"),
    ("train-set-grad-clip-negative", [*TRAIN, "--set", "grad_clip_norm=-1"], {}, "grad_clip_norm: must be >= 0"),
    ("train-set-half-depth-string", [*TRAIN, "--set", "half_depth=maybe"], {}, "half_depth"),
    ("train-set-detector-unknown", [*TRAIN, "--set", "detector.anchor=3"], {}, "detector.anchor: unknown detector"),
    ("train-set-detector-not-mapping", [*TRAIN, "--set", "detector=5"], {}, "detector"),
    ("train-config-list", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--config", "{tmp}/c.yaml"],
     {"c.yaml": "- epochs\n- 3\n"}, "c.yaml: expected a mapping of config keys"),
    ("train-config-not-utf8", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--config",
                               "{tmp}/c.yaml"], {"c.yaml": b"epochs: \xff\xfe\n"}, "c.yaml"),
    ("train-config-nested", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--config",
                             "{tmp}/c.yaml"], {"c.yaml": "epochs: " + "[" * 20_000 + "]" * 20_000 + "\n"}, "c.yaml"),
    ("train-config-missing", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--config",
                              "{tmp}/none.yaml"], {}, "none.yaml: config file not found"),
    ("train-config-recipe-unknown", ["train", "hit-detector", "--data", "{data}", "--out", "{out}", "--config",
                                     "{tmp}/c.yaml"], {"c.yaml": "recipe: fast\n"}, "recipe: unknown recipe 'fast'"),
    ("train-backbone-weights-missing", [*TRAIN, "--backbone-weights", "{tmp}/bb.pt"], {}, "bb.pt"),
    ("train-backbone-weights-garbage", [*TRAIN, "--backbone-weights", "{tmp}/bb.pt"], {"bb.pt": "not torch"},
     "bb.pt: not a torch weights file"),
    ("train-backbone-weights-detector", [*TRAIN, "--backbone-weights", "{model}/w.pt"], {},
     "w.pt: a 'hitdet-weights' file, not backbone weights"),
    ("train-data-no-val", ["train", "hit-detector", "--data", "{tmp}/d", "--out", "{out}", *TINY_TRAIN],
     {"d/annotations/instances_train.json": _coco([{"id": 1, "file_name": "a.png"}]), "d/train/a.png": PNG},
     "instances_val.json"),
    ("train-data-corrupt-image", ["train", "hit-detector", "--data", "{tmp}/d", "--out", "{out}", *TINY_TRAIN],
     _check_set(**{"d/train/a.png": b"GIF89a garbage"}), "a.png: cannot decode image"),
    ("train-data-missing-image", ["train", "hit-detector", "--data", "{tmp}/d", "--out", "{out}", *TINY_TRAIN],
     _check_set([{"id": 1, "file_name": "gone.png"}]), "gone.png: image file not found"),
    ("train-data-no-images", ["train", "hit-detector", "--data", "{tmp}/d", "--out", "{out}", *TINY_TRAIN],
     _check_set([]), "no images"),
    ("train-out-under-file", ["train", "hit-detector", "--data", "{data}", "--out", "{tmp}/afile/run", *TINY_TRAIN],
     {"afile": "x"}, "afile"),
    ("train-out-read-only", ["train", "hit-detector", "--data", "{data}", "--out", "{tmp}/ro/run", *TINY_TRAIN],
     {"ro": READ_ONLY}, "folder is not writable"),
    ("train-resume-out-is-file", ["train", "--out", "{out}", "--resume"], {"out": "x"}, "out"),
    # -- hitdet screen and search
    ("screen-no-out", ["screen", "--data", "{data}"], {}, "the following arguments are required: --out"),
    ("screen-epochs-0", [*SCREEN, "--epochs", "0"], {}, "epochs: must be a positive integer"),
    ("screen-num-ops-0", [*SCREEN, "--num-ops", "0"], {}, "--num-ops: must be an integer >= 1"),
    ("screen-mu-nan", [*SCREEN, "--mu", "nan"], {}, "mu"),
    ("screen-mu-negative", [*SCREEN, "--mu", "-1"], {}, "mu"),
    ("screen-components-unknown", [*SCREEN, "--components", "backbone,tail"], {}, "--components: unknown component"),
    ("screen-devices-0", [*SCREEN, "--devices", "0"], {}, "--devices must be >= 1"),
    ("screen-set-unknown-top", [*SCREEN, "--set", "bogus=1"], {}, "bogus: unknown key"),
    ("screen-set-strategy-unknown", [*SCREEN, "--set", "strategy.bogus=1"], {}, "strategy.bogus: unknown key"),
    ("screen-set-train-scalar", [*SCREEN, "--set", "train=5"], {}, "train"),
    ("screen-set-batch-size-0", [*SCREEN, "--set", "train.batch_size=0"], {}, "batch_size: must be a positive"),
    ("screen-set-arch-start-negative", [*SCREEN, "--set", "strategy.arch_start_epoch=-1"], {}, "arch_start_epoch"),
    ("screen-config-train-list", ["screen", "--data", "{data}", "--out", "{out}", "--config", "{tmp}/c.yaml"],
     {"c.yaml": "train: [1, 2]\n"}, "c.yaml: train: expected a mapping"),
    ("screen-backbone-weights-garbage", [*SCREEN, "--backbone-weights", "{tmp}/bb.pt"], {"bb.pt": b"\x00" * 64},
     "bb.pt"),
    ("screen-data-no-train-folder", ["screen", "--data", "{tmp}/d", "--out", "{out}", *TINY_SEARCH],
     {"d/annotations/instances_train.json": _coco([{"id": 1, "file_name": "a.png"}])}, "images folder not found"),
    ("search-lambda-nan", [*SEARCH, "--lambda", "nan"], {}, "--lambda: must be >= 0, got nan"),
    ("search-lambda-negative", [*SEARCH, "--lambda", "-1"], {}, "--lambda: must be >= 0, got -1.0"),
    ("search-target-macs-text", [*SEARCH, "--target-macs", "fast"], {}, "expected a MACs count"),
    ("search-target-macs-negative", [*SEARCH, "--target-macs=-5G"], {}, "--target-macs: must be a positive MACs count"),
    ("search-target-macs-tiny", [*SEARCH, "--target-macs", "1K"], {}, "is below the reachable floor"),
    ("search-set-detector-type", [*SEARCH, "--set", "detector=yolo"], {}, "expected 'faster_rcnn' or 'retinanet'"),
    ("search-set-input-size", [*SEARCH, "--set", "input_size=[0, 0]"], {}, "input_size"),
    ("search-sub-spaces-missing", [*SEARCH, "--sub-spaces", "{tmp}/nope.json"], {}, "nope.json"),
    ("search-sub-spaces-empty-ops", [*SEARCH, "--sub-spaces", "{tmp}/subs.json"],
     {"subs.json": _subspaces(_set("components.head.ops", []))}, "subs.json"),
    ("search-sub-spaces-ops-string", [*SEARCH, "--sub-spaces", "{tmp}/subs.json"],
     {"subs.json": _subspaces(_set("components.backbone.ops", "skip"))}, "subs.json"),
    ("search-sub-spaces-not-utf8", [*SEARCH, "--sub-spaces", "{tmp}/subs.json"], {"subs.json": b"\xc3\x28"},
     "subs.json"),
    ("search-sub-spaces-format", [*SEARCH, "--sub-spaces", "{tmp}/subs.json"],
     {"subs.json": _subspaces(_set("format", "hitdet-architecture"))}, "subs.json"),
    # -- hitdet pretrain
    ("pretrain-no-target", ["pretrain", "--data", "{tmp}/imgs", "--out", "{out}"], IMAGE_FOLDER,
     "one of the arguments --arch --space is required"),
    ("pretrain-arch-and-space", [*PRETRAIN, "--space", "all"], IMAGE_FOLDER, "not allowed with argument"),
    ("pretrain-width-0", [*PRETRAIN, "--width", "0"], IMAGE_FOLDER, "--width must be positive"),
    ("pretrain-half-depth-with-arch", [*PRETRAIN, "--half-depth"], IMAGE_FOLDER, "--half-depth and --structure go"),
    ("pretrain-space-unknown-op", ["pretrain", "--space", "ir_k3_e3,warp_k9", "--data", "{tmp}/imgs", "--out",
                                   "{out}"], IMAGE_FOLDER, "--space: unknown op 'warp_k9'"),
    ("pretrain-space-duplicate-op", ["pretrain", "--space", "skip,skip", "--data", "{tmp}/imgs", "--out", "{out}"],
     IMAGE_FOLDER, "--space: duplicate op(s) ['skip']"),
    ("pretrain-space-file-missing", ["pretrain", "--space", "{tmp}/subs.json", "--data", "{tmp}/imgs", "--out",
                                     "{out}"], IMAGE_FOLDER, "subs.json"),
    ("pretrain-space-no-backbone", ["pretrain", "--space", "{tmp}/subs.json", "--data", "{tmp}/imgs", "--out",
                                    "{out}"],
     {**IMAGE_FOLDER, "subs.json": _subspaces(_drop("components.backbone"))}, "has no backbone component"),
    ("pretrain-epochs-0", [*PRETRAIN, "--epochs", "0"], IMAGE_FOLDER, "epochs: must be a positive integer"),
    ("pretrain-batch-size-0", [*PRETRAIN, "--batch-size", "0"], IMAGE_FOLDER, "--batch-size: must be a positive"),
    ("pretrain-lr-negative", [*PRETRAIN, "--lr", "-1"], IMAGE_FOLDER, "lr: must be positive"),
    ("pretrain-image-size-0", [*PRETRAIN, "--image-size", "0"], IMAGE_FOLDER, "--image-size: must be a positive"),
    ("pretrain-set-smoothing-1", [*PRETRAIN, "--set", "label_smoothing=1"], IMAGE_FOLDER, "label_smoothing"),
    ("pretrain-set-unknown", [*PRETRAIN, "--set", "mixup=0.2"], IMAGE_FOLDER, "mixup"),
    ("pretrain-set-lr-nan", [*PRETRAIN, "--set", "lr=.nan"], IMAGE_FOLDER, "lr"),
    ("pretrain-set-warmup-too-long", [*PRETRAIN, "--set", "warmup_epochs=5"], IMAGE_FOLDER,
     "must be less than epochs (1)"),
    ("pretrain-devices-0", [*PRETRAIN, "--devices", "0"], IMAGE_FOLDER, "--devices must be >= 1"),
    ("pretrain-data-missing", [*PRETRAIN, "--data", "{tmp}/nowhere"], {}, "nowhere: no such data folder"),
    ("pretrain-data-one-class", PRETRAIN, {"imgs/train/a/x.png": PNG, "imgs/val/a/x.png": PNG},
     "needs at least 2 class folders"),
    ("pretrain-data-classes-differ", PRETRAIN,
     {**IMAGE_FOLDER, "imgs/val/c/x.png": PNG}, "train/ and val/ have different classes"),
    ("pretrain-data-no-images", PRETRAIN, {"imgs/train/a/x.txt": "", "imgs/train/b/x.txt": "",
                                           "imgs/val/a/x.txt": "", "imgs/val/b/x.txt": ""}, "imgs"),
    ("pretrain-init-weights-missing", [*PRETRAIN, "--init-weights", "{tmp}/bb.pt"], IMAGE_FOLDER, "bb.pt"),
    ("pretrain-init-weights-detector", [*PRETRAIN, "--init-weights", "{model}/w.pt"], IMAGE_FOLDER,
     "not backbone weights"),
    ("pretrain-config-unknown-key", [*PRETRAIN[:-5], "--config", "{tmp}/c.yaml"],
     {**IMAGE_FOLDER, "c.yaml": "epoch: 1\n"}, "epoch"),
    # -- hitdet eval
    ("eval-no-weights", ["eval", "{model}/arch.json", "--data", "{data}", "--out", "{out}"], {}, "--weights: required"),
    ("eval-batch-size-0", [*EVAL, "--batch-size", "0"], {}, "--batch-size: must be positive"),
    ("eval-backend", [*EVAL, "--backend", "detectron"], {}, "--backend: invalid choice"),
    ("eval-weights-missing", ["eval", "{model}/arch.json", "--weights", "{tmp}/w.pt", "--data", "{data}", "--out",
                              "{out}"], {}, "w.pt: weights file not found"),
    ("eval-weights-empty", ["eval", "{model}/arch.json", "--weights", "{tmp}/w.pt", "--data", "{data}", "--out",
                            "{out}"], {"w.pt": b""}, "w.pt: cannot read weights"),
    ("eval-weights-json", ["eval", "{model}/arch.json", "--weights", "{tmp}/w.pt", "--data", "{data}", "--out",
                           "{out}"], {"w.pt": "{}"}, "w.pt: cannot read weights"),
    ("eval-weights-list", ["eval", "{model}/arch.json", "--weights", "{tmp}/w.pt", "--data", "{data}", "--out",
                           "{out}"], {"w.pt": _torch_bytes([1, 2, 3])}, "w.pt: not a detector state dict"),
    ("eval-weights-other-arch", ["eval", "{tmp}/arch.json", "--weights", "{model}/w.pt", "--data", "{data}",
                                 "--out", "{out}"], {"arch.json": ARCH_OTHER}, "weights do not fit this architecture"),
    ("eval-arch-classes-mismatch", ["eval", "hit-detector", "--weights", "{model}/w.pt", "--data", "{data}",
                                    "--out", "{out}"], {}, "detector.num_classes is 81"),
    ("eval-split-missing", [*EVAL, "--split", "test"], {}, "instances_test.json"),
    ("eval-data-missing", ["eval", "{model}/arch.json", "--weights", "{model}/w.pt", "--data", "{tmp}/nowhere",
                           "--out", "{out}"], {}, "nowhere"),
    ("eval-out-is-file", EVAL, {"out": "x"}, "exists and is not a folder"),
    ("eval-detections-missing", ["eval", "{model}/arch.json", "--data", "{data}", "--detections", "{tmp}/dets.json",
                                 "--out", "{out}"], {}, "dets.json: detections file not found"),
    ("eval-detections-object", ["eval", "{model}/arch.json", "--data", "{data}", "--detections", "{tmp}/dets.json",
                                "--out", "{out}"], {"dets.json": "{}"}, "dets.json: expected a JSON list"),
    ("eval-detections-no-score", ["eval", "{model}/arch.json", "--data", "{data}", "--detections",
                                  "{tmp}/dets.json", "--out", "{out}"],
     {"dets.json": json.dumps([{k: v for k, v in DET[0].items() if k != "score"}])}, "dets.json[0]: no 'score'"),
    ("eval-detections-score-nan", ["eval", "{model}/arch.json", "--data", "{data}", "--detections",
                                   "{tmp}/dets.json", "--out", "{out}"],
     {"dets.json": _dets(score=float("nan"))}, "'score' must be a finite number"),
    ("eval-detections-unknown-category", ["eval", "{model}/arch.json", "--data", "{data}", "--detections",
                                          "{tmp}/dets.json", "--out", "{out}"],
     {"dets.json": _dets(category_id=999)}, "category_id 999 is not in the ground truth"),
    ("eval-detections-unknown-image", ["eval", "{model}/arch.json", "--data", "{data}", "--detections",
                                       "{tmp}/dets.json", "--out", "{out}"],
     {"dets.json": _dets(image_id=12345)}, "image_id 12345 is not in the ground truth"),
    ("eval-detections-bbox-3", ["eval", "{model}/arch.json", "--data", "{data}", "--detections", "{tmp}/dets.json",
                                "--out", "{out}"], {"dets.json": _dets(bbox=[1, 2, 3])}, "'bbox' must be"),
    ("eval-detections-not-object", ["eval", "{model}/arch.json", "--data", "{data}", "--detections",
                                    "{tmp}/dets.json", "--out", "{out}"], {"dets.json": "[1]"},
     "dets.json[0]: expected an object"),
    # -- hitdet predict
    ("predict-no-weights", ["predict", "{model}/arch.json", "{tmp}/img.png", "--out", "{out}"], {"img.png": PNG},
     "--weights: required"),
    ("predict-no-out", ["predict", "{model}/arch.json", "{tmp}/img.png", "--weights", "{model}/w.pt"],
     {"img.png": PNG}, "--out: required"),
    ("predict-no-inputs", ["predict", "{model}/arch.json", "--weights", "{model}/w.pt", "--out", "{out}"], {},
     "the following arguments are required: IMAGE|FOLDER"),
    ("predict-batch-size-0", [*PREDICT, "--batch-size", "0"], {"img.png": PNG}, "--batch-size: must be positive"),
    ("predict-score-thresh-2", [*PREDICT, "--score-thresh", "2"], {"img.png": PNG}, "--score-thresh: must be in"),
    ("predict-score-thresh-nan", [*PREDICT, "--score-thresh", "nan"], {"img.png": PNG}, "--score-thresh: must be in"),
    ("predict-accelerator", [*PREDICT, "--accelerator", "tpu"], {"img.png": PNG}, "--accelerator: expected one of"),
    ("predict-image-missing", PREDICT, {}, "img.png: no such image file or folder"),
    ("predict-image-corrupt", PREDICT, {"img.png": b"\x89PNG\r\n\x1a\n\x00\x00"}, "img.png: cannot decode image"),
    ("predict-image-bomb", PREDICT, {"img.png": _png_header(100_000, 100_000)}, "img.png: image too large"),
    ("predict-folder-no-images", ["predict", "{model}/arch.json", "{tmp}/imgs", "--weights", "{model}/w.pt",
                                  "--out", "{out}"], {"imgs/notes.txt": "hi"}, "imgs: no images in folder"),
    ("predict-weights-garbage", ["predict", "{model}/arch.json", "{tmp}/img.png", "--weights", "{tmp}/w.pt",
                                 "--out", "{out}"], {"img.png": PNG, "w.pt": b"PK\x03\x04broken zip"},
     "w.pt: cannot read weights"),
    ("predict-weights-other-arch", ["predict", "{tmp}/arch.json", "{tmp}/img.png", "--weights", "{model}/w.pt",
                                    "--out", "{out}"], {"img.png": PNG, "arch.json": ARCH_OTHER},
     "weights do not fit this architecture"),
    ("predict-weights-one-tensor", ["predict", "{model}/arch.json", "{tmp}/img.png", "--weights", "{tmp}/w.pt",
                                    "--out", "{out}"], {"img.png": PNG, "w.pt": _torch_bytes({"x": torch.zeros(1)})},
     "weights do not fit this architecture"),
    ("predict-categories-count", ["predict", "{tmp}/arch.json", "{tmp}/img.png", "--weights", "{model}/w.pt",
                                  "--out", "{out}"],
     {"img.png": PNG, "arch.json": ARCH_OTHER.replace('"categories": [', '"categories": [{"id": 77}, ', 1)},
     "metadata.categories has"),
    ("predict-out-is-file", PREDICT, {"img.png": PNG, "out": "x"}, "exists and is not a folder"),
    # -- hitdet export
    ("export-format", [*EXPORT, "--format", "tflite"], {}, "--format: invalid choice: 'tflite'"),
    ("export-no-weights", ["export", "{model}/arch.json", "--out", "{out}"], {}, "--weights: required"),
    ("export-no-out", ["export", "{model}/arch.json", "--weights", "{model}/w.pt"], {}, "--out: required"),
    ("export-out-is-folder", EXPORT, {"out/.keep": ""}, "is a folder"),
    ("export-out-exists", EXPORT, {"out": "old export"}, "file exists (use --force"),
    ("export-opset-7", [*EXPORT, "--format", "onnx", "--opset", "7"], {}, "--opset: torchvision detectors need"),
    ("export-input-size", [*EXPORT, "--format", "onnx", "--input-size", "0x0"], {}, "sizes must be positive"),
    ("export-weights-garbage", ["export", "{model}/arch.json", "--weights", "{tmp}/w.pt", "--out", "{out}"],
     {"w.pt": os.urandom(256)}, "w.pt: cannot read weights"),
    ("export-weights-other-arch", ["export", "{tmp}/arch.json", "--weights", "{model}/w.pt", "--out", "{out}"],
     {"arch.json": ARCH_OTHER}, "weights do not fit this architecture"),
    ("export-arch-truncated", ["export", "{tmp}/arch.json", "--weights", "{model}/w.pt", "--out", "{out}"],
     {"arch.json": ARCH_OTHER[:100]}, "arch.json: invalid JSON"),
    ("export-out-under-file", ["export", "{model}/arch.json", "--weights", "{model}/w.pt", "--out",
                               "{tmp}/afile/d.pt"], {"afile": "x"}, "afile"),
    ("export-out-read-only", ["export", "{model}/arch.json", "--weights", "{model}/w.pt", "--out", "{tmp}/ro/d.pt"],
     {"ro": READ_ONLY}, "ro"),
    ("export-program-input-size", [*EXPORT, "--format", "exported-program", "--input-size", "0x5"], {},
     "sizes must be positive"),
    # -- hitdet bench
    ("bench-batch-0", [*BENCH, "--batch", "0"], {}, "--batch: must be >= 1, got 0"),
    ("bench-runs-0", [*BENCH, "--runs", "0"], {}, "--runs: must be >= 1, got 0"),
    ("bench-warmup-negative", [*BENCH, "--warmup", "-1"], {}, "--warmup: must be >= 0, got -1"),
    ("bench-precision", [*BENCH, "--precision", "8-true"], {}, "--precision: invalid choice: '8-true'"),
    ("bench-arch-missing", ["bench", "{tmp}/nope.json", "--out", "{out}"], {}, "nope.json: no such file"),
    ("bench-weights-garbage", [*BENCH, "--weights", "{tmp}/w.pt"], {"w.pt": os.urandom(256)},
     "w.pt: cannot read weights"),
    ("bench-weights-other-arch", ["bench", "{tmp}/arch.json", "--weights", "{model}/w.pt", "--out", "{out}"],
     {"arch.json": ARCH_OTHER}, "weights do not fit this architecture"),
    ("bench-out-not-bench", BENCH, {"out": '{"mine": 1}'}, "not a bench result (use --force"),
    ("bench-out-is-folder", BENCH, {"out/.keep": ""}, "is a folder"),
    # -- hitdet convert-weights
    ("convert-weights-no-out", ["convert-weights", "{tmp}/w.pth"], {"w.pth": _torch_bytes({})}, "--out: required"),
    ("convert-weights-missing", CONVERT, {}, "w.pth: no such file"),
    ("convert-weights-garbage", CONVERT, {"w.pth": b"not a checkpoint " * 16}, "w.pth: not a torch checkpoint"),
    ("convert-weights-other-layout", CONVERT, {"w.pth": _torch_bytes({"features.0.weight": torch.zeros(3)})},
     "not the authors' FBNet backbone layout"),
    ("convert-weights-too-few-layers", CONVERT,
     {"w.pth": _torch_bytes({"module.layers.0.conv.weight": torch.zeros(16, 3, 3, 3)})},
     "the architecture's backbone has 23 blocks (layers.0-22), but layers.1 is missing"),
    ("convert-weights-out-exists", CONVERT, {"w.pth": _torch_bytes({}), "out": "old"}, "file exists (use --force"),
    # -- --num-nodes
    ("train-num-nodes-0", [*TRAIN, "--num-nodes", "0"], {}, "--num-nodes: must be >= 1, got 0"),
    ("screen-num-nodes-one-node-strategy", [*SCREEN, "--accelerator", "cpu", "--num-nodes", "2", "--strategy",
                                            "single_device"], {}, "strategy 'single_device' runs on one node"),
    # -- hitdet plot
    ("plot-dpi-low", ["plot", "hit-detector", "--out", "{tmp}/a.png", "--dpi", "10"], {}, "--dpi must be between"),
    ("plot-dpi-huge", ["plot", "hit-detector", "--out", "{tmp}/a.png", "--dpi", "100000"], {}, "--dpi must be"),
    ("plot-two-targets", ["plot", "hit-detector", "hit-detector"], {}, "expected one architecture or run folder"),
    ("plot-compare-no-out", ["plot", "--compare", "{tmp}/a", "{tmp}/b"], {"a/.keep": "", "b/.keep": ""},
     "--compare needs --out"),
    ("plot-compare-jpg", ["plot", "--compare", "{tmp}/a", "--out", "{tmp}/c.jpg"], {"a/.keep": ""},
     "expected a .png file"),
    ("plot-compare-not-run", ["plot", "--compare", "{tmp}/a", "--out", "{tmp}/c.png"], {"a/.keep": ""},
     "not a train run folder"),
    ("plot-arch-jpg", ["plot", "hit-detector", "--out", "{tmp}/a.jpg"], {}, "expected a .png file"),
    ("plot-arch-exists", ["plot", "hit-detector", "--out", "{tmp}/a.png"], {"a.png": "old"}, "exists (use --force"),
    ("plot-arch-missing", ["plot", "{tmp}/nope.json"], {}, "nope.json: no such file"),
    ("plot-arch-out-under-file", ["plot", "hit-detector", "--out", "{tmp}/afile/a.png"], {"afile": "x"}, "afile"),
    ("plot-arch-out-read-only", ["plot", "hit-detector", "--out", "{tmp}/ro/a.png"], {"ro": READ_ONLY}, "ro"),
    ("plot-folder-not-run", ["plot", "{tmp}/run"], {"run/notes.txt": "hi"}, "not a screen/search run"),
    ("plot-metrics-truncated", ["plot", "{tmp}/run"], {"run/metrics.json": '{"history": [{"ep'},
     "metrics.json: invalid JSON"),
    ("plot-metrics-history-object", ["plot", "{tmp}/run"], {"run/metrics.json": '{"history": {}}'},
     "metrics.json: history: expected a list"),
    ("plot-metrics-history-strings", ["plot", "{tmp}/run"],
     {"run/metrics.json": json.dumps({"history": [{"epoch": 1, "AP": "high"}]})}, "history[0].AP: expected a number"),
    ("plot-metrics-best-no-epoch", ["plot", "{tmp}/run"],
     {"run/metrics.json": json.dumps({"history": [{"epoch": 1, "AP": 0.5}], "best": {"AP": 0.5}})},
     "metrics.json: best.epoch: expected an integer"),
    ("plot-metadata-no-alpha", ["plot", "{tmp}/run"], {"run/metadata.json": "{}"},
     "alpha_probabilities: missing or empty"),
    ("plot-metadata-alpha-strings", ["plot", "{tmp}/run"],
     {"run/metadata.json": json.dumps({"alpha_probabilities": {"backbone/s1_b0": {"skip": "0.5"}}})},
     "alpha_probabilities.backbone/s1_b0"),
    ("plot-metadata-events", ["plot", "{tmp}/run"], {"run/metadata.json": json.dumps(
        {"alpha_probabilities": {"backbone/s1_b0": {"skip": 1.0}}, "screening_events": [{"op": "skip"}]})},
     "screening_events[0]"),
    ("plot-run-out-is-file", ["plot", "{tmp}/run", "--out", "{tmp}/afile"], {"afile": "x", "run/metadata.json":
     json.dumps({"alpha_probabilities": {"backbone/s1_b0": {"skip": 1.0}}})}, "afile"),
    # -- hitdet compare
    ("compare-no-runs", ["compare"], {}, "the following arguments are required: runs"),
    ("compare-missing", ["compare", "{tmp}/nope"], {}, "nope: no such run folder"),
    ("compare-not-run", ["compare", "{tmp}/run"], {"run/notes.txt": ""}, "architecture.json: no such file"),
    ("compare-arch-damaged", ["compare", "{tmp}/run"], {"run/architecture.json": "{", "run/metrics.json": "{}"},
     "architecture.json: invalid JSON"),
    ("compare-no-metrics", ["compare", "{tmp}/run"], {"run/architecture.json": ARCH_SYNTH}, "metrics.json"),
    ("compare-metrics-best-no-ap", ["compare", "{tmp}/run"], {"run/architecture.json": ARCH_SYNTH,
                                                              "run/metrics.json": '{"history": [], "best": {}}'},
     "best: expected the best epoch's metrics with AP"),
    ("compare-metrics-list", ["compare", "{tmp}/run"], {"run/architecture.json": ARCH_SYNTH,
                                                        "run/metrics.json": "[]"}, "metrics.json: expected a JSON"),
    ("compare-history-mixed-types", ["compare", "{tmp}/run"], {"run/architecture.json": ARCH_SYNTH,
     "run/metrics.json": json.dumps({"history": [{"epoch": 1, "AP": 0.2}, {"epoch": 2, "AP": "0.3"}]})},
     "history[1].AP: expected a number"),
    ("compare-file-not-folder", ["compare", "{tmp}/run"], {"run": "x"}, "no such run folder"),
    # -- hitdet demo
    ("demo-out-is-file", ["demo", "--out", "{out}", "--no-progress"], {"out": "x"}, "exists and is not a folder"),
    ("demo-out-not-empty", ["demo", "--out", "{out}", "--no-progress"], {"out/keep.txt": "x"},
     "folder exists and is not empty"),
    ("demo-out-symlink-force", ["demo", "--out", "{out}", "--force", "--no-progress"],
     {"real/keep.txt": "x", "out": "->real"}, "is a symbolic link"),
    ("demo-out-under-file", ["demo", "--out", "{tmp}/afile/demo", "--no-progress"], {"afile": "x"}, "afile"),
    ("demo-unknown-flag", ["demo", "--out", "{out}", "--epochs", "3"], {}, "unrecognized arguments: --epochs 3"),
]
CASES += NEW_CASES

if not torch.cuda.is_available():  # where there is a GPU, --accelerator gpu is valid input
    CASES += [(f"{cmd}-accelerator-gpu-without-gpu", [cmd, *pre, "--data", "{data}", "--out", "{out}", *tiny,
                                                      "--accelerator", "gpu"], {}, "--accelerator gpu")
              for cmd, pre, tiny in [("train", ["hit-detector"], TINY_TRAIN), ("search", [], TINY_SEARCH)]]

# Rows that also run as a subprocess, to prove the terminal sees one line and no traceback.
SUBPROCESS = {"info-arch-truncated", "subspaces-unknown-op", "train-data-malformed"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("bad") / "data", SynthSpec(num_train=2, num_val=2, seed=1))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny trained-looking detector for the synthetic set: arch.json and w.pt."""
    from hitdet.builder import build_detector
    from hitdet.weights.detector import save_weights

    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    arch = dataclasses.replace(tiny_arch(width=0.0625, num_classes=SYNTH_CLASSES), metadata={"categories": CATEGORIES})
    arch.save(root / "arch.json")
    save_weights(root / "w.pt", build_detector(arch).state_dict())
    return root


def _prepare(tmp_path: Path, data: Path, args: list[str], files: dict[str, Any],
             model: Path | None = None) -> tuple[list[str], Path]:
    """Write ``files`` (text, bytes, "->TARGET" for a symbolic link, READ_ONLY for a folder the test makes
    read-only) under ``tmp_path``."""
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content == READ_ONLY:
            path.mkdir(exist_ok=True)  # made read-only by the test (tests.helpers.read_only)
        elif content.startswith("->"):
            path.symlink_to(tmp_path / content[2:])
        else:
            path.write_text(content)
    out = tmp_path / "out"
    fill = {"tmp": str(tmp_path), "data": str(data), "out": str(out), "model": str(model)}
    return [a.format(**fill) for a in args], out


def _command(argv: list[str]) -> str:
    """The command an error line names: ``train``, or ``data synth`` for the data actions."""
    return " ".join(argv[:2]) if argv[0] == "data" and len(argv) > 1 and not argv[1].startswith("-") else argv[0]


PARAMS = [pytest.param(*case, id=case[0]) for case in CASES]


@pytest.mark.parametrize("name,args,files,message", PARAMS)
def test_bad_input(name: str, args: list[str], files: dict[str, Any], message: str, data: Path, model: Path,
                   tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv, out = _prepare(tmp_path, data, args, files, model)
    with read_only(*[tmp_path / rel for rel, content in files.items() if content == READ_ONLY]) as ok:
        if not ok and READ_ONLY in files.values():
            pytest.skip("no way to make a read-only folder here (root, and mounts not allowed)")
        before = tree(tmp_path), tree(data), tree(model)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own usage errors (hitdet.cli._Parser: one line, exit 2)
            code = exc.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, err
        assert len(lines) == 1 and "Traceback" not in err, err
        assert message in lines[0], lines[0]
        assert lines[0].startswith(f"hitdet {_command(argv)}: error: "), lines[0]
        assert (tree(tmp_path), tree(data), tree(model)) == before
        assert any(f == "out" or f.startswith("out/") for f in files) or not out.exists()


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
