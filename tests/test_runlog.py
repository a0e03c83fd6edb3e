"""The run log (RUN/log.txt, stderr without a bar), the progress bar on stderr, and epochs counted from 1."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hitdet.cli import main
from hitdet.data import SynthSpec, write_synthetic
from hitdet.runlog import bar_metrics, format_duration

TRAIN = ["--config", "synth-cpu", "--set", "detector.min_size=64", "--set", "detector.max_size=80",
         "--set", "eval_batch_size=4", "--set", "width=0.0625", "--batch-size", "4", "--set", "log_every_n_steps=1"]
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("runlog") / "data", SynthSpec(num_train=8, num_val=4, seed=5))


def scalars(run: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_train_log_lines_match_tensorboard_and_metrics(data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", "hit-detector", "--data", str(data), "--out", str(run), "--epochs", "1", "--no-progress",
                 *TRAIN]) == 0
    captured = capsys.readouterr()
    log = (run / "log.txt").read_text().splitlines()
    assert captured.err.splitlines() == log  # no bar: the log's lines on stderr, and nothing else
    assert "Epoch" not in captured.out and "log.txt" not in captured.out
    assert all(re.match(STAMP, line) for line in log), log
    body = [line[20:] for line in log]
    assert body[0] == "start: epoch 1/1, 2 steps/epoch, 1 device(s), a line every 1 steps"
    steps = [b for b in body if re.match(r"epoch 1/1 step \d/2 \|", b)]
    assert len(steps) == 2 and body[-1].startswith("end: 1 epoch(s) in ") and body[-1].endswith("1 of 1 done")
    tb_loss = scalars(run, "train/loss")  # logged every step (log_every_n_steps=1), by global step
    for i, line in enumerate(steps):
        fields = line.split(" | ")
        losses = dict(zip(fields[1].split()[::2], map(float, fields[1].split()[1::2]), strict=True))
        assert list(losses)[0] == "loss" and {"loss_classifier", "loss_box_reg", "loss_objectness",
                                               "loss_rpn_box_reg"} <= set(losses)
        assert losses["loss"] == pytest.approx(tb_loss[i], rel=1e-3)  # one step per line: that step's loss
        assert fields[2].startswith("lr ") and float(fields[2][3:]) > 0
        assert re.fullmatch(r"[\d.e+]+ img/s", fields[3]) and re.fullmatch(r"eta \d+:\d\d:\d\d", fields[4])
        assert re.fullmatch(r"max_rss \d+\.\d\dG", fields[5])  # a CPU run: the process's peak memory
    done = next(b for b in body if b.startswith("epoch 1/1 done in "))
    history = json.loads((run / "metrics.json").read_text())["history"]
    val = dict(re.findall(r"(\w+) ([-\d.e+]+)", done.split(" | ")[1].removeprefix("val ")))
    assert float(val["AP"]) == pytest.approx(history[0]["AP"], rel=1e-3, abs=1e-9)
    assert float(val["AP50"]) == pytest.approx(history[0]["AP50"], rel=1e-3, abs=1e-9)
    mean = dict(re.findall(r"(\w+) ([-\d.e+]+)", done.split(" | ")[2].removeprefix("mean ")))
    assert float(mean["loss"]) == pytest.approx(sum(tb_loss.values()) / 2, rel=1e-3)
    # epochs from 1 in file names and TensorBoard's epoch scalar
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "epoch001.ckpt", "last.ckpt"]
    assert set(scalars(run, "epoch").values()) == {1.0}

    # --resume appends, from the epoch it continues at; the bar goes to stderr, the log lines do not
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    resumed = (run / "log.txt").read_text().splitlines()
    assert resumed[: len(log)] == log and resumed[len(log)][20:].startswith("resume: epoch 2/2, 2 steps/epoch")
    assert "Epoch 2/2" in captured.err and "Epoch" not in captured.out
    assert not any(re.match(STAMP, line) for line in captured.err.splitlines())
    bar = captured.err.replace("\r", "\n")
    assert "loss=" in bar and "train/loss" not in bar and "v_num" not in bar and "val/AP=" in bar
    assert "epoch002.ckpt" in {p.name for p in (run / "checkpoints").iterdir()}
    assert set(scalars(run, "epoch").values()) == {1.0, 2.0}


def test_screen_bar_labels_and_epochs_from_one(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "screen"
    assert main(["screen", "--data", str(data), "--out", str(run), "--config", "synth-cpu", "--epochs", "2",
                 "--set", "train.width=0.0625", "--set", "train.batch_size=4", "--set", "train.steps_per_epoch=1",
                 "--set", "train.detector.min_size=64", "--set", "train.detector.max_size=80",
                 "--set", "strategy.arch_start_epoch=1", "--set", "ops=[sep_k3, skip, conv_k1]",
                 "--set", "strategy.num_ops=2", "--set", "train.log_every_n_steps=1"]) == 0
    captured = capsys.readouterr()
    assert "Epoch" not in captured.out and "kept 2" in captured.out
    updates = [u for u in captured.err.replace("\r", "\n").splitlines() if "it/s" in u or "s/it" in u]
    last = updates[-1]
    assert last.startswith("Epoch 2/2") and "MACs/uniform=" in last
    assert last.count("loss=") == 1 and "train/loss" not in last and "macs=" not in last
    log = (run / "log.txt").read_text()
    assert "epoch 2/2 step 1/1 |" in log and "loss_arch " in log and "MACs/uniform " in log
    subs = json.loads((run / "subspaces.json").read_text())
    assert subs["epoch_base"] == 1
    # one op of three removed per component, at the end of the second (last) epoch
    assert {e["epoch"] for c in subs["components"].values() for e in c["removed"]} == {2}
    meta = json.loads((run / "metadata.json").read_text())
    assert [h["epoch"] for h in meta["score_history"]] == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch001.ckpt", "epoch002.ckpt", "last.ckpt"]


def test_bar_metrics_each_once_and_labelled() -> None:
    got = bar_metrics({"train/loss": 1.5, "loss": 1.5, "v_num": 3, "MACs/uniform": 0.8, "train/top1_step": 0.5,
                       "train/top1_epoch": 0.4, "val/AP": 0.1})
    assert got == {"loss": 1.5, "MACs/uniform": 0.8, "top1": 0.5, "val/AP": 0.1}
    assert format_duration(3725.4) == "1:02:05" and format_duration(-1) == "0:00:00"


def test_memory_is_the_gpu_peak_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from hitdet.runlog import _memory

    class Module:
        device = torch.device("cuda", 0)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30 + 2**29)
    assert _memory(Module()) == "gpu_mem 3.50G"
    Module.device = torch.device("cpu")
    assert _memory(Module()).startswith("max_rss ")
