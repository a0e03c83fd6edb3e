"""``--resume`` checks its checkpoint before writing anything (issue 23): a damaged ``last.ckpt``, one whose
pickle asks for more than weights, and one that no longer fits the run's ``architecture.json`` each exit 2 with
one line naming the file and what to do, and the run folder stays byte for byte as it was (no run.json rewrite,
no TensorBoard file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hitdet.cli import main
from hitdet.data import SynthSpec, write_synthetic
from tests.helpers import tree

TRAIN = ["--config", "synth-cpu", "--set", "detector.min_size=64", "--set", "detector.max_size=80",
         "--set", "width=0.0625", "--batch-size", "4", "--epochs", "1", "--no-progress",
         "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    data = write_synthetic(root / "data", SynthSpec(num_train=4, num_val=2, seed=3))
    run = root / "run"
    assert main(["train", "hit-detector", "--data", str(data), "--out", str(run), *TRAIN]) == 0
    return run


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this ran",))


def _truncate(run: Path) -> None:
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])


def _evil(run: Path) -> None:
    torch.save({"state_dict": {}, "x": _Evil()}, run / "checkpoints" / "last.ckpt")


def _other_arch(run: Path) -> None:
    doc = json.loads((run / "architecture.json").read_text())
    doc["backbone"]["stem"]["out_channels"] += 8  # a wider stem: the weights no longer fit
    (run / "architecture.json").write_text(json.dumps(doc))


def _not_checkpoint(run: Path) -> None:
    torch.save([1, 2, 3], run / "checkpoints" / "last.ckpt")


CASES = {
    "truncated": (_truncate, "cannot be read"),
    "malicious-pickle": (_evil, "loading it could run code (it asks for print)"),
    "architecture-changed": (_other_arch, "does not match"),
    "not-a-checkpoint": (_not_checkpoint, "not a Lightning checkpoint"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_resume_refuses_a_bad_checkpoint_before_writing(name: str, trained: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    edit, message = CASES[name]
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    edit(run)
    before = tree(tmp_path)
    capsys.readouterr()
    code = main(["train", "--out", str(run), "--resume", "--no-progress", "--accelerator", "cpu"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert message in lines[0] and str(run / "checkpoints" / "last.ckpt") in lines[0], lines[0]
    assert "this ran" not in captured.out
    assert tree(tmp_path) == before


def test_search_resume_refuses_a_changed_sub_spaces_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The config records the sub-spaces file by name; run.json records its op lists, which a resume compares
    (the supernet of other op lists would not fit the checkpoint: a traceback in the strategy before)."""
    data = write_synthetic(tmp_path / "data", SynthSpec(num_train=4, num_val=2, seed=3))
    subs = tmp_path / "subs.json"

    def write_subs(backbone: list[str]) -> None:
        subs.write_text(json.dumps({"format": "hitdet-subspaces", "version": 1, "components": {
            "backbone": {"ops": backbone}, "neck": {"ops": ["sep_k3"]}, "head": {"ops": ["ir_k3_e3"]}}}))

    write_subs(["ir_k3_e3", "skip"])
    run = tmp_path / "run"
    tiny = ["--set", "train.width=0.0625", "--set", "train.batch_size=4", "--set", "steps_per_epoch=2", "--set",
            "train.detector.min_size=64", "--set", "train.detector.max_size=80"]
    assert main(["search", "--data", str(data), "--out", str(run), "--config", "synth-cpu", "--sub-spaces", str(subs),
                 *tiny, "--epochs", "1", "--no-progress", "--accelerator", "cpu"]) == 0
    write_subs(["ir_k5_e6", "ir_k3_e3", "skip"])
    before = tree(tmp_path)
    capsys.readouterr()
    code = main(["search", "--out", str(run), "--resume", "--epochs", "2", "--no-progress", "--accelerator", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{subs}: its op lists differ from those the run started with" in err
    assert tree(tmp_path) == before
