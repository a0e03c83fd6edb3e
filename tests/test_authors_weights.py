"""The authors' released backbone layout (HitDet.pytorch's FBNet 'fbnet_hit') converts into the preset's backbone.

The checkpoint here is built from their layout as their code defines it, independently of HitDet's modules:
``layers.0`` a ConvBNReLU stem with a conv bias; ``layers.1-21`` MBBlocks (conv1: 1x1 to in x expansion,
conv2: depthwise k x k, conv3: 1x1 projection, each ``.conv`` + ``.bn``); ``layers.22`` a 1x1 ConvBNReLU.
Genotypes, channels and expansions are those of their ``fbnet_hit`` arch; random values, ``module.`` prefixes
and a classifier as in a DataParallel ImageNet checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hitdet.architecture import load_architecture
from hitdet.cli import main
from hitdet.pretrain.model import architecture_target
from hitdet.weights.authors import FBNET_HIT_OPS, architecture_ops, convert_authors_backbone, read_authors_state_dict
from hitdet.weights.backbone import load_backbone_weights, read_backbone_weights

# Their fbnet_hit: genotype and output channels per layer (mmdet/models/backbones/fbnet_arch.py).
GENOTYPES = ["conv3",
             "ir_k3_e3", "ir_k3_e3", "ir_k3_e3_r2", "ir_k3_e3",
             "ir_k5_e6", "ir_k5_e6", "ir_k3_e3", "ir_k3_e3",
             "ir_k7_e6", "ir_k5_e6", "ir_k5_e6_r2", "ir_k5_e3",
             "ir_k5_e6", "ir_k5_e6_r2", "ir_k5_e6", "ir_k5_e6_r2",
             "ir_k7_e6", "ir_k5_e6", "ir_k5_e6_r2", "ir_k5_e6",
             "ir_k3_e3", "conv1"]
OUT_CHANNELS = [16, 48, 48, 48, 48, 96, 96, 96, 96, 184, 184, 184, 184, 256, 256, 256, 256,
                352, 352, 352, 352, 1024, 2048]


def _bn(prefix: str, c: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": torch.rand(c, generator=gen) + 0.5, f"{prefix}.bias": torch.randn(c, generator=gen),
            f"{prefix}.running_mean": torch.randn(c, generator=gen),
            f"{prefix}.running_var": torch.rand(c, generator=gen) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(1000)}


def authors_state_dict(seed: int = 0, prefix: str = "module.") -> dict[str, torch.Tensor]:
    """A state dict named and shaped as their FBNet('fbnet_hit') saved from DataParallel, plus a classifier."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    cin = 3
    for i, (geno, cout) in enumerate(zip(GENOTYPES, OUT_CHANNELS, strict=True)):
        p = f"layers.{i}"
        if geno in ("conv3", "conv1"):  # ConvBNReLU; the stem's conv has a bias (bias=True in FBNet.build_backbone)
            k = 3 if geno == "conv3" else 1
            state[f"{p}.conv.weight"] = torch.randn(cout, cin, k, k, generator=gen) * 0.1
            if i == 0:
                state[f"{p}.conv.bias"] = torch.randn(cout, generator=gen)
            state |= _bn(f"{p}.bn", cout, gen)
        else:  # MBBlock: mid = in_channels * expansion
            k, e = (int(v) for v in re.match(r"ir_k(\d)_e(\d)", geno).groups())
            mid = cin * e
            state[f"{p}.conv1.conv.weight"] = torch.randn(mid, cin, 1, 1, generator=gen) * 0.1
            state |= _bn(f"{p}.conv1.bn", mid, gen)
            state[f"{p}.conv2.conv.weight"] = torch.randn(mid, 1, k, k, generator=gen) * 0.1
            state |= _bn(f"{p}.conv2.bn", mid, gen)
            state[f"{p}.conv3.conv.weight"] = torch.randn(cout, mid, 1, 1, generator=gen) * 0.1
            state |= _bn(f"{p}.conv3.bn", cout, gen)
        cin = cout
    state["classifier.weight"] = torch.randn(1000, 2048, generator=gen) * 0.01
    state["classifier.bias"] = torch.zeros(1000)
    return {prefix + k: v for k, v in state.items()}


@pytest.fixture(scope="module")
def preset():
    arch = load_architecture("hit-detector")
    return arch, architecture_target(arch)


def test_the_preset_is_fbnet_hit(preset) -> None:
    arch, _ = preset
    translated = [g.replace("_r2", "_d2").replace("conv3", "conv_k3").replace("conv1", "conv_k1") for g in GENOTYPES]
    assert architecture_ops(arch) == translated == list(FBNET_HIT_OPS)


def test_every_tensor_lands_where_it_belongs(preset) -> None:
    arch, target = preset
    theirs = authors_state_dict()
    backbone = target.build_backbone()
    conv = convert_authors_backbone(read_state(theirs), backbone, architecture_ops(arch))
    backbone.load_state_dict(conv.state_dict, strict=True)
    ours = backbone.state_dict()
    assert conv.left_out == ["classifier.weight", "classifier.bias"] and conv.other_ops == []
    assert conv.folded_biases == ["layers.0.conv.bias"]
    assert conv.tensors == len(theirs) - 2
    # spot checks by hand: an MBBlock's three convolutions, the tail's 1x1 conv, a BN in the middle
    t = {k.removeprefix("module."): v for k, v in theirs.items()}
    assert torch.equal(ours["stages.0.0.body.0.weight"], t["layers.1.conv1.conv.weight"])
    assert torch.equal(ours["stages.2.2.body.3.weight"], t["layers.11.conv2.conv.weight"])
    assert torch.equal(ours["stages.3.3.body.6.weight"], t["layers.20.conv3.conv.weight"])
    assert torch.equal(ours["stages.2.5.body.4.running_var"], t["layers.14.conv2.bn.running_var"])
    assert torch.equal(ours["tail.0.body.7.bias"], t["layers.21.conv3.bn.bias"])
    assert torch.equal(ours["tail.1.body.0.weight"], t["layers.22.conv.weight"])
    assert torch.equal(ours["tail.1.body.1.weight"], t["layers.22.bn.weight"])
    assert torch.equal(ours["stem.body.0.weight"], t["layers.0.conv.weight"])
    assert len(ours) == len(t) - 2 - 1  # all of theirs but the classifier and the folded bias


def test_the_stem_computes_what_theirs_computes(preset) -> None:
    """Their stem: conv with bias, BN, ReLU. Ours has no conv bias: the converted running mean absorbs it."""
    _, target = preset
    t = {k.removeprefix("module."): v for k, v in authors_state_dict(seed=3).items()}
    backbone = target.build_backbone()
    backbone.load_state_dict(convert_authors_backbone(t, backbone).state_dict)
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    y = F.conv2d(x, t["layers.0.conv.weight"], t["layers.0.conv.bias"], stride=2, padding=1)
    y = F.batch_norm(y, t["layers.0.bn.running_mean"], t["layers.0.bn.running_var"], t["layers.0.bn.weight"],
                     t["layers.0.bn.bias"], training=False, eps=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(backbone.stem.eval()(x), F.relu(y), atol=1e-5, rtol=1e-5)
        # in training mode the batch statistics remove a constant shift: same output with and without the bias
        train_theirs = F.batch_norm(F.conv2d(x, t["layers.0.conv.weight"], t["layers.0.conv.bias"], stride=2,
                                             padding=1), None, None, t["layers.0.bn.weight"], t["layers.0.bn.bias"],
                                    training=True, eps=1e-5)
        torch.testing.assert_close(backbone.stem.train()(x), F.relu(train_theirs), atol=1e-4, rtol=1e-4)


def read_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def test_cli_writes_a_backbone_file_that_train_loads(tmp_path: Path, preset, capsys) -> None:
    arch, _ = preset
    src = tmp_path / "fbhit_7747.pth"
    theirs = authors_state_dict(seed=5)
    torch.save({"state_dict": theirs, "epoch": 300}, src)
    out = tmp_path / "fbhit.pt"
    assert main(["convert-weights", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "left out 2 tensor(s)" in printed and "note:" not in printed and f"wrote {out}" in printed
    weights = read_backbone_weights(out)
    assert weights.kind == "architecture" and weights.metadata["source"]["converted_from"] == str(src)
    from hitdet.builder import build_detector

    detector = build_detector(arch)
    report = load_backbone_weights(detector, out, choices=arch.sample())  # strict: every tensor
    assert report.missing == [] and report.unexpected == []
    body = detector.backbone.body.state_dict()
    assert torch.equal(body["stages.1.1.body.3.weight"], theirs["module.layers.6.conv2.conv.weight"])
    # an existing --out is kept
    before = out.read_bytes()
    assert main(["convert-weights", str(src), "--out", str(out)]) == 2
    assert "file exists" in capsys.readouterr().err and out.read_bytes() == before


def _drop(state: dict, key: str) -> dict:
    return {k: v for k, v in state.items() if k != key}


def _reshape(state: dict, key: str) -> dict:
    return {**state, key: torch.zeros(7, *state[key].shape[1:])}


@pytest.mark.parametrize("make, message", [
    (lambda s: {k: v for k, v in s.items() if not k.startswith("module.layers.22.")},
     "has 23 blocks (layers.0-22), but layers.22 is missing"),
    (lambda s: {**s, "module.layers.23.conv.weight": torch.zeros(4, 2048, 1, 1)}, "but it has layers.23"),
    (lambda s: _reshape(s, "module.layers.9.conv2.conv.weight"),
     "layers.9.conv2.conv.weight has shape (7, 1, 7, 7), but stages.2.0.body.3.weight needs (576, 1, 7, 7)"),
    (lambda s: _drop(s, "module.layers.5.conv2.bn.running_var"), "layers.5.conv2.bn.running_var: missing"),
    (lambda s: {k: v for k, v in s.items() if ".conv3." not in k or not k.startswith("module.layers.4.")},
     "layers.4 (conv1.conv, conv1.bn, conv2.conv, conv2.bn) does not fit stages.0.3 (ir_k3_e3"),
    (lambda s: {"module.features.0.weight": torch.zeros(3)}, "not the authors' FBNet backbone layout"),
    (lambda s: {**s, "module.layers.3.se.fc.weight": torch.zeros(3)}, "layers.3.se.fc.weight: not a convolution"),
])
def test_what_does_not_fit_is_refused_with_one_line(tmp_path: Path, capsys, make, message) -> None:
    src = tmp_path / "theirs.pth"
    torch.save(make(authors_state_dict()), src)
    out = tmp_path / "out.pt"
    assert main(["convert-weights", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_another_width_is_refused(tmp_path: Path, capsys) -> None:
    small = load_architecture("hit-detector")
    import dataclasses

    small = dataclasses.replace(small, structure=small.structure.scaled(0.5))
    small.save(tmp_path / "half.json")
    torch.save(authors_state_dict(), tmp_path / "theirs.pth")
    assert main(["convert-weights", str(tmp_path / "theirs.pth"), "--arch", str(tmp_path / "half.json"),
                 "--out", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert "layers.0.conv.weight has shape (16, 3, 3, 3), but stem.body.0.weight needs (8, 3, 3, 3)" in err


def test_unreadable_inputs(tmp_path: Path, capsys) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["convert-weights", str(tmp_path / "junk.pth"), "--out", str(tmp_path / "o.pt")]) == 2
    assert "not a torch checkpoint" in capsys.readouterr().err
    assert main(["convert-weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["convert-weights", str(tmp_path / "junk.pth")]) == 2
    assert "--out: required" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()


def test_prefixes_are_stripped_as_their_loader_strips_them(tmp_path: Path) -> None:
    plain = authors_state_dict(prefix="")
    for name, state in (("bare", plain), ("dp", authors_state_dict()),
                        ("detector", {f"backbone.{k}": v for k, v in plain.items()} | {"neck.x": torch.zeros(1)})):
        torch.save(state, tmp_path / f"{name}.pth")
        got = read_authors_state_dict(tmp_path / f"{name}.pth")
        assert set(got) == set(plain), name  # a detector checkpoint: its backbone.* only


def test_a_checkpoint_with_pickled_objects_is_not_unpickled(tmp_path: Path, capsys) -> None:
    import argparse

    torch.save({"state_dict": authors_state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "t.pth")
    assert main(["convert-weights", str(tmp_path / "t.pth"), "--out", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be read safely" in err[0] and "argparse.Namespace" in err[0], err
