"""Issue 23's remaining reliability cases: a full disk in the middle of a torch save or a dataset, a killed
``data synth``'s leftovers (full disk: tests/test_runs.py covers the first write failing)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from hitdet import io as hio
from hitdet.cli import main
from hitdet.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def _fail_after(monkeypatch: pytest.MonkeyPatch, folder: Path, writes: int) -> None:
    """Files opened for writing in ``folder`` take ``writes`` writes, then the disk is full (ENOSPC)."""
    real_open = open

    class Filling:
        def __init__(self, f: Any) -> None:
            self.f, self.left = f, writes

        def write(self, data: Any) -> Any:
            self.left -= 1
            if self.left < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

        def __enter__(self) -> Filling:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: (
        Filling(real_open(p, mode, *a, **k)) if "w" in mode and Path(p).parent == folder
        else real_open(p, mode, *a, **k)))


@pytest.mark.parametrize("kind", ["torch", "checkpoint"])
def test_disk_full_in_the_middle_of_a_torch_save_is_one_line(kind: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's zip writer turns a failed write after the first into "RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos"; hitdet reports the disk instead, and keeps the old file."""
    target = tmp_path / "w.pt"
    hio.save_torch_atomic(target, {"w": torch.zeros(3)})
    _fail_after(monkeypatch, tmp_path, 3)
    big = {"w": torch.ones(100_000), "v": torch.ones(100_000)}
    with pytest.raises(UserError) as err:
        if kind == "torch":
            hio.save_torch_atomic(target, big)
        else:
            hio.atomic_checkpoint_io().save_checkpoint(big, target)
    assert str(err.value) == f"{tmp_path}: cannot write w.pt: {os.strerror(errno.ENOSPC)}"
    monkeypatch.undo()
    assert torch.equal(torch.load(target)["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]


def test_disk_full_in_data_synth_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    real_save = Image.Image.save
    saved = []

    def save(self: Any, fp: Any, *a: Any, **k: Any) -> Any:
        saved.append(fp)
        if len(saved) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fp))
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", save)
    code = main(["data", "synth", "--out", str(tmp_path / "D"), "--train", "4", "--val", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"hitdet data synth: error: {tmp_path / 'D'}: cannot write ") and "No space left" in err
    assert list(tmp_path.iterdir()) == []


def test_data_synth_removes_a_killed_runs_leftovers(tmp_path: Path) -> None:
    """SIGKILL a real ``data synth`` while it writes: the next run into the same --out removes the leftover."""
    out = tmp_path / "D"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "hitdet", "data", "synth", "--out", str(out), "--train", "2000",
                             "--val", "10"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any((p / "train").is_dir() for p in tmp_path.glob(".D.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list(tmp_path.glob(".D.*.tmp"))
    assert len(left) == 1 and not out.exists()  # what SIGKILL leaves: no dataset, one half-written folder
    live = tmp_path / f".D.{os.getpid()}.keep.tmp"  # a running process's folder is not touched
    live.mkdir()
    assert main(["data", "synth", "--out", str(out), "--train", "1", "--val", "1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["D", live.name])


def _coco_folder(root: Path, annotations: list[dict[str, Any]], images: list[dict[str, Any]] | None = None) -> Path:
    import json

    from PIL import Image

    images = images or [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}]
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / "a.png")
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}))
    return root


def test_data_check_lists_up_to_n_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann = {"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]}
    bad = [{**ann, "id": 1, "iscrowd": "no"}, {**ann, "id": 1}, {**ann, "id": 2, "category_id": 9},
           {**ann, "id": 3, "image_id": 7}]
    data = _coco_folder(tmp_path / "d", bad)
    assert main(["data", "check", str(data), "--splits", "train", "--max-problems", "3"]) == 2
    out, err = capsys.readouterr()
    problems = [line for line in out.splitlines() if line.startswith("  problem: ")]
    assert len(problems) == 3 and "train: 3 problem(s) (stopped at --max-problems)" in out
    assert "'iscrowd' must be 0 or 1" in problems[0] and "duplicate annotation id 1" in problems[1]
    assert "category_id 9" in problems[2]
    assert err.count("\n") == 1 and "'iscrowd' must be 0 or 1" in err and "(and 2 more problem(s), listed above)" in err
    assert main(["data", "check", str(data), "--splits", "train", "val"]) == 2  # default: up to 20, all 4 each
    out, err = capsys.readouterr()
    assert out.count("  problem: ") == 8 and "(and 7 more problem(s)" in err


def test_iscrowd_bool_and_size_from_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann = {"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]}
    data = _coco_folder(tmp_path / "d", [{**ann, "iscrowd": True}, {**ann, "iscrowd": False}, {**ann}],
                        images=[{"id": 1, "file_name": "a.png"}])  # no width/height: read from the file
    assert main(["data", "check", str(data), "--splits", "train"]) == 0
    assert "3 boxes" not in (out := capsys.readouterr().out) and "2 boxes, 1 crowd" in out, out


def test_schedule_recovery_after_a_divergence_takes_effect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    """After exit 3, --resume may change gamma and the milestones (with the lr); run.json records each, and the
    optimiser runs at the new values from the first step (not at the checkpoint's saved lr)."""
    import json

    import yaml

    from hitdet.data import SynthSpec, write_synthetic
    from tests.test_nonfinite import TRAIN, inject_nan

    data = write_synthetic(tmp_path / "data", SynthSpec(num_train=8, num_val=4, seed=3))
    run = tmp_path / "run"
    inject_nan(monkeypatch, 3, run / "checkpoints" / "last.ckpt")  # 2 steps an epoch: diverges in epoch 2
    assert main(["train", "hit-detector", "--data", str(data), "--out", str(run), "--epochs", "2", *TRAIN]) == 3
    monkeypatch.undo()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    lr, gamma, milestones = cfg["lr"], cfg["gamma"], cfg["milestones"]
    assert (gamma, milestones) != (0.5, [1])
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--set", f"lr={lr / 4}",
                 "--set", "gamma=0.5", "--set", "milestones=[1]"]) == 0
    record = json.loads((run / "run.json").read_text())
    assert record["recoveries"][-1]["gamma"] == {"from": gamma, "to": 0.5}
    assert record["recoveries"][-1]["milestones"] == {"from": milestones, "to": [1]}
    assert record["recoveries"][-1]["lr"] == {"from": lr, "to": lr / 4} and "diverged" not in record
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    sched, group = ckpt["lr_schedulers"][0], ckpt["optimizer_states"][0]["param_groups"][0]
    step = sched["last_epoch"]
    assert step == 4  # two epochs of two steps
    wi, wr = cfg["warmup_iters"], cfg["warmup_ratio"]
    warm = wr + (1 - wr) * step / wi if step < wi else 1.0
    assert sched["base_lrs"] == [lr / 4]
    assert group["lr"] == pytest.approx(lr / 4 * 0.5 * warm, rel=1e-12)  # past milestone 1 (step 2): x gamma


@pytest.mark.parametrize("text,value", [("1e-3", 0.001), ("5E4", 50000.0), ("-2e+1", -20.0), ("1.5e-2", 0.015)])
def test_yaml_exponent_numbers_are_floats(text: str, value: float, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    """YAML 1.1 (PyYAML) reads 1e-3 as a string; hitdet's configs and --set read it as the number users mean."""
    import yaml

    from hitdet.config import read_yaml

    (tmp_path / "c.yaml").write_text(f"lr: {text}\nname: 1e3x\n")
    assert read_yaml(tmp_path / "c.yaml") == {"lr": value, "name": "1e3x"}
    assert main(["train", "hit-detector", "--out", str(tmp_path / "r"), "--config", "synth-cpu", "--set",
                 f"lr={text}" if value > 0 else "lr=1e-3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lr"] == (value if value > 0 else 0.001)


def test_hitdet_warnings_are_one_line_without_the_library_location(capsys: pytest.CaptureFixture) -> None:
    """A hitdet warning whose stacklevel points into a library (a Lightning hook) reads "hitdet CMD: warning: ..."."""
    import warnings

    from hitdet.cli import hitdet_warnings

    hitdet_side: dict[str, Any] = {"__name__": "hitdet.training.fake", "warnings": warnings}
    exec(compile("def warn_twice_up():\n    warnings.warn('width\\nscaled twice', UserWarning, stacklevel=2)\n",
                 "hitdet/training/fake.py", "exec"), hitdet_side)
    library_side: dict[str, Any] = {"__name__": "pytorch_lightning.trainer.call", "f": hitdet_side["warn_twice_up"]}
    exec(compile("def hook():\n    f()\n", "pytorch_lightning/trainer/call.py", "exec"), library_side)
    other: dict[str, Any] = {"__name__": "somelib", "warnings": warnings}
    exec(compile("def warn():\n    warnings.warn('from a library', UserWarning)\n", "somelib.py", "exec"), other)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with hitdet_warnings("train"):
            library_side["hook"]()
            other["warn"]()
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "hitdet train: warning: width\\nscaled twice"
    assert "call.py" not in err and err.count("hitdet train: warning:") == 1  # a library's own keeps Python's form


def test_disk_full_while_train_checkpoints_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The issue's case end to end: the disk fills while Lightning writes a checkpoint of ``hitdet train``."""
    from hitdet.data import SynthSpec, write_synthetic
    from tests.test_nonfinite import TRAIN

    data = write_synthetic(tmp_path / "data", SynthSpec(num_train=4, num_val=2, seed=3))
    run = tmp_path / "run"
    _fail_after(monkeypatch, run / "checkpoints", 3)
    code = main(["train", "hit-detector", "--data", str(data), "--out", str(run), "--epochs", "1", *TRAIN])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("hitdet train")]
    assert code == 2 and "Traceback" not in err and "unexpected pos" not in err, err
    assert len(lines) == 1 and f"{run / 'checkpoints'}: cannot write " in lines[0], err
    assert "No space left on device" in lines[0] and "no checkpoint was saved yet" in lines[0]
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
