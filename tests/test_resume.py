"""SIGKILL in the middle of the second epoch, then --resume: the same result as an uninterrupted run.

Each run is a ``python -m hitdet`` subprocess (the same threads and start-up for all three runs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hitdet.data import SynthSpec, write_synthetic
from hitdet.training import read_state_dict
from strategies import SubSpaces

KILLER = Path(__file__).resolve().parent / "sigkill_mid_epoch.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRAIN = ["--config", "synth-cpu", "--set", "detector.min_size=64", "--set", "detector.max_size=80",
         "--set", "eval_batch_size=4", "--set", "width=0.0625", "--batch-size", "4", "--epochs", "2", "--no-progress"]
# 2 steps an epoch everywhere (8 images; the search halves them), so the kill lands between two steps
SCREEN = ["--config", "synth-cpu", "--epochs", "3", "--no-progress", "--set=train.width=0.0625",
          "--set=train.batch_size=2", "--set=steps_per_epoch=2", "--set=train.detector.min_size=64",
          "--set=train.detector.max_size=80", "--set=strategy.arch_start_epoch=1", "--set=strategy.num_ops=2",
          "--set=ops=[sep_k3, skip, conv_k1, conv_k3]"]

SEARCH = [*SCREEN[:-2], "--lambda", "0.5"]  # no op pool: the search reads its sub spaces


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("resume") / "data", SynthSpec(num_train=8, num_val=4, seed=5))


def hitdet(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "hitdet", *args], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]


def killed_mid_epoch(args: list[str], run: Path) -> None:
    """Run the command and SIGKILL it after the first step of its second epoch (tests/sigkill_mid_epoch.py)."""
    proc = subprocess.run([sys.executable, str(KILLER), *args], capture_output=True, text=True,
                          env={**ENV, "KILL_EPOCH": "1"}, timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"not killed (exit {proc.returncode}): {proc.stderr[-2000:]}"
    assert (run / "checkpoints" / "epoch001.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "checkpoints" / "epoch002.ckpt").exists()


def test_train_resumed_after_sigkill_matches_uninterrupted(data: Path, tmp_path: Path) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    hitdet("train", "hit-detector", "--data", str(data), "--out", str(ref), *TRAIN)
    killed_mid_epoch(["train", "hit-detector", "--data", str(data), "--out", str(run), *TRAIN], run)
    hitdet("train", "--out", str(run), "--resume", "--no-progress")

    a, b = read_state_dict(ref / "last.pt"), read_state_dict(run / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    ref_history = json.loads((ref / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in ref_history] == [1, 2]
    assert json.loads((run / "metrics.json").read_text())["history"] == ref_history


def test_screen_resumed_after_sigkill_matches_uninterrupted(data: Path, tmp_path: Path) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    hitdet("screen", "--data", str(data), "--out", str(ref), *SCREEN)
    killed_mid_epoch(["screen", "--data", str(data), "--out", str(run), *SCREEN], run)
    hitdet("screen", "--out", str(run), "--resume", "--no-progress")  # the run's own config.yaml by default

    assert json.loads((run / "subspaces.json").read_text()) == json.loads((ref / "subspaces.json").read_text())
    meta_ref = json.loads((ref / "metadata.json").read_text())
    meta_run = json.loads((run / "metadata.json").read_text())
    assert meta_run["alpha_probabilities"] == meta_ref["alpha_probabilities"]
    assert meta_run == meta_ref


def test_search_resumed_after_sigkill_matches_uninterrupted(data: Path, tmp_path: Path) -> None:
    sub = SubSpaces({"backbone": ["sep_k3", "conv_k1", "skip"], "neck": ["sep_k3", "conv_k3"],
                     "head": ["conv_k1", "conv_k3"]}).save(tmp_path / "subspaces.json")
    search = [*SEARCH, f"--sub-spaces={sub}"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    hitdet("search", "--data", str(data), "--out", str(ref), *search)
    killed_mid_epoch(["search", "--data", str(data), "--out", str(run), *search], run)
    hitdet("search", "--out", str(run), "--resume", "--no-progress")

    arch_ref = json.loads((ref / "architecture.json").read_text())
    arch_run = json.loads((run / "architecture.json").read_text())
    arch_ref.pop("name"), arch_run.pop("name")  # named after the run folder
    assert arch_run == arch_ref  # the sample, α probabilities, MACs and score history included
    assert json.loads((run / "metadata.json").read_text()) == json.loads((ref / "metadata.json").read_text())
    history = arch_ref["metadata"]["score_history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]  # counted from 1
    assert history[0]["scores"] != history[-1]["scores"]  # α moved after the restart, too

    # what the resume restored from: both optimisers, the weight schedule, the strategy and RNG states
    ckpt = torch.load(run / "checkpoints" / "epoch001.ckpt", weights_only=False, map_location="cpu")
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert (ckpt["epoch"], final["epoch"]) == (0, 2) and ckpt["global_step"] > 0
    weights_opt, alpha_opt = final["optimizer_states"]
    assert "momentum_buffer" in next(iter(weights_opt["state"].values()))
    positions = len(json.loads((run / "sample.json").read_text()))
    assert len(alpha_opt["state"]) == positions  # Adam moments of one α per searched position
    assert ckpt["lr_schedulers"] and final["lr_schedulers"][0]["last_epoch"] > ckpt["lr_schedulers"][0]["last_epoch"]
    assert {"active", "events", "history", "costs"} <= set(ckpt["hitdet_strategy"])
    assert set(ckpt["hitdet_rng"]) == {"torch", "numpy", "python"}


def test_screen_resume_refuses_another_config(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hitdet.cli import main

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "config.yaml").write_text("detector: faster_rcnn\nops: [sep_k3, skip]\n")
    assert main(["screen", "--out", str(run), "--data", str(data), "--resume", "--config", "synth-cpu",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--resume: the config differs from the run's (ops: the run has ['sep_k3', 'skip'], got None)" in err
    assert f"pass --config {run / 'config.yaml'}" in err and err.count("\n") == 1
