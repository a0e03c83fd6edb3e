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

from hitdet.cli import main
from hitdet.data import SynthSpec, write_synthetic

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
}

SUBSPACES_OK = {"format": "hitdet-subspaces", "version": 1,
                "components": {"backbone": {"ops": ["ir_k3_e3", "skip"]}, "neck": {"ops": ["sep_k3"]},
                               "head": {"ops": ["ir_k3_e3"]}}}


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
    ("screen-resume-nothing", ["screen", "--out", "{out}", "--resume"], {}, "no checkpoint to resume from"),
]

# Rows that also run as a subprocess, to prove the terminal sees one line and no traceback.
SUBPROCESS = {"info-arch-truncated", "subspaces-unknown-op", "train-data-malformed"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("bad") / "data", SynthSpec(num_train=2, num_val=2, seed=1))


def _prepare(tmp_path: Path, data: Path, args: list[str], files: dict[str, str]) -> tuple[list[str], Path]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    out = tmp_path / "out"
    fill = {"tmp": str(tmp_path), "data": str(data), "out": str(out)}
    return [a.format(**fill) for a in args], out


@pytest.mark.parametrize("name,args,files,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name: str, args: list[str], files: dict[str, str], message: str, data: Path, tmp_path: Path,
                   capsys: pytest.CaptureFixture) -> None:
    argv, out = _prepare(tmp_path, data, args, files)
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert lines[0].startswith(f"hitdet {argv[0]}: error: "), lines[0]
    assert not out.exists()


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
