"""Exported detectors (TorchScript, torch.export, ONNX) give the eager detector's detections on the same images.

Two architectures: the released preset at 1/8 width (``tiny_arch``) and a searched-style sample of the
tiny trinity structure with skip, sep, conv and grouped inverted-residual ops. Their weights are random
(``spread_scores``: scores that differ, so the comparison does not hinge on how ties sort).

Stated tolerances: labels equal; boxes within 1e-3 px and scores within 1e-4 (ONNX runs other
kernels than PyTorch); TorchScript and the ExportedProgram run PyTorch's own kernels, so within 1e-5.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch

from hitdet.architecture import Architecture
from hitdet.builder import build_detector
from hitdet.cli import main
from hitdet.errors import UserError
from hitdet.exporting import (
    export_exported_program,
    export_onnx,
    export_torchscript,
    load_exported_program,
    load_torchscript,
    onnx_detections,
    onnx_session,
)
from hitdet.weights.detector import save_weights
from tests.helpers import SETTINGS, TINY, spread_scores, tiny_arch

pytestmark = pytest.mark.filterwarnings("ignore:.*always returns a .Losses, Detections. tuple:UserWarning")

ONNX_BOX_ATOL, ONNX_SCORE_ATOL = 1e-3, 1e-4
SCRIPT_ATOL = 1e-5
SIZE = (64, 80)  # the ONNX file's fixed input size (H, W)
SEARCHED_OPS = ["skip", "sep_k3", "sep_k5_d3", "conv_k1", "ir_k3_e1_g2", "ir_k5_e6_d2", "conv_k3_d2", "ir_k3_e3"]


def searched_arch() -> Architecture:
    """A sample of the tiny trinity space that is not the preset: ops cycle through SEARCHED_OPS."""
    ops = itertools.cycle(SEARCHED_OPS)
    return Architecture.from_sample({label: next(ops) for label in TINY.labels()}, TINY, SETTINGS, name="searched")


ARCHS = {"preset": tiny_arch, "searched": searched_arch}


def images(count: int, size: tuple[int, int], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *size, generator=gen) for _ in range(count)]


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], box_atol: float, score_atol: float):
    assert len(want["boxes"]) > 0, "the eager detector found nothing: the comparison would be empty"
    assert got["boxes"].shape == want["boxes"].shape
    assert torch.equal(got["labels"].long(), want["labels"].long())
    torch.testing.assert_close(got["boxes"].float(), want["boxes"], atol=box_atol, rtol=0)
    torch.testing.assert_close(got["scores"].float(), want["scores"], atol=score_atol, rtol=0)


@pytest.fixture(scope="module", params=sorted(ARCHS))
def detector(request: pytest.FixtureRequest) -> tuple[Architecture, torch.nn.Module]:
    torch.manual_seed(0)
    arch = ARCHS[request.param]()
    return arch, spread_scores(build_detector(arch), seed=1)


def test_searched_arch_has_the_ops_it_claims() -> None:
    used = set(searched_arch().choices.values())
    assert used == set(SEARCHED_OPS)


def test_torchscript_matches_eager(detector: tuple[Architecture, torch.nn.Module], tmp_path: Path) -> None:
    arch, model = detector
    path = export_torchscript(model, tmp_path / "detector.pt", arch)
    scripted, saved_arch = load_torchscript(path)
    assert saved_arch == arch.to_dict()
    batch = images(2, SIZE, seed=2) + images(1, (72, 56), seed=3)  # any sizes, in one list
    with torch.no_grad():
        want = model(batch)
        _, got = scripted(batch)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w, SCRIPT_ATOL, SCRIPT_ATOL)


def test_exported_program_matches_eager(detector: tuple[Architecture, torch.nn.Module], tmp_path: Path) -> None:
    from torchvision.ops import boxes as box_ops
    from torchvision.ops import poolers

    originals = box_ops.batched_nms, poolers._multiscale_roi_align
    arch, model = detector
    path = export_exported_program(model, tmp_path / "detector.pt2", SIZE, arch)
    assert (box_ops.batched_nms, poolers._multiscale_roi_align) == originals  # torchvision is left as it was
    program, saved_arch, size = load_exported_program(path)
    assert saved_arch == arch.to_dict() and size == SIZE
    exported = program.module()
    for image in images(3, SIZE, seed=4):
        with torch.no_grad():
            want = model([image])[0]
            got = exported([image])[0]
        assert_same(got, want, SCRIPT_ATOL, SCRIPT_ATOL)
    with pytest.raises(Exception, match="(?i)guard|size|shape"):  # its size is fixed at export
        exported(images(1, (SIZE[0] + 8, SIZE[1]), seed=5))


def test_onnx_matches_eager(detector: tuple[Architecture, torch.nn.Module], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install hitdet[export])")
    arch, model = detector
    path = export_onnx(model, tmp_path / "detector.onnx", SIZE, arch)
    session = onnx_session(path)
    for image in images(3, SIZE, seed=4):
        with torch.no_grad():
            want = model([image])[0]
        assert_same(onnx_detections(session, image), want, ONNX_BOX_ATOL, ONNX_SCORE_ATOL)
    onnx = pytest.importorskip("onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["architecture"]) == arch.to_dict()
    assert props["input_size"] == "64x80"


def test_onnx_file_takes_only_its_fixed_size(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install hitdet[export])")
    torch.manual_seed(0)
    path = export_onnx(build_detector(tiny_arch()), tmp_path / "d.onnx", SIZE)
    session = onnx_session(path)
    with pytest.raises(Exception, match="(?i)dimension"):
        onnx_detections(session, images(1, (SIZE[0] + 8, SIZE[1]), seed=5)[0])


def test_one_stage_detector_scripts_exports_and_refuses_onnx(tmp_path: Path) -> None:
    torch.manual_seed(0)
    arch = dataclasses.replace(tiny_arch(), detector_type="retinanet")
    model = build_detector(arch).eval()
    model.score_thresh = 0.0  # random weights score below RetinaNet's 0.05: keep every box to compare
    scripted, _ = load_torchscript(export_torchscript(model, tmp_path / "retinanet.pt", arch))
    batch = images(2, SIZE, seed=8)
    with torch.no_grad():
        for g, w in zip(scripted(batch)[1], model(batch), strict=True):
            assert_same(g, w, SCRIPT_ATOL, SCRIPT_ATOL)
    program, _, _ = load_exported_program(export_exported_program(model, tmp_path / "retinanet.pt2", SIZE, arch))
    with torch.no_grad():
        for image in images(2, SIZE, seed=9):
            assert_same(program.module()([image])[0], model([image])[0], SCRIPT_ATOL, SCRIPT_ATOL)
    with pytest.raises(UserError, match="only the two-stage detector"):
        export_onnx(model, tmp_path / "retinanet.onnx", SIZE, arch)
    assert not (tmp_path / "retinanet.onnx").exists()


def test_cli_export_writes_the_trained_weights_and_keeps_an_existing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    arch = tiny_arch()
    arch.save(tmp_path / "arch.json")
    model = spread_scores(build_detector(arch), seed=6)
    save_weights(tmp_path / "w.pt", model.state_dict())
    out = tmp_path / "detector.pt"
    args = ["export", str(tmp_path / "arch.json"), "--weights", str(tmp_path / "w.pt"), "--out", str(out)]
    assert main(args) == 0
    scripted, _ = load_torchscript(out)
    batch = images(2, SIZE, seed=7)
    with torch.no_grad():
        for g, w in zip(scripted(batch)[1], model(batch), strict=True):
            assert_same(g, w, SCRIPT_ATOL, SCRIPT_ATOL)
    before = out.read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "file exists" in err[0] and "--force" in err[0]
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json", "detector.pt", "w.pt"]
    capsys.readouterr()
    pt2 = tmp_path / "detector.pt2"
    assert main([*args[:-1], str(pt2), "--format", "exported-program", "--input-size", "64x80"]) == 0
    assert "ExportedProgram" in capsys.readouterr().out
    program, saved_arch, size = load_exported_program(pt2)
    assert saved_arch == arch.to_dict() and size == (64, 80)
    with torch.no_grad():
        for image in images(2, SIZE, seed=7):
            assert_same(program.module()([image])[0], model([image])[0], SCRIPT_ATOL, SCRIPT_ATOL)


@pytest.mark.parametrize(("extra", "message"), [
    (["--format", "onnx", "--opset", "10"], "opset 11 or later"),
    (["--out", "{tmp}"], "is a folder"),
    (["--weights", "{tmp}/missing.pt"], "weights file not found"),
])
def test_cli_export_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    tiny_arch().save(tmp_path / "arch.json")
    save_weights(tmp_path / "w.pt", build_detector(tiny_arch()).state_dict())
    args = ["export", str(tmp_path / "arch.json"), "--weights", str(tmp_path / "w.pt"),
            "--out", str(tmp_path / "d.onnx"), *(a.replace("{tmp}", str(tmp_path)) for a in extra)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json", "w.pt"]
