"""The pipeline end to end at tiny sizes: screen -> search -> retrain -> eval, through the demo and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hitdet import load_architecture
from hitdet.cli import main
from hitdet.demo import DemoSettings, run_demo
from strategies import load_subspaces

TINY = ["train.width=0.0625", "train.batch_size=4", "train.steps_per_epoch=2", "train.detector.min_size=64",
        "train.detector.max_size=80"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    settings = DemoSettings(
        train_images=16,
        val_images=8,
        screen=[*TINY, "train.epochs=3", "strategy.arch_start_epoch=1", "strategy.num_ops=3"],
        search=[*TINY, "train.epochs=2", "strategy.arch_start_epoch=1"],
        train=["epochs=1", "batch_size=4", "detector.min_size=64", "detector.max_size=80"],
    )
    return out, run_demo(out, settings=settings, progress=False)


def test_demo_runs_every_stage(demo):
    out, summary = demo
    subs = load_subspaces(out / "screen" / "subspaces.json")
    assert {c: len(ops) for c, ops in subs.kept.items()} == {"backbone": 3, "neck": 3, "head": 3}
    assert summary["sub_spaces"] == {c: list(ops) for c, ops in subs.kept.items()}
    arch = load_architecture(out / "search" / "architecture.json")
    for label, op in arch.sample().items():  # the search ran on the screened sub spaces
        assert op in subs.kept[label.split("/")[0]]
    meta = arch.metadata
    assert meta["mode"] == "search" and meta["sub_spaces"] == summary["sub_spaces"]
    assert set(meta["alpha_probabilities"]) == set(arch.sample())
    metrics = json.loads((out / "eval" / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["AP"] == summary["AP"]
    assert set(summary["seconds"]) == {"data", "check", "screen", "search", "train", "eval"}
    assert json.loads((out / "summary.json").read_text())["AP50"] == summary["AP50"]
    for stage in ("screen", "search", "train"):
        assert any((out / stage / "tensorboard").iterdir())
    assert (out / "search" / "checkpoints" / "last.ckpt").is_file()


def test_plot_architecture_and_run(demo, tmp_path, capsys):
    out, _ = demo
    png = tmp_path / "arch.png"
    assert main(["plot", str(out / "search" / "architecture.json"), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(out / "screen"), "--out", str(tmp_path / "screen")]) == 0
    written = sorted(p.name for p in (tmp_path / "screen").iterdir())
    assert written == ["alpha.png", "score_history.png"]


def test_search_on_released_neck_sub_space_via_cli(demo, tmp_path):
    out, _ = demo
    run = tmp_path / "search"
    code = main(["search", "--data", str(out / "data"), "--out", str(run), "--config", "synth-cpu",
                 "--sub-spaces", "paper-neck", "--epochs", "1", "--no-progress", "--lambda", "0.5",
                 *[f"--set={s}" for s in TINY], "--set", "ops=[sep_k3, skip]"])
    assert code == 0
    arch = load_architecture(run / "architecture.json")
    neck = [arch.sample()[label] for label in arch.structure.neck_labels()]
    assert set(neck) <= {"conv_k1", "ir_k3_e6_d3", "ir_k5_e6", "ir_k5_e6_d3", "sep_k3", "sep_k3_d3", "sep_k5_d2",
                         "sep_k5_d3"}
    assert arch.metadata["settings"]["penalty_lambda"] == 0.5


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "strategy.mu=-1"], "strategy.mu: must be >= 0"),
        (["--set", "strategy.bogus=1"], "strategy.bogus: unknown key"),
        (["--set", "train.epochz=1"], "epochz: unknown key"),
        (["--set", "ops=[ir_k9]"], "unknown op 'ir_k9'"),
        (["--components", "tail"], "unknown component 'tail'"),
        (["--config", "nope.yaml"], "nope.yaml: config file not found"),
    ],
)
def test_screen_bad_input_is_one_line_exit_2(tmp_path, args, message):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hitdet", "screen", "--out", str(run), "--data", str(tmp_path),
                           *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert not run.exists()


def test_search_towards_a_macs_target_via_cli(demo, tmp_path, capsys):
    """`hitdet search --target-macs` lands within 10 % of the whole detector's budget and prints it."""
    from search_spaces.costs import detector_cost
    from search_spaces.positions import detector_positions
    from search_spaces.structure import STRUCTURES

    out, _ = demo
    structure = STRUCTURES["cpu"].scaled(0.0625)
    input_size, rois, ops = (64, 96), 100, ["sep_k3", "skip", "conv_k3", "ir_k3_e6"]
    # the cheapest and dearest detectors of this space, counted independently of the search
    positions = detector_positions(structure, input_size, rois)
    cheap = {p.label: min(ops, key=p.macs) for p in positions}
    dear = {p.label: max(ops, key=p.macs) for p in positions}
    low, high = (detector_cost(structure, s, 5, input_size, rois)["total"].macs for s in (cheap, dear))
    target = (low + high) / 2
    run = tmp_path / "budget"
    code = main(["search", "--data", str(out / "data"), "--out", str(run), "--config", "synth-cpu", "--epochs", "1",
                 "--no-progress", "--target-macs", f"{target / 1e6:.6f}M", *[f"--set={s}" for s in TINY],
                 "--set", f"sub_spaces={write_ops(tmp_path, ops)}"])
    assert code == 0
    arch = load_architecture(run / "architecture.json")
    macs = detector_cost(structure, arch.sample(), 5, input_size, rois)["total"].macs
    assert abs(macs - target) <= 0.1 * target, (macs, target)
    printed = capsys.readouterr().out
    assert f"{macs / 1e9:.4g} G" in printed and f"target {target / 1e9:.4g} G" in printed
    assert "the chosen op has >= 2x the uniform probability" in printed


def write_ops(folder, ops):
    from strategies import SubSpaces

    return str(SubSpaces({c: list(ops) for c in ("backbone", "neck", "head")}).save(folder / "subspaces.json"))


def test_macs_counts_parse_with_units():
    from hitdet.errors import UserError
    from hitdet.searching import parse_macs

    assert parse_macs("3.5G") == 3.5e9 and parse_macs("350M") == 3.5e8 and parse_macs(2e9) == 2e9
    assert parse_macs("1.5 GMACs") == 1.5e9
    for bad in ("abc", "-1G", 0, "nanG", True):
        with pytest.raises(UserError, match="target_macs"):
            parse_macs(bad)


def test_screen_keeps_few_checkpoints_and_logs_lr_and_op_counts(demo, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = demo
    run = tmp_path / "screen"
    code = main(["screen", "--data", str(out / "data"), "--out", str(run), "--config", "synth-cpu", "--epochs", "3",
                 "--no-progress", "--num-ops", "2", *[f"--set={s}" for s in TINY], "--set", "train.keep_checkpoints=1",
                 "--set", "strategy.arch_start_epoch=1", "--set", "ops=[sep_k3, skip, conv_k3, conv_k1]",
                 "--precision", "32-true", "--num-workers", "0"])
    assert code == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch003.ckpt", "last.ckpt"]
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert any(t.startswith("lr") for t in tags), tags
    # the op counts after the last epoch's removals: 4 -> 3 -> 2 per component
    for comp in ("backbone", "neck", "head"):
        assert [s.value for s in events.Scalars(f"num_ops/{comp}")][-1] == 2


def test_pipeline_on_a_coco_folder_with_the_hand_pick_beside(demo, tmp_path, capsys):
    """`hitdet pipeline --baseline`: the demo's stages on any COCO folder, and the stage-ir hand pick by one recipe."""
    from search_spaces.hand_picks import hand_pick

    out, _ = demo
    run = tmp_path / "pipe"
    sets = [*[f"screen.{s}" for s in [*TINY, "train.epochs=2", "strategy.arch_start_epoch=1", "strategy.num_ops=2"]],
            *[f"search.{s}" for s in [*TINY, "train.epochs=1", "strategy.arch_start_epoch=0"]],
            *[f"train.{s}" for s in ["epochs=1", "batch_size=4", "detector.min_size=64", "detector.max_size=80"]]]
    code = main(["pipeline", "--data", str(out / "data"), "--out", str(run), "--baseline", "--no-progress",
                 *[f"--set={s}" for s in sets]])
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    searched = load_architecture(run / "search" / "architecture.json")
    picked = load_architecture(run / "baseline" / "train" / "architecture.json")
    # the hand pick is built in the searched detector's own structure, at its channels
    assert picked.sample() == hand_pick("stage-ir", searched.structure)
    assert picked.structure.stages == searched.structure.stages
    base_metrics = json.loads((run / "baseline" / "eval" / "metrics.json").read_text())["metrics"]
    assert summary["baseline"]["name"] == "stage-ir" and summary["baseline"]["AP"] == base_metrics["AP"]
    assert {"check", "screen", "search", "train", "eval", "baseline train", "baseline eval"} == set(summary["seconds"])
    printed = capsys.readouterr().out
    assert "hand pick stage-ir" in printed and "verdict" in printed


@pytest.mark.parametrize("args,message", [
    (["--set", "epochs=2"], "expected STAGE.KEY=VALUE"),
    (["--baseline", "nope"], "unknown hand pick 'nope'"),
    (["--set", "search.strategy.bogus=1"], "strategy.bogus: unknown key"),
])
def test_pipeline_bad_input_is_one_line_exit_2(tmp_path, args, message):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hitdet", "pipeline", "--data", str(tmp_path), "--out", str(run),
                           *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert not run.exists()


def test_pipeline_stage_sizes_follow_the_recipe():
    """synth-cpu runs at the demo's stage sizes with the user's overrides on top; other recipes at their own."""
    from hitdet.pipeline import CPU_STAGES, PipelineSettings, configs

    s = PipelineSettings(screen=["train.epochs=2"])
    assert s.sets("screen") == [*CPU_STAGES["screen"], "train.epochs=2"]
    screen, search, train = configs(s)
    assert (screen.train.width, screen.train.half_depth, screen.train.steps_per_epoch, screen.train.epochs) == (
        0.5, True, 6, 2)
    assert (search.train.steps_per_epoch, search.train.epochs, train.epochs) == (8, 3, 12)
    paper_screen, _, paper_train = configs(PipelineSettings(recipe="paper"))
    assert paper_screen.train.steps_per_epoch is None and paper_train.epochs == 12
