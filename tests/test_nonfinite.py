"""A NaN loss stops `hitdet train` and `hitdet screen` with one line, exit 3, and the last checkpoint untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitdet.cli import main
from hitdet.data import SynthSpec, write_synthetic
from hitdet.errors import NonFiniteLossError
from hitdet.training.module import DetectionModule

TRAIN = ["--config", "synth-cpu", "--set", "detector.min_size=64", "--set", "detector.max_size=80",
         "--set", "eval_batch_size=4", "--set", "width=0.0625", "--batch-size", "4", "--no-progress"]
TINY = ["train.width=0.0625", "train.batch_size=4", "steps_per_epoch=2", "train.detector.min_size=64",
        "train.detector.max_size=80"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("nan") / "data", SynthSpec(num_train=8, num_val=4, seed=3))


def inject_nan(monkeypatch: pytest.MonkeyPatch, at_call: int, ckpt: Path) -> dict[str, bytes | None]:
    """The ``at_call``-th call of DetectionModule.training_step sees NaN losses; records last.ckpt before it."""
    original = DetectionModule.training_step
    state: dict[str, object] = {"calls": 0, "before": None}

    def training_step(self: DetectionModule, batch, batch_idx):  # type: ignore[no-untyped-def]
        state["calls"] = int(state["calls"]) + 1  # type: ignore[call-overload]
        if state["calls"] != at_call:
            return original(self, batch, batch_idx)
        state["before"] = ckpt.read_bytes() if ckpt.is_file() else None
        hook = self.model.register_forward_hook(lambda m, i, out: {k: v * float("nan") for k, v in out.items()})
        try:
            return original(self, batch, batch_idx)
        finally:
            hook.remove()

    monkeypatch.setattr(DetectionModule, "training_step", training_step)
    return state  # type: ignore[return-value]


def check_stopped(code: int, err: str, run: Path, state: dict, where: str) -> None:
    assert code == NonFiniteLossError.exit_code == 3
    # --no-progress: the run log's lines come first on stderr (hitdet.runlog); the error is one line
    log = (run / "log.txt").read_text().splitlines()
    lines = err.strip().splitlines()
    assert [line for line in lines if not line.startswith("hitdet ")] == log, err
    lines = lines[len(log):]
    assert len(lines) == 1, err
    assert log[-1].split(" ", 2)[2].startswith("stopped: NonFiniteLossError: non-finite loss nan"), log
    assert "non-finite loss nan [loss_classifier=nan" in lines[0] and where in lines[0], lines[0]
    last = run / "checkpoints" / "last.ckpt"
    assert f"last good checkpoint: {last}" in lines[0]
    assert state["before"] is not None and last.read_bytes() == state["before"]  # nothing saved from the bad state


def test_train_stops_on_nan(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    state = inject_nan(monkeypatch, 3, run / "checkpoints" / "last.ckpt")  # 2 steps/epoch: 1st step of epoch 1
    code = main(["train", "hit-detector", "--data", str(data), "--out", str(run), "--epochs", "2", *TRAIN])
    check_stopped(code, capsys.readouterr().err, run, state, "] at global step 2, epoch 2;")
    assert (run / "checkpoints" / "epoch001.ckpt").is_file()  # the first epoch's, named from 1
    assert not (run / "checkpoints" / "epoch002.ckpt").exists() and not (run / "last.pt").exists()


def test_screen_stops_on_nan_in_architecture_step(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "screen"
    # 8 images = 4 weight + 4 architecture: epoch 0 is one weight step (call 1), epoch 1 starts with an
    # architecture step (call 2), which goes through DetectionModule.training_step too.
    state = inject_nan(monkeypatch, 2, run / "checkpoints" / "last.ckpt")
    code = main(["screen", "--data", str(data), "--out", str(run), "--config", "synth-cpu", "--epochs", "2",
                 "--no-progress", *[f"--set={s}" for s in TINY], "--set", "strategy.arch_start_epoch=1",
                 "--set", "ops=[sep_k3, skip, conv_k1]", "--set", "strategy.num_ops=2"])
    check_stopped(code, capsys.readouterr().err, run, state, "] at global step 1, epoch 2;")
    assert not (run / "subspaces.json").exists()
