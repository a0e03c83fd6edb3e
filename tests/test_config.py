"""The one config system (hitdet.config): sections, layers, sources in errors, bounded YAML, and every command on it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from hitdet.config import MAX_CONFIG_BYTES
from hitdet.errors import UserError
from hitdet.pretrain.config import RECIPES as PRETRAIN_RECIPES
from hitdet.pretrain.config import PretrainConfig
from hitdet.pretrain.config import load_config as load_pretrain
from hitdet.searching import RECIPES as SEARCH_RECIPES
from hitdet.searching import SearchConfig, load_search_config
from hitdet.training.config import TrainConfig
from strategies.settings import SearchSettings


def test_search_sections_are_the_train_and_strategy_types() -> None:
    cfg = load_search_config("screen", "synth-cpu", ["strategy.mu=0.2", "train.detector.min_size=96"])
    assert isinstance(cfg.train, TrainConfig) and isinstance(cfg.strategy, SearchSettings)
    assert cfg.strategy.mode == "screen" and cfg.strategy.mu == 0.2
    recipe = SEARCH_RECIPES["synth-cpu"]
    assert cfg.strategy.arch_travel == recipe["strategy"]["arch_travel"]
    # the train section's detector overrides merge over the recipe's, key by key
    assert cfg.train.detector == {**recipe["train"]["detector"], "min_size": 96}
    # the search's own defaults sit under the recipe: half depth when screening, cosine schedule
    assert cfg.train.half_depth is True and load_search_config("search", "synth-cpu").train.half_depth is False
    assert cfg.train.schedule == "cosine"


def test_search_config_round_trips_through_its_yaml(tmp_path: Path) -> None:
    cfg = load_search_config("search", "synth-cpu", ["strategy.penalty_lambda=0.05", "target_macs=2G",
                                                     "train.epochs=3"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    again = load_search_config("search", path)
    assert again == cfg and again.target_macs == 2e9
    assert "mode" not in cfg.to_dict()["strategy"]  # the command's business, not the file's


def test_yaml_file_inherits_a_recipe(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("recipe: synth-cpu\ntrain:\n  epochs: 2\nstrategy:\n  num_ops: 3\n")
    cfg = load_search_config("screen", f)
    assert cfg.train.epochs == 2 and cfg.strategy.num_ops == 3
    assert cfg.train.lr == SEARCH_RECIPES["synth-cpu"]["train"]["lr"]  # the rest: the recipe's
    p = tmp_path / "pre.yaml"
    p.write_text("recipe: synth-cpu\nepochs: 2\n")
    pre = load_pretrain(p)
    assert pre.epochs == 2 and pre.lr == PRETRAIN_RECIPES["synth-cpu"]["lr"]
    assert load_pretrain(None, recipe="searched").epochs == PRETRAIN_RECIPES["searched"]["epochs"]


@pytest.mark.parametrize(("text", "overrides", "message"), [
    ("strategy:\n  mu: -1\n", [], r"c.yaml: strategy.mu: must be >= 0, got -1"),
    ("train:\n  lr: .nan\n", [], r"c.yaml: train.lr: must be a finite number"),
    ("train:\n  detector:\n    box_score_thresh: 5\n", [], r"c.yaml: train.detector.box_score_thresh: must be"),
    ("", ["strategy.regulariser=max"], r"^--set strategy.regulariser: must be one of min, softmin, group"),
    ("", ["strategy.mode=search"], r"^--set strategy.mode: unknown key"),
    ("", ["strategy.num_ops=40"], r"^--set strategy.num_ops: must be at most the 32 ops"),
    ("", ["train.seed=-2"], r"^--set train.seed: must be in \[0, 2\*\*32\)"),
    ("", ["ops=[sep_k3, sep_k9]"], r"^--set ops: unknown op 'sep_k9'"),
    ("", ["target_macs=-1G"], r"^--set target_macs: must be a positive MACs count"),
    ("strategy: 3\n", [], r"c.yaml: strategy: expected a mapping"),
])
def test_search_errors_name_the_key_path_and_its_source(tmp_path: Path, text: str, overrides: list[str],
                                                        message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text or "{}\n")
    with pytest.raises(UserError, match=message):
        load_search_config("screen", f, overrides)


def test_pretrain_ranges_name_their_source() -> None:
    with pytest.raises(UserError, match=r"^--set lr: must be a finite number, got nan"):
        load_pretrain(None, ["lr=.nan"])
    with pytest.raises(UserError, match=r"^--epochs: must be a positive integer, got 0"):
        load_pretrain(None, epochs=0)
    with pytest.raises(UserError, match=r"^--set warmup_epochs: must be less than epochs"):
        load_pretrain(None, ["epochs=2", "warmup_epochs=3"])


def test_the_dataclasses_check_their_own_ranges() -> None:
    """Built in code, not from a file, a config is checked all the same."""
    with pytest.raises(ValueError, match="lr: must be a finite number"):
        TrainConfig(lr=math.inf)
    with pytest.raises(ValueError, match="detector.min_size: must be a positive integer"):
        TrainConfig(detector={"min_size": 0})
    with pytest.raises(ValueError, match="crop_scale: must be in"):
        PretrainConfig(crop_scale=0.0)
    with pytest.raises(ValueError, match="structure: expected one of"):
        SearchConfig(structure="huge")
    with pytest.raises(ValueError, match="mu: must be >= 0"):
        dataclasses.replace(SearchSettings(), mu=-1.0)


def test_config_files_are_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("epochs: 3\n" + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(UserError, match=r"big.yaml: config file too large"):
        load_search_config("screen", big)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n")
    with pytest.raises(UserError, match=r"bomb.yaml: invalid YAML: .*aliases"):
        load_pretrain(bomb)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"epochs: \xff\xfe\n")
    with pytest.raises(UserError, match=r"bin.yaml: cannot read: not UTF-8"):
        load_search_config("search", binary)


@pytest.mark.parametrize("argv", [
    ["screen", "--config", "synth-cpu", "--num-ops", "4", "--set", "train.lr=0.01"],
    ["search", "--config", "synth-cpu", "--lambda", "0.05", "--epochs", "2"],
    ["train", "hit-detector", "--config", "synth-cpu", "--batch-size", "3", "--set", "detector.min_size=96"],
    ["pretrain", "--arch", "hit-detector", "--data", "{tmp}/imgs", "--config", "synth-cpu", "--epochs", "2"],
])
def test_print_config_prints_the_resolved_config_and_writes_nothing(argv: list[str], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from hitdet.cli import main
    from hitdet.training.config import load_config as load_train

    out = tmp_path / "run"
    code = main([a.format(tmp=tmp_path) for a in argv] + ["--out", str(out), "--print-config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert code == 0 and not out.exists() and list(tmp_path.iterdir()) == []
    saved = tmp_path / "printed.yaml"
    saved.write_text(yaml.safe_dump(printed))
    command = argv[0]
    if command in ("screen", "search"):  # the printed YAML is the config: it loads back to the same one
        expected = load_search_config(command, "synth-cpu", {
            "screen": ["strategy.num_ops=4", "train.lr=0.01"],
            "search": ["strategy.penalty_lambda=0.05", "train.epochs=2"]}[command])
        assert load_search_config(command, saved) == expected
    elif command == "train":
        assert load_train(saved) == load_train("synth-cpu", ["batch_size=3", "detector.min_size=96"])
    else:
        assert load_pretrain(saved) == load_pretrain("synth-cpu", ["epochs=2"])


def test_paper_recipes_pin_the_earlier_screening_readings():
    """The defaults keep skip and drop no path; the paper recipes keep what the paper's method ran with."""
    from hitdet.searching import load_search_config

    for recipe in ("synth-cpu", None):
        screen = load_search_config("screen", recipe).strategy
        assert (screen.skip_drop, screen.screen_keep) == (0.0, ("skip",))
    for recipe in ("paper", "paper-cpu"):
        screen, search = (load_search_config(m, recipe).strategy for m in ("screen", "search"))
        assert (screen.skip_drop, screen.screen_keep) == (0.3, ())
        assert (search.skip_drop, search.screen_keep) == (0.0, ())
