"""The run-folder contract (hitdet.io, hitdet.runs): atomic writes on a full disk, the --out lock, --force only
after validation, SIGINT/SIGTERM exit codes, and --resume checks (refused changes, an lr recovery, a moved run)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from hitdet import io as hio
from hitdet.cli import main
from hitdet.data import SynthSpec, write_synthetic
from hitdet.data.synth import CATEGORIES
from hitdet.errors import UserError
from hitdet.runs import RunLock
from tests.helpers import read_only, tree, without_run_log
from tests.test_nonfinite import TRAIN, inject_nan

ROOT = Path(__file__).resolve().parent.parent
PRESET_TEXT = (ROOT / "hitdet" / "presets" / "hit-detector.json").read_text()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("runs") / "data", SynthSpec(num_train=8, num_val=4, seed=5))


# -- hitdet.io ------------------------------------------------------------------------------------

WRITERS = {
    "json": lambda p: hio.write_json_atomic(p, {"new": 1}),
    "text": lambda p: hio.write_text_atomic(p, "new"),
    "yaml": lambda p: hio.write_yaml_atomic(p, {"new": 1}),
    "torch": lambda p: hio.save_torch_atomic(p, {"w": torch.zeros(3)}),
    "checkpoint": lambda p: hio.atomic_checkpoint_io().save_checkpoint({"w": torch.zeros(3)}, p),
}


@pytest.mark.parametrize("fails", ["write", "fsync", "replace"])
@pytest.mark.parametrize("kind", list(WRITERS))
def test_full_disk_keeps_the_old_file_and_leaves_no_temp(kind: str, fails: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out" / "file"
    target.parent.mkdir()
    target.write_bytes(b"old")

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if fails == "write":  # the temporary file's writes (text, JSON, torch.save all go through its write())
        real_open = open

        class Full:
            def __init__(self, f: Any) -> None:
                self.f = f

            def write(self, *a: Any) -> Any:
                full()

            def __getattr__(self, name: str) -> Any:
                return getattr(self.f, name)

            def __enter__(self) -> Full:
                return self

            def __exit__(self, *exc: Any) -> None:
                self.f.close()

        monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: (
            Full(real_open(p, mode, *a, **k)) if "w" in mode and Path(p).parent == target.parent
            else real_open(p, mode, *a, **k)))
    else:
        monkeypatch.setattr(hio.os, fails, full)
    with pytest.raises(UserError) as err:
        WRITERS[kind](target)
    assert str(err.value).startswith(f"{target.parent}: cannot write file: ")
    assert os.strerror(errno.ENOSPC) in str(err.value)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file"]


def test_atomic_writes_round_trip(tmp_path: Path) -> None:
    expected = {"a": [1, 2.5, "x"], "b": None}
    assert json.loads(hio.write_json_atomic(tmp_path / "a.json", expected).read_text()) == expected
    assert yaml.safe_load(hio.write_yaml_atomic(tmp_path / "a.yaml", expected).read_text()) == expected
    w = torch.arange(5.0)
    assert torch.equal(torch.load(hio.save_torch_atomic(tmp_path / "w.pt", {"w": w}))["w"], w)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.yaml", "w.pt"]


def test_read_json_limits(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"k": list(range(100))}))
    assert hio.read_json(path) == {"k": list(range(100))}
    with pytest.raises(UserError, match="over the 10-byte limit"):
        hio.read_json(path, max_bytes=10)
    depth = 5
    path.write_text("[" * depth + "]" * depth)
    assert hio.read_json(path, max_depth=depth) == [[[[[]]]]]
    with pytest.raises(UserError, match=f"nested deeper than {depth - 1} levels"):
        hio.read_json(path, max_depth=depth - 1)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="nested deeper"):
        hio.read_json(path)
    path.write_text("7" * 5000)
    with pytest.raises(UserError, match="invalid JSON: Exceeds the limit"):
        hio.read_json(path)


# -- the lock -------------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_run_into_the_same_out_is_refused(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / ".run.lock"
        lock.write_text(f"{owner.pid} {socket.gethostname()}\n")
        before = tree(tmp_path)
        code = main(["train", "hit-detector", "--data", str(data), "--out", str(out), "--epochs", "1", *TRAIN])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert f"in use by another run (PID {owner.pid} on {socket.gethostname()}" in err
        assert tree(tmp_path) == before
    finally:
        owner.kill()
        owner.wait()


@pytest.mark.parametrize("command", ["demo", "eval"])
def test_demo_and_eval_take_the_lock_too(command: str, data: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    """The commands that write a folder without training use the same lifecycle: check, lock, then write."""
    out = tmp_path / "res"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".res.lock").write_text(f"{owner.pid} {socket.gethostname()}\n")
        if command == "eval":
            arch = tmp_path / "arch.json"
            arch.write_text(json.dumps({**json.loads(PRESET_TEXT), "detector": {
                **json.loads(PRESET_TEXT)["detector"], "num_classes": len(CATEGORIES) + 1}}))
            dets = tmp_path / "dets.json"
            dets.write_text("[]")
            argv = ["eval", str(arch), "--data", str(data), "--detections", str(dets), "--out", str(out)]
        else:
            argv = ["demo", "--out", str(out), "--no-progress"]
        before = tree(tmp_path)
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and f"in use by another run (PID {owner.pid}" in err, err
        assert tree(tmp_path) == before
    finally:
        owner.kill()
        owner.wait()


def test_lock_of_a_dead_process_is_taken_over_and_released(tmp_path: Path) -> None:
    out = tmp_path / "run"
    lock_file = tmp_path / ".run.lock"
    dead = _dead_pid()
    lock_file.write_text(f"{dead} {socket.gethostname()}\n")
    with RunLock(out):
        assert lock_file.read_text().split() == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(UserError, match=f"PID {os.getpid()}"):
            RunLock(out).acquire()
    assert not lock_file.exists()
    lock_file.write_text(f"{dead} another-host\n")  # another host's PID cannot be checked: it holds
    with pytest.raises(UserError, match="on another-host"):
        RunLock(out).acquire()


# -- --force only after validation ----------------------------------------------------------------

FORCE_FAILS = [
    ("train-accelerator", ["train", "hit-detector", "--data", "{data}", "--accelerator", "bogus"]),
    ("train-strategy", ["train", "hit-detector", "--data", "{data}", "--strategy", "bogus"]),
    ("train-data", ["train", "hit-detector", "--data", "{tmp}/nowhere"]),
    ("train-weights", ["train", "hit-detector", "--data", "{data}", "--backbone-weights", "{tmp}/none.pt"]),
    ("screen-accelerator", ["screen", "--data", "{data}", "--accelerator", "bogus"]),
    ("search-data", ["search", "--data", "{tmp}/nowhere"]),
    ("pretrain-accelerator", ["pretrain", "--arch", "hit-detector", "--data", "{data}", "--accelerator", "bogus"]),
    ("pretrain-data", ["pretrain", "--arch", "hit-detector", "--data", "{tmp}/nowhere"]),
]


@pytest.mark.parametrize("name,args", FORCE_FAILS, ids=[f[0] for f in FORCE_FAILS])
def test_failed_force_start_leaves_the_old_run(name: str, args: list[str], data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    for rel in ("best.pt", "checkpoints/last.ckpt", "backbone.pt", "notes.txt"):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(f"old {rel}")
    (run / "run.json").write_text(json.dumps({"command": args[0]}))  # a run --force would replace
    before = tree(tmp_path)
    argv = [a.format(data=data, tmp=tmp_path) for a in args] + ["--out", str(run), "--force", "--epochs", "1"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert tree(tmp_path) == before


def test_read_only_out_is_refused(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(ro) as ok:
        if not ok:
            pytest.skip("no way to make a read-only folder here (root, and mounts not allowed)")
        code = main(["train", "hit-detector", "--data", str(data), "--out", str(ro / "run"), "--epochs", "1", *TRAIN])
        err = capsys.readouterr().err
        assert code == 2 and "not writable" in err and err.count("\n") == 1, err
        assert list(ro.iterdir()) == []


# -- signals --------------------------------------------------------------------------------------


def _expected_stop(signum: int, last: Path, command: str = "train") -> str:
    return (f"hitdet {command}: interrupted by {signal.Signals(signum).name}; last good checkpoint: {last} "
            "(continue with --resume)")


SIGINT_RUNS = {
    "train": ["train", "hit-detector", *TRAIN],
    "screen": ["screen", "--config", "synth-cpu", "--set", "train.width=0.0625", "--set", "steps_per_epoch=1",
               "--set", "train.detector.min_size=64", "--set", "train.detector.max_size=80", "--no-progress"],
}


@pytest.mark.parametrize("command", list(SIGINT_RUNS))
def test_sigint_exits_130_with_one_line_naming_the_checkpoint(command: str, data: Path, tmp_path: Path) -> None:
    """Ctrl-C on a real ``hitdet train``/``screen`` process (Lightning alone would exit 1, NNI add ERROR lines)."""
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "hitdet", *SIGINT_RUNS[command], "--data", str(data),
                             "--out", str(run), "--epochs", "50"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.is_file(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in 120 s"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert without_run_log(err) == [_expected_stop(signal.SIGINT, last, command)], err
    assert (run / "log.txt").read_text().splitlines()[-1][20:] == "stopped: interrupted by SIGINT"
    assert out.strip() == "", out  # no NNI log lines (start-up chatter, "Model 1 fails to be executed")
    assert torch.load(last, weights_only=False)["epoch"] >= 0  # a whole checkpoint, readable
    assert not (tmp_path / ".run.lock").exists()


SIGTERM_RUNS = {
    "train": ["train", "hit-detector", *TRAIN],
    "screen": ["screen", "--config", "synth-cpu", "--set", "train.width=0.0625", "--set", "steps_per_epoch=1",
               "--set", "train.detector.min_size=64", "--set", "train.detector.max_size=80", "--no-progress"],
}


@pytest.mark.parametrize("command", list(SIGTERM_RUNS))
def test_sigterm_exits_143_with_one_line(command: str, data: Path, tmp_path: Path,
                                         capfd: pytest.CaptureFixture) -> None:
    """SIGTERM (a scheduler's stop), in-process: the signal arrives once the first checkpoint exists."""
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"

    def send_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while not last.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    sender = threading.Thread(target=send_after_first_checkpoint, daemon=True)
    sender.start()
    code = main([*SIGTERM_RUNS[command], "--data", str(data), "--out", str(run), "--epochs", "50"])
    sender.join()
    out, err = capfd.readouterr()  # the file descriptors: NNI's log handler holds the original stdout
    assert code == 143, err
    assert without_run_log(err) == [_expected_stop(signal.SIGTERM, last, command)], err
    assert "ERROR" not in out, out  # NNI's own "Model 1 fails to be executed" lines: the stop is not an error
    assert signal.getsignal(signal.SIGTERM) == handler  # restored for whatever runs next in this process
    assert not (tmp_path / ".run.lock").exists()


class _SignalWhilePickled:
    """Sends SIGTERM to this process while ``torch.save`` is pickling it (mid-write); unpickles as 7."""

    def __reduce__(self) -> tuple[Any, ...]:
        os.kill(os.getpid(), signal.SIGTERM)
        return (int, (7,))


def test_a_signal_mid_checkpoint_waits_for_the_whole_file(tmp_path: Path) -> None:
    """A stop that lands inside torch.save is held until the file is renamed into place, then acts."""
    from hitdet.runs import RunInterrupted, fitting

    target = tmp_path / "checkpoints" / "last.ckpt"
    after = []
    with pytest.raises(RunInterrupted) as stopped, fitting(tmp_path):
        hio.atomic_checkpoint_io().save_checkpoint({"w": torch.ones(2), "x": _SignalWhilePickled()}, target)
        after.append("not stopped")  # the re-sent signal stops the run right after the write
        time.sleep(1)
    assert stopped.value.exit_code == 143 and after in ([], ["not stopped"])
    assert str(stopped.value) == f"interrupted by SIGTERM; last good checkpoint: {target} (continue with --resume)"
    saved = torch.load(target, weights_only=False)
    assert saved["x"] == 7 and torch.equal(saved["w"], torch.ones(2))
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


# -- resume ---------------------------------------------------------------------------------------


def test_resume_refuses_changes_allows_an_lr_recovery_and_follows_a_moved_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    state = inject_nan(monkeypatch, 3, run / "checkpoints" / "last.ckpt")  # 2 steps/epoch: diverges in epoch 2
    assert main(["train", "hit-detector", "--data", str(data), "--out", str(run), "--epochs", "2", *TRAIN]) == 3
    assert state["before"] is not None
    capsys.readouterr()
    lr = yaml.safe_load((run / "config.yaml").read_text())["lr"]
    assert "diverged" in json.loads((run / "run.json").read_text())

    def refused(args: list[str], message: str) -> None:
        before = tree(tmp_path)
        assert main(["train", "--out", str(run), "--resume", "--no-progress", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert tree(tmp_path) == before

    refused(["--batch-size", "2"], "batch_size: the run has 4, got 2")
    refused(["--set", "hflip_prob=0.1"], "hflip_prob: the run has 0.5, got 0.1")

    # After the divergence (exit 3), lr may change once; the recovery is recorded in run.json.
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--set", f"lr={lr / 10}"]) == 0
    record = json.loads((run / "run.json").read_text())
    assert "diverged" not in record
    assert record["recoveries"][-1]["lr"] == {"from": lr, "to": lr / 10}
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == lr / 10
    capsys.readouterr()
    refused(["--lr", str(lr)], f"lr: the run has {lr / 10}, got {lr}")  # no divergence now: lr is fixed again

    # A moved run resumes from its own checkpoints/last.ckpt and keeps writing there (no last-v1.ckpt).
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    assert main(["train", "--out", str(moved), "--resume", "--epochs", "3", "--no-progress"]) == 0
    names = sorted(p.name for p in (moved / "checkpoints").iterdir())
    assert names == ["best.ckpt", "epoch001.ckpt", "epoch002.ckpt", "epoch003.ckpt", "last.ckpt"], names
    states = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"].values()
    paths = [s[k] for s in states for k in ("best_model_path", "last_model_path") if s.get(k)]
    assert paths and all(Path(p).parent == moved / "checkpoints" for p in paths), paths
    assert json.loads((moved / "metrics.json").read_text())["last"]["epoch"] == 3
