"""Backbone pretraining (issue #8): tiny widths and images on CPU, the real CLI and weight files.

Evidence asked for: a pretrained backbone loads into the supernet and into a fixed detector
with every backbone tensor matched; top-1 on the synthetic classification set rises above
chance within a short run; a mismatched weights file is refused cleanly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from hitdet import build_detector
from hitdet.architecture import Architecture, load_architecture
from hitdet.cli import main
from hitdet.errors import UserError
from hitdet.pretrain import (
    load_backbone_weights,
    read_backbone_weights,
    register_synth_cls,
    save_backbone_weights,
    write_synthetic_classification,
)
from hitdet.pretrain import load_config as pretrain_config
from tests.helpers import tiny_arch, tree

OPS = ["ir_k3_e3", "sep_k3", "conv_k3"]
NUM_CLASSES = 4


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pretrain")


@pytest.fixture(scope="module")
def data(work: Path) -> Path:
    return write_synthetic_classification(
        work / "data", num_classes=NUM_CLASSES, train_per_class=24, val_per_class=8, image_size=40
    )


@pytest.fixture(scope="module")
def arch_file(work: Path) -> Path:
    """The released detector at 1/8 width and half depth (2+2+4+2 blocks), 4 classes."""
    arch = tiny_arch(num_classes=NUM_CLASSES)
    arch = replace(arch, structure=arch.structure.half_depth())
    return arch.save(work / "tiny.json")


@pytest.fixture(scope="module")
def arch_run(work: Path, data: Path, arch_file: Path) -> Path:
    out = work / "arch-run"
    code = main(["pretrain", "--arch", str(arch_file), "--data", str(data), "--out", str(out),
                 "--config", "synth-cpu", "--no-progress"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def space_run(work: Path, data: Path) -> Path:
    out = work / "space-run"
    code = main(["pretrain", "--space", ",".join(OPS), "--half-depth", "--width", "0.125", "--data", str(data),
                 "--out", str(out), "--config", "synth-cpu", "--epochs", "1", "--no-progress"])
    assert code == 0
    return out


def supernet_structure():
    from search_spaces.structure import DetectorStructure

    return DetectorStructure().half_depth().scaled(0.125)


# ------------------------------------------------------------------ data


def test_synthetic_classification_set(work: Path, data: Path):
    from torchvision.datasets import ImageFolder

    train, val = ImageFolder(str(data / "train")), ImageFolder(str(data / "val"))
    assert train.classes == val.classes == [f"class_{k:02d}" for k in range(NUM_CLASSES)]
    assert (len(train), len(val)) == (NUM_CLASSES * 24, NUM_CLASSES * 8)
    assert train[0][0].size == (40, 40)
    with pytest.raises(UserError, match="not empty"):
        write_synthetic_classification(data)
    # The `hitdet data synth-cls` parser (registered by the data command) writes the same set.
    parser = argparse.ArgumentParser()
    register_synth_cls(parser.add_subparsers())
    args = parser.parse_args(["synth-cls", "--out", str(work / "synth2"), "--classes", "3", "--train-per-class",
                              "2", "--val-per-class", "1", "--size", "16"])
    assert args.func(args) == 0
    assert len(ImageFolder(str(work / "synth2" / "train"))) == 6


# ------------------------------------------------------------------ fixed architecture


def test_fixed_backbone_beats_chance(arch_run: Path):
    summary = json.loads((arch_run / "pretrain.json").read_text())
    assert summary["epochs_done"] == 8
    assert summary["metrics"]["val/top1"] >= 0.6  # chance is 1/4
    assert summary["metrics"]["val/top5"] == 1.0
    assert {p.name for p in arch_run.iterdir()} >= {"backbone.pt", "pretrain.json", "checkpoints", "tensorboard"}
    assert (arch_run / "checkpoints" / "last.ckpt").is_file()
    assert list((arch_run / "tensorboard").glob("events.out.tfevents.*"))


def test_fixed_weights_load_into_detector(arch_run: Path, arch_file: Path):
    arch = load_architecture(arch_file)
    model = build_detector(arch)
    report = load_backbone_weights(model, arch_run / "backbone.pt", choices=arch.sample())
    body = model.backbone.body.state_dict()
    assert len(report.matched) == len(body) and not report.missing and not report.unexpected
    saved = read_backbone_weights(arch_run / "backbone.pt")
    assert saved.kind == "architecture"
    for key, value in body.items():
        assert torch.equal(value, saved.state_dict[key]), key
    assert "loaded" in report.summary() and f"{len(body)}/{len(body)}" in report.summary()
    # A Lightning checkpoint of the run works too (its classifier's backbone).
    report = load_backbone_weights(model, arch_run / "checkpoints" / "last.ckpt", choices=arch.sample())
    assert len(report.matched) == len(body)


def test_resume_and_output_folder(arch_run: Path, arch_file: Path, data: Path, capsys):
    base = ["pretrain", "--arch", str(arch_file), "--data", str(data), "--out", str(arch_run),
            "--config", "synth-cpu", "--no-progress"]
    assert main(base) == 2
    assert "not empty" in capsys.readouterr().err
    saved = yaml.safe_load((arch_run / "config.yaml").read_text())
    assert saved == pretrain_config("synth-cpu").to_dict()  # the run's config, as resolved
    before = tree(arch_run)
    for changed, key in ((["--set", "lr=0.01"], "lr"), (["--batch-size", "8"], "batch_size"),
                         (["--set", "label_smoothing=0.1"], "label_smoothing")):
        # --resume continues the run's config (read from its config.yaml): any other value is refused
        assert main(["pretrain", "--arch", str(arch_file), "--data", str(data), "--out", str(arch_run),
                     "--no-progress", "--resume", *changed]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"the config differs from the run's ({key}:" in err, err
        assert tree(arch_run) == before
    assert main([*base, "--resume", "--epochs", "9"]) == 0
    summary = json.loads((arch_run / "pretrain.json").read_text())
    assert summary["epochs_done"] == 9
    assert read_backbone_weights(arch_run / "backbone.pt").metadata["epochs"] == 9


# ------------------------------------------------------------------ supernet


def test_supernet_weights_load_into_spaces(space_run: Path):
    from nni.nas.strategy import DARTS

    from search_spaces.spaces import BackboneSpace, TrinitySpace

    path = space_run / "backbone.pt"
    assert read_backbone_weights(path).kind == "supernet"
    st = supernet_structure()
    ops = {"backbone": OPS, "neck": OPS, "head": OPS}
    for target in (BackboneSpace(st, ops), DARTS().mutate_model(BackboneSpace(st, ops)), TrinitySpace(st, ops)):
        report = load_backbone_weights(target, path)
        body = getattr(getattr(target, "backbone", None), "body", target)
        n = sum(1 for k in body.state_dict() if not k.endswith("_arch_alpha"))
        assert len(report.matched) == n and not report.missing and not report.unexpected
        assert "stages.0.0.sep_k3.body.0.weight" in report.matched


def test_supernet_weights_initialise_a_fixed_detector(space_run: Path):
    """The nice-to-have: a decoded architecture takes its chosen candidates' pretrained tensors."""
    st = supernet_structure()
    sample = {label: OPS[i % len(OPS)] for i, label in enumerate(st.labels())}
    arch = Architecture.from_sample(sample, st, replace(tiny_arch().settings, num_classes=NUM_CLASSES))
    model = build_detector(arch)
    path = space_run / "backbone.pt"
    with pytest.raises(UserError, match="give the architecture"):
        load_backbone_weights(model, path)
    report = load_backbone_weights(model, path, choices=arch.sample())
    body = model.backbone.body.state_dict()
    assert len(report.matched) == len(body) and not report.missing and not report.unexpected
    saved = read_backbone_weights(path).state_dict
    op = sample["backbone/s1_b0"]
    assert torch.equal(body["stages.0.0.body.0.weight"], saved[f"stages.0.0.{op}.body.0.weight"])


def test_uniform_mixture_is_the_mean_and_keeps_names():
    from hitdet.pretrain import UniformMixture, build_backbone_supernet, make_uniform

    st = supernet_structure()
    space = build_backbone_supernet(st, OPS).eval()
    fallback = build_backbone_supernet(st, OPS, prefer_space=False)
    keys = list(space.state_dict())
    assert keys == list(fallback.state_dict())
    choice = space.stages[1][0]
    x = torch.randn(2, st.stages[0][-1].out_channels, 8, 8)
    expected = sum(choice[op](x) for op in OPS) / len(OPS)
    assert make_uniform(space) == len(st.backbone_labels())
    assert isinstance(space.stages[1][0], UniformMixture)
    assert torch.allclose(space.stages[1][0](x), expected, atol=1e-6)
    assert list(space.state_dict()) == keys


# ------------------------------------------------------------------ refusals


def test_mismatched_weights_refused(arch_run: Path, space_run: Path, work: Path):
    wide = tiny_arch(width=0.25, num_classes=NUM_CLASSES)
    wide = replace(wide, structure=wide.structure.half_depth())
    with pytest.raises(UserError) as err:
        load_backbone_weights(build_detector(wide), arch_run / "backbone.pt")
    msg = str(err.value)
    assert msg.startswith(str(arch_run / "backbone.pt"))
    assert "tensor stages.0.0.body.6.weight has shape (8, 24, 1, 1) in the file but (16, 24, 1, 1)" in msg
    # Fixed weights never initialise a supernet; junk is not a weights file.
    from search_spaces.spaces import BackboneSpace

    with pytest.raises(UserError, match="supernet needs supernet weights"):
        load_backbone_weights(BackboneSpace(supernet_structure(), OPS), arch_run / "backbone.pt")
    junk = work / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a torch weights file"):
        load_backbone_weights(build_detector(wide), junk)
    # A file without the tensors the target needs (strict) is refused too.
    partial = read_backbone_weights(arch_run / "backbone.pt")
    trimmed = {k: v for k, v in partial.state_dict.items() if not k.startswith("tail.")}
    save_backbone_weights(work / "trimmed.pt", trimmed, partial.metadata)
    arch = tiny_arch(num_classes=NUM_CLASSES)
    arch = replace(arch, structure=arch.structure.half_depth())
    with pytest.raises(UserError, match="lacks .* first tail"):
        load_backbone_weights(build_detector(arch), work / "trimmed.pt")
    assert load_backbone_weights(build_detector(arch), work / "trimmed.pt", strict=False).missing


def test_mismatched_weights_cli_exit_2_one_line(arch_run: Path, data: Path, work: Path):
    wide = tiny_arch(width=0.25, num_classes=NUM_CLASSES)
    wide_file = replace(wide, structure=wide.structure.half_depth()).save(work / "wide.json")
    proc = subprocess.run(
        [sys.executable, "-m", "hitdet.cli", "pretrain", "--arch", str(wide_file), "--data", str(data),
         "--out", str(work / "wide-run"), "--init-weights", str(arch_run / "backbone.pt"), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("hitdet pretrain: error:") and "stages.0.0.body.6.weight" in lines[0]


# ------------------------------------------------------------------ config


def test_config_recipes_yaml_and_overrides(work: Path):
    from hitdet.pretrain import load_config

    assert load_config(recipe="supernet").epochs == 10  # paper: supernet, alpha fixed
    searched = load_config(recipe="searched")
    assert searched.epochs == 300 and searched.momentum == 0.9  # paper: the searched backbone
    yml = work / "cfg.yaml"
    yml.write_text("recipe: synth-cpu\nlr: 0.5\nlabel_smoothing: 0.1\n")
    cfg = load_config(yml, ["batch_size=4"], epochs=3)
    assert (cfg.epochs, cfg.lr, cfg.label_smoothing, cfg.batch_size, cfg.image_size) == (3, 0.5, 0.1, 4, 32)
    yml.write_text("lrr: 0.5\n")
    with pytest.raises(UserError, match=r"cfg.yaml: lrr: unknown key"):
        load_config(yml)
    yml.write_text("epochs: ten\n")
    with pytest.raises(UserError, match=r"cfg.yaml: epochs: expected int"):
        load_config(yml)
    with pytest.raises(UserError, match="--set hflip: expected bool"):
        load_config(None, ["hflip=3"])


def test_space_option_errors(data: Path, work: Path, capsys):
    base = ["pretrain", "--data", str(data), "--out", str(work / "x")]
    assert main([*base, "--space", "ir_k3_e3,nope"]) == 2
    assert "unknown op 'nope'" in capsys.readouterr().err
    assert main([*base, "--space", str(work / "missing.json")]) == 2
    assert "no such sub-spaces file" in capsys.readouterr().err


def test_space_from_subspaces_json_and_resume_guard(arch_run: Path, work: Path):
    from hitdet.pretrain import parse_space_ops, supernet_target
    from hitdet.pretrain.runner import check_same_target
    from strategies.screening import SubSpaces

    sub = SubSpaces(kept={"backbone": OPS, "neck": ["sep_k3"], "head": ["ir_k3_e3"]}).save(work / "sub.json")
    ops, source = parse_space_ops(str(sub))
    assert ops == OPS and source["space"] == "sub-spaces"
    # --resume refuses a run folder that pretrained another target.
    with pytest.raises(UserError, match="another target"):
        check_same_target(arch_run, supernet_target(ops, supernet_structure()))


def test_train_starts_from_pretrained_backbone(arch_run: Path, arch_file: Path, work: Path, capsys):
    """``hitdet train --backbone-weights`` loads every backbone tensor; a mismatched file writes nothing."""
    det = work / "det"
    assert main(["data", "synth", "--out", str(det), "--train", "8", "--val", "4"]) == 0
    common = ["--data", str(det), "--config", "synth-cpu", "--epochs", "1", "--no-progress",
              "--set", "detector.min_size=64", "--set", "detector.max_size=80"]
    out = work / "train-pretrained"
    capsys.readouterr()
    assert main(["train", str(arch_file), "--out", str(out), "--backbone-weights", str(arch_run / "backbone.pt"),
                 *common]) == 0
    n = len(build_detector(load_architecture(arch_file)).backbone.body.state_dict())
    assert f"{n}/{n}" in capsys.readouterr().out
    wider = replace(load_architecture(arch_file), structure=load_architecture(arch_file).structure.scaled(2.0))
    bad_out = work / "train-mismatch"
    assert main(["train", str(wider.save(work / "wider.json")), "--out", str(bad_out),
                 "--backbone-weights", str(arch_run / "backbone.pt"), *common]) == 2
    assert "shape" in capsys.readouterr().err and not bad_out.exists()
