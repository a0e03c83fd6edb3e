"""``--force`` never destroys the command's own inputs (issue 23), for every command that writes.

Each case gives ``--out`` equal to, a parent of, or inside one input (the dataset, the architecture file, the
weights, the config, the images, the current directory) together with ``--force``, after marking that folder as
a run of the very same command (its run.json names it), the worst case: ``--force`` would replace such a folder.
Every case exits 2 with one stderr line naming the input, and the whole tree is byte for byte as it was.
Then the friendly side: eval and predict given a train run as ``--out`` write into their own sub-folder of it,
and a second eval replaces its own results without ``--force``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from hitdet.cli import main
from hitdet.data import SynthSpec, write_synthetic
from hitdet.data.synth import CATEGORIES
from hitdet.runs import RUN_FILE
from tests.helpers import tiny_arch, tree

SYNTH_CLASSES = len(CATEGORIES) + 1
TINY_TRAIN = ["--config", "synth-cpu", "--set", "width=0.0625", "--epochs", "1", "--no-progress"]
TINY_SEARCH = ["--config", "synth-cpu", "--set", "train.width=0.0625", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset, a tiny detector (arch.json, w.pt), an image folder, a classification folder and a config."""
    from PIL import Image

    from hitdet.builder import build_detector
    from hitdet.weights.detector import save_weights

    root = tmp_path_factory.mktemp("src")
    write_synthetic(root / "D", SynthSpec(num_train=2, num_val=2, seed=1))
    torch.manual_seed(0)
    arch = dataclasses.replace(tiny_arch(width=0.0625, num_classes=SYNTH_CLASSES), metadata={"categories": CATEGORIES})
    (root / "M").mkdir()
    arch.save(root / "M" / "arch.json")
    save_weights(root / "M" / "w.pt", build_detector(arch).state_dict())
    (root / "I").mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(root / "I" / "a.png")
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / "C" / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(root / "C" / split / cls / "x.png")
    (root / "K").mkdir()
    (root / "K" / "c.yaml").write_text("epochs: 1\n")
    (root / "K" / "subs.json").write_text(json.dumps({"format": "hitdet-subspaces", "version": 1, "components": {
        "backbone": {"ops": ["ir_k3_e3", "skip"]}, "neck": {"ops": ["sep_k3"]}, "head": {"ops": ["ir_k3_e3"]}}}))
    return root


# command name (as run.json records it), argv with {root} for the copied sources, the inputs to aim --out at
COMMANDS: dict[str, tuple[str, list[str], list[str]]] = {
    "train": ("train", ["train", "{root}/M/arch.json", "--data", "{root}/D", *TINY_TRAIN,
                        "--config", "{root}/K/c.yaml"], ["D", "M/arch.json", "K/c.yaml"]),
    "screen": ("screen", ["screen", "--data", "{root}/D", *TINY_SEARCH], ["D"]),
    "search": ("search", ["search", "--data", "{root}/D", *TINY_SEARCH, "--backbone-weights", "{root}/M/w.pt"],
               ["D", "M/w.pt"]),
    "pretrain": ("pretrain", ["pretrain", "--arch", "{root}/M/arch.json", "--width", "0.0625", "--data", "{root}/C",
                              "--config", "synth-cpu", "--epochs", "1", "--no-progress"], ["C", "M/arch.json"]),
    "eval": ("eval", ["eval", "{root}/M/arch.json", "--weights", "{root}/M/w.pt", "--data", "{root}/D",
                      "--no-progress"], ["D", "M/arch.json", "M/w.pt"]),
    "predict": ("predict", ["predict", "{root}/M/arch.json", "{root}/I", "--weights", "{root}/M/w.pt"],
                ["I", "M/arch.json", "M/w.pt"]),
    "pipeline": ("pipeline", ["pipeline", "--data", "{root}/D", "--no-progress"], ["D"]),
    "search-files": ("search", ["search", "--data", "{root}/D", *TINY_SEARCH, "--sub-spaces", "{root}/K/subs.json"],
                     ["K/subs.json"]),
    "pretrain-init": ("pretrain", ["pretrain", "--arch", "hit-detector", "--width", "0.0625", "--data", "{root}/C",
                                   "--config", "synth-cpu", "--epochs", "1", "--no-progress", "--init-weights",
                                   "{root}/M/w.pt"], ["M/w.pt"]),
}


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for name, (_, _, inputs) in COMMANDS.items():
        for rel in inputs:
            cases.append((name, rel, "equal"))
            cases.append((name, rel, "parent"))
            if "." not in Path(rel).name:  # a folder: --out inside it too
                cases.append((name, rel, "inside"))
    return cases


def _copy(source: Path, root: Path) -> None:
    for child in source.iterdir():
        (shutil.copytree if child.is_dir() else shutil.copy2)(child, root / child.name)


def _mark(folder: Path, command: str) -> None:
    """Make ``folder`` look like a run of ``command`` (the case --force would replace)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(json.dumps({"command": command}))
    (folder / "config.yaml").write_text("epochs: 1\n")


def _refused(argv: list[str], root: Path, capsys: pytest.CaptureFixture, expect: str) -> None:
    before = tree(root)
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expect in lines[0], lines[0]
    assert tree(root) == before


@pytest.mark.parametrize("name,rel,where", _cases(), ids=["-".join(c) for c in _cases()])
def test_force_never_replaces_an_input(name: str, rel: str, where: str, source: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    command, args, _ = COMMANDS[name]
    root = tmp_path / "root"
    root.mkdir()
    _copy(source, root)
    target = root / rel
    out = {"equal": target, "parent": target.parent, "inside": target / "run"}[where]
    if out.is_dir() or not out.exists():
        _mark(out, command)  # a run of this command, as far as run.json goes: only the input check stands
    argv = [a.format(root=root) for a in args] + ["--out", str(out), "--force"]
    expect = "is not a folder" if out.is_file() else "the command's input"
    _refused(argv, root, capsys, expect)
    assert out.is_file() or (out / RUN_FILE).is_file()


CWD_COMMANDS = {
    "data synth": ["data", "synth", "--train", "1", "--val", "1"],
    "data synth-cls": ["data", "synth-cls", "--train-per-class", "1", "--val-per-class", "0"],
    "demo": ["demo", "--no-progress"],
    "train": ["train", "hit-detector", "--data", "{root}/D", *TINY_TRAIN],
}


@pytest.mark.parametrize("where", [".", ".."])
@pytest.mark.parametrize("name", list(CWD_COMMANDS))
def test_force_never_replaces_the_current_directory(name: str, where: str, source: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    (root / "here").mkdir(parents=True)
    _copy(source, root)
    (root / "here" / "notes.txt").write_text("mine")
    _mark(root / "here" if where == "." else root, name)
    monkeypatch.chdir(root / "here")
    argv = [a.format(root=root) for a in CWD_COMMANDS[name]] + ["--out", where, "--force"]
    _refused(argv, root, capsys, "the current directory")


@pytest.mark.parametrize("name", ["train", "data synth", "eval"])
def test_force_replaces_only_a_run_of_the_same_command(name: str, source: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """A folder of someone else's files, or another command's run, is not replaced by --force."""
    args = {"train": ["train", "hit-detector", "--data", str(source / "D"), *TINY_TRAIN],
            "data synth": ["data", "synth", "--train", "1", "--val", "1"],
            "eval": [*(a.format(root=source) for a in COMMANDS["eval"][1])]}[name]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "thesis.tex").write_text("years of work")
    _refused([*args, "--out", str(plain), "--force"], tmp_path, capsys, "not a hitdet run")
    other = tmp_path / "other"
    _mark(other, "pretrain")
    if name != "eval":  # eval writes into a sub-folder of another command's run instead (below)
        _refused([*args, "--out", str(other), "--force"], tmp_path, capsys, "written by hitdet pretrain")


FILE_COMMANDS = {  # commands writing one file: --out may not be one of their inputs, even with --force
    "export": (["export", "{root}/M/arch.json", "--weights", "{root}/M/w.pt"], {"M/w.pt": "--weights",
                                                                              "M/arch.json": "ARCH"}),
    "bench": (["bench", "{root}/M/arch.json", "--weights", "{root}/M/w.pt"], {"M/w.pt": "--weights",
                                                                            "M/arch.json": "ARCH"}),
    "convert-weights": (["convert-weights", "{root}/M/w.pt", "--arch", "{root}/M/arch.json"],
                        {"M/w.pt": "CHECKPOINT", "M/arch.json": "--arch"}),
}


@pytest.mark.parametrize("name", list(FILE_COMMANDS))
def test_file_writers_refuse_to_overwrite_an_input(name: str, source: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _copy(source, root)
    args, inputs = FILE_COMMANDS[name]
    for rel, flag in inputs.items():
        argv = [a.format(root=root) for a in args] + ["--out", str(root / rel), "--force"]
        _refused(argv, root, capsys, f"the command's input {flag}")


def _train_run(source: Path, run: Path) -> None:
    """A train run as far as eval and predict care: run.json, architecture.json and best.pt."""
    run.mkdir()
    shutil.copy2(source / "M" / "arch.json", run / "architecture.json")
    shutil.copy2(source / "M" / "w.pt", run / "best.pt")
    (run / RUN_FILE).write_text(json.dumps({"command": "train", "data": str(source / "D")}))
    (run / "config.yaml").write_text("epochs: 1\n")


def test_eval_and_predict_write_into_their_sub_folder_of_a_run(source: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "R"
    _train_run(source, run)
    kept = tree(run)
    assert main(["eval", str(run / "architecture.json"), "--weights", str(run / "best.pt"), "--out", str(run),
                 "--force", "--no-progress"]) == 0
    assert main(["predict", str(run / "architecture.json"), str(source / "I"), "--weights", str(run / "best.pt"),
                 "--out", str(run), "--force", "--no-progress"]) == 0
    now = tree(run)
    assert {k: v for k, v in now.items() if k in kept} == kept  # the trained run is whole
    assert {"eval-best/metrics.json", "eval-best/detections.json", "predict/detections.json"} <= set(now)
    assert json.loads((run / "eval-best" / RUN_FILE).read_text())["command"] == "eval"
    assert json.loads((run / "predict" / RUN_FILE).read_text())["command"] == "predict"
    # a re-run of eval on the same run (its default --out, RUN/eval-best) replaces its own results, no --force
    capsys.readouterr()
    assert main(["eval", str(run / "architecture.json"), "--weights", str(run / "best.pt"), "--no-progress"]) == 0
    assert sorted(p.name for p in (run / "eval-best").iterdir()) == ["detections.json", "metrics.json", RUN_FILE]
    # but an eval folder holding something else is not replaced
    (run / "eval-best" / "notes.txt").write_text("mine")
    (run / "eval-best" / RUN_FILE).unlink()
    _refused(["eval", str(run / "architecture.json"), "--weights", str(run / "best.pt"), "--no-progress"],
             tmp_path, capsys, "not empty")


def test_plot_redraws_a_runs_own_plots_without_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.test_plot import write_train_run

    run = write_train_run(tmp_path / "train", 64, 128, 20, 0.3)
    assert main(["plot", str(run), "--dpi", "60"]) == 0
    first = (run / "plots" / "training.png").read_bytes()
    assert main(["plot", str(run), "--dpi", "70"]) == 0
    assert (run / "plots" / "training.png").read_bytes() != first


def test_eval_replaces_results_written_before_run_json_named_it(source: Path, tmp_path: Path) -> None:
    """An eval folder from before run.json recorded the command (metrics.json and detections.json only)."""
    out = tmp_path / "ev"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / "detections.json").write_text("[]")
    args = [a.format(root=source) for a in COMMANDS["eval"][1]]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["metrics"]
    assert json.loads((out / RUN_FILE).read_text())["command"] == "eval"


def test_a_lone_detections_file_is_not_taken_for_old_results(source: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "detections.json").write_text("[]")  # the user's own results file, not an eval's
    args = [a.format(root=source) for a in COMMANDS["eval"][1]]
    _refused([*args, "--out", str(out), "--force"], tmp_path, capsys, "is not a hitdet run")
