"""Training config (YAML, recipes, overrides, errors) and the learning-rate schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hitdet.errors import UserError
from hitdet.training import RECIPES, TrainConfig, load_config, save_config, warmup_step_factor


def test_defaults_are_the_papers_1x_schedule() -> None:
    cfg = load_config()
    assert (cfg.epochs, cfg.milestones, cfg.momentum, cfg.weight_decay, cfg.gamma) == (12, [8, 11], 0.9, 1e-4, 0.1)
    assert TrainConfig(batch_size=32).total_lr() == pytest.approx(0.04)
    assert TrainConfig(batch_size=2).total_lr(world_size=8) == pytest.approx(0.02)  # 16 images: 0.02
    assert TrainConfig(batch_size=2, lr=0.5).total_lr(world_size=8) == 0.5


def test_yaml_recipe_overrides_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("recipe: synth-cpu\nepochs: 3\nlr: 1\ndetector:\n  min_size: 96\n")
    cfg = load_config(f, ["milestones=[1, 2]", "detector.box_batch_size_per_image=32", "lr=null"], batch_size=4,
                      epochs=None)
    assert cfg.epochs == 3 and cfg.batch_size == 4 and cfg.milestones == [1, 2] and cfg.lr is None
    assert cfg.width is None and cfg.preset_width == RECIPES["synth-cpu"]["preset_width"]
    assert cfg.detector["min_size"] == 96 and cfg.detector["box_batch_size_per_image"] == 32
    assert cfg.detector["anchor_base"] == RECIPES["synth-cpu"]["detector"]["anchor_base"]  # merged, not replaced
    assert isinstance(load_config(f).lr, float)
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg
    assert yaml.safe_load((tmp_path / "out.yaml").read_text())["epochs"] == 3


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("epochz: 3\n", [], r"c.yaml: epochz: unknown key"),
        ("epochs: three\n", [], r"c.yaml: epochs: expected int, got str"),
        ("epochs: 2.5\n", [], r"c.yaml: epochs: expected int"),
        ("detector: {min_sise: 3}\n", [], r"c.yaml: detector.min_sise: unknown detector setting"),
        ("milestones: [8, x]\n", [], r"c.yaml: milestones\[1\]: expected int"),
        ("- 1\n", [], r"c.yaml: expected a mapping"),
        ("epochs: [\n", [], r"c.yaml: invalid YAML"),
        ("", ["batch_size=big"], r"^--set batch_size: expected int"),
        ("", ["nope=1"], r"^--set nope: unknown key"),
        ("", ["detector.rpn_nms_thresh=high"], r"^--set detector.rpn_nms_thresh: expected float"),
        ("", ["epochs"], r"--set epochs: expected key=value"),
        ("", ["epochs=0"], r"^--set epochs: must be a positive integer, got 0"),  # a range names its source too
        ("epochs: 0\n", [], r"c.yaml: epochs: must be a positive integer"),
        ("recipe: synth-cpu\nwarmup_iters: -1\n", [], r"c.yaml: warmup_iters: must be >= 0"),
        ("a: &x [1]\nb: *x\n", [], r"c.yaml: invalid YAML: .*aliases"),
        ("epochs: " + "[" * 5000 + "]" * 5000 + "\n", [], r"c.yaml: (YAML nested too deeply|epochs: expected int)"),
    ],
)
def test_config_errors_name_key_and_source(tmp_path: Path, text: str, overrides: list[str], message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=message):
        load_config(f, overrides)


def test_missing_config_file() -> None:
    with pytest.raises(UserError, match=r"nope.yaml: config file not found \(built-in recipes: paper, synth-cpu\)"):
        load_config("nope.yaml")


def test_schedule_warmup_then_steps() -> None:
    f = warmup_step_factor(steps_per_epoch=10, milestones=[8, 11], gamma=0.1, warmup_iters=20, warmup_ratio=0.25)
    assert f(0) == pytest.approx(0.25)
    assert f(10) == pytest.approx(0.25 + 0.75 * 10 / 20)
    assert f(20) == pytest.approx(1.0) and f(79) == pytest.approx(1.0)
    assert f(80) == pytest.approx(0.1) and f(109) == pytest.approx(0.1)
    assert f(110) == pytest.approx(0.01) and f(119) == pytest.approx(0.01)
    g = warmup_step_factor(steps_per_epoch=2, milestones=[1], warmup_iters=4, warmup_ratio=0.5)
    assert g(2) == pytest.approx(0.1 * 0.75)  # warm-up and step overlap: both apply
    assert warmup_step_factor(5, [], warmup_iters=0)(0) == 1.0
