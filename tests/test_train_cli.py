"""End to end: `hitdet train` (run folder, resume, refusals) then `hitdet eval` on its weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from hitdet import build_detector, load_architecture
from hitdet.cli import main
from hitdet.data import SYNTH_CATEGORIES, SynthSpec, write_synthetic
from hitdet.training import load_weights, read_state_dict

TRAIN = ["--config", "synth-cpu", "--set", "detector.min_size=64", "--set", "detector.max_size=80",
         "--set", "eval_batch_size=1", "--batch-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("e2e")
    data = write_synthetic(root / "data", SynthSpec(num_train=8, num_val=4, seed=2))
    out = root / "run"
    assert main(["train", "hit-detector", "--data", str(data), "--out", str(out), "--epochs", "1", *TRAIN]) == 0
    return {"root": root, "data": data, "out": out}


def test_run_folder_contents(run: dict[str, Path]) -> None:
    out = run["out"]
    for name in ("architecture.json", "config.yaml", "best.pt", "last.pt", "metrics.json",
                 "checkpoints/last.ckpt", "checkpoints/epoch001.ckpt", "checkpoints/best.ckpt"):
        assert (out / name).is_file(), name
    arch = load_architecture(out / "architecture.json")
    assert arch.settings.num_classes == len(SYNTH_CATEGORIES) + 1 and arch.settings.min_size == 64
    assert [c["id"] for c in arch.metadata["categories"]] == sorted(c["id"] for c in SYNTH_CATEGORIES)
    model = load_weights(build_detector(arch), out / "best.pt")
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # the preset at synth-cpu's preset_width
    assert arch.metadata["width"] == {"multiplier": 0.125, "of": "preset hit-detector", "by": "preset_width"}
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1] and 0.0 <= history[0]["AP"] <= 1.0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_classifier", "lr", "val/AP", "val/AP50"} <= tags


def test_refuses_existing_run_and_bad_data_without_writing(run: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    before = (run["out"] / "last.pt").stat().st_mtime_ns
    assert main(["train", "hit-detector", "--data", str(run["data"]), "--out", str(run["out"]), *TRAIN]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (run["out"] / "last.pt").stat().st_mtime_ns == before
    out = tmp_path / "new"
    assert main(["train", "hit-detector", "--data", str(tmp_path / "missing"), "--out", str(out), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "missing: dataset folder not found" in err and err.count("\n") == 1
    assert not out.exists()
    assert main(["train", "hit-detector", "--data", str(run["data"]), "--out", str(out), "--set", "lr=fast"]) == 2
    assert "--set lr: expected float or null, got" in capsys.readouterr().err and not out.exists()


def test_resume_continues_and_eval_reproduces_validation(run: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out, data = run["out"], run["data"]
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert (out / "checkpoints" / "epoch002.ckpt").is_file()  # named from 1
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1  # 0-based: 2 epochs

    ev = run["root"] / "eval-last"
    arch = str(out / "architecture.json")
    assert main(["eval", arch, "--weights", str(out / "last.pt"), "--data", str(data), "--out", str(ev),
                 "--batch-size", "1"]) == 0
    printed = capsys.readouterr().out
    assert "AP50" in printed and "Per-category box AP" in printed
    written = json.loads((ev / "metrics.json").read_text())
    metrics = written["metrics"]
    assert metrics["AP"] == pytest.approx(history[-1]["AP"], abs=1e-6)  # the same model, the same numbers
    # one row per category of the data, named as in its annotations; AP is the mean of those with ground truth
    assert [(r["category_id"], r["name"]) for r in written["per_class"]] == [
        (c["id"], c["name"]) for c in sorted(SYNTH_CATEGORIES, key=lambda c: c["id"])]
    seen = [r["AP"] for r in written["per_class"] if r["AP"] is not None]
    assert metrics["AP"] == pytest.approx(sum(seen) / len(seen), abs=1e-9)
    dets = json.loads((ev / "detections.json").read_text())
    assert {d["category_id"] for d in dets} <= {c["id"] for c in SYNTH_CATEGORIES}  # original ids

    ev2 = run["root"] / "eval-ckpt"
    assert main(["eval", arch, "--weights", str(out / "checkpoints" / "last.ckpt"), "--data", str(data),
                 "--out", str(ev2), "--batch-size", "1"]) == 0
    assert json.loads((ev2 / "metrics.json").read_text())["metrics"] == metrics
    state = read_state_dict(out / "checkpoints" / "last.ckpt")
    assert all(torch.equal(state[k], v) for k, v in read_state_dict(out / "last.pt").items())


def test_eval_errors_are_one_line(run: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out, data = run["out"], run["data"]
    arch = str(out / "architecture.json")
    assert main(["eval", arch, "--weights", str(out / "nope.pt"), "--data", str(data)]) == 2
    assert "nope.pt: weights file not found" in capsys.readouterr().err
    assert main(["eval", "hit-detector", "--weights", str(out / "best.pt"), "--data", str(data)]) == 2
    assert "num_classes is 81" in capsys.readouterr().err
    bad = run["root"] / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["eval", arch, "--weights", str(bad), "--data", str(data)]) == 2
    assert "bad.pt: cannot read weights" in capsys.readouterr().err


def test_eval_writes_one_folder_per_weights_file(run: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out, data = run["out"], run["data"]
    arch = str(out / "architecture.json")
    for name in ("best", "last"):
        assert main(["eval", arch, "--weights", str(out / f"{name}.pt"), "--data", str(data), "--batch-size", "1",
                     "--no-progress"]) == 0
    assert (out / "eval-best" / "metrics.json").is_file() and (out / "eval-last" / "metrics.json").is_file()
    with pytest.raises(SystemExit) as exit_:
        main(["eval", arch, "--weights", "x.pt", "--data", str(data), "--accelerator", "tpu"])
    assert exit_.value.code == 2 and "--accelerator: invalid choice" in capsys.readouterr().err


def test_run_options_reach_the_trainer(run: dict[str, Path], tmp_path: Path) -> None:
    """--precision, --num-workers and steps_per_epoch are config keys the Trainer and loaders obey."""
    import pytorch_lightning as pl

    seen: dict[str, object] = {}

    class Probe(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            seen.update(precision=trainer.precision, batches=trainer.num_training_batches,
                        workers=trainer.train_dataloader.num_workers, steps=trainer.global_step)

    from hitdet.training.config import load_config
    from hitdet.training.runner import train

    cfg = load_config("synth-cpu", ["detector.min_size=64", "detector.max_size=80", "epochs=1", "batch_size=2",
                                    "steps_per_epoch=1", "precision=bf16-mixed", "num_workers=0"])
    train(load_architecture("hit-detector"), tmp_path / "r", cfg, run["data"], accelerator="cpu",
          progress=False, callbacks=[Probe()])
    assert seen == {"precision": "bf16-mixed", "batches": 1, "workers": 0, "steps": 1}
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["precision"] == "bf16-mixed" and saved["steps_per_epoch"] == 1


def test_a_searched_json_trains_at_the_channels_it_states(run: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """The width trap, closed: ``hitdet train SEARCH/architecture.json --config synth-cpu`` builds the searched
    detector (the search's parameter count), not a 1/8-width copy; a width is applied where asked for, and recorded."""
    from hitdet.searching import load_search_config, run_search
    from strategies import SubSpaces

    sub = SubSpaces({c: ["ir_k3_e3", "sep_k3"] for c in ("backbone", "neck", "head")}).save(tmp_path / "sub.json")
    cfg = load_search_config("search", "synth-cpu", [f"sub_spaces={sub}", "train.epochs=1", "steps_per_epoch=1",
                                                     "train.detector.min_size=64", "train.detector.max_size=80"])
    searched = run_search("search", tmp_path / "search", cfg, run["data"], progress=False)
    tiny = ["--data", str(run["data"]), "--config", "synth-cpu", "--epochs", "1", "--set", "steps_per_epoch=1",
            "--set", "detector.min_size=64", "--set", "detector.max_size=80", "--no-progress"]

    assert main(["train", searched["architecture"], "--out", str(tmp_path / "as-is"), *tiny]) == 0
    trained = load_architecture(tmp_path / "as-is" / "architecture.json")
    assert trained.structure == load_architecture(searched["architecture"]).structure
    params = sum(p.numel() for p in load_weights(build_detector(trained), tmp_path / "as-is" / "best.pt").parameters())
    assert params == searched["detector"]["params"] > 1_000_000
    assert "width" not in trained.metadata
    capsys.readouterr()
    assert main(["info", str(tmp_path / "as-is" / "architecture.json")]) == 0
    assert "channels:" not in capsys.readouterr().out

    assert main(["train", searched["architecture"], "--out", str(tmp_path / "half"), "--width", "0.5", *tiny]) == 0
    half = load_architecture(tmp_path / "half" / "architecture.json")
    assert half.structure == trained.structure.scaled(0.5)
    assert half.metadata["width"] == {"multiplier": 0.5, "of": f"architecture {trained.name}", "by": "width"}
    capsys.readouterr()
    assert main(["info", str(tmp_path / "half" / "architecture.json")]) == 0
    assert f"channels: 0.5 x the channels of architecture {trained.name} (set by width)" in capsys.readouterr().out
