"""``hitdet info``: analytic figures vs counting the built model, output formats, and CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hitdet import build_detector
from hitdet.cli import main
from search_spaces.costs import detector_cost
from tests.helpers import tiny_arch


def macs(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*args)
    return counter.get_total_flops() // 2


def test_analytic_macs_agree_with_counting_the_model():
    arch = tiny_arch(width=0.25)
    model = build_detector(arch).eval()
    h, w, rois = 64, 96, 7
    cost = detector_cost(arch.structure, arch.sample(), arch.settings.num_classes, (h, w), rois)
    x = torch.randn(1, 3, h, w)
    feats = model.backbone.body(x)
    levels = model.backbone.neck(feats)
    c, r = arch.structure.neck_channels, arch.structure.roi_size
    roi_feats = torch.randn(rois, c, r, r)
    counted = {
        "backbone": macs(model.backbone.body, x),
        "neck": macs(model.backbone.neck, feats),
        "rpn": macs(model.rpn.head, list(levels.values())),
        "head": macs(lambda t: model.roi_heads.box_predictor(model.roi_heads.box_head(t)), roi_feats),
    }
    for component, value in counted.items():
        assert cost[component].macs == value, component
    assert cost["total"].macs == sum(counted.values())


def test_info_json(tmp_path, capsys):
    arch = tiny_arch()
    path = arch.save(tmp_path / "tiny.json")
    assert main(["info", str(path), "--json", "--input-size", "64x96", "--rois", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    cost = detector_cost(arch.structure, arch.sample(), arch.settings.num_classes, (64, 96), 5)
    keys = ["backbone", "neck", "rpn", "head", "total"]
    assert out == {"params": {k: cost[k].params for k in keys}, "macs": {k: cost[k].macs for k in keys}}


def test_info_table_on_preset(capsys):
    assert main(["info", "hit-detector", "--input-size", "800x1216", "--rois", "1000"]) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "800x1216" in out and "1000 RoIs" in out
    assert "27.12" in out.splitlines()[-1]


def test_info_defaults_to_the_architectures_own_input_size_and_rois(tmp_path, capsys):
    """A small run's architecture is priced at its own detector sizes, not at COCO's 800x1216."""
    from dataclasses import replace

    arch = tiny_arch()
    settings = replace(arch.settings, min_size=100, max_size=150, size_divisible=32, rpn_post_nms_top_n_test=37)
    arch = replace(arch, settings=settings)
    path = arch.save(tmp_path / "small.json")
    size = (128, 160)  # 100 and 150 rounded up to multiples of 32
    assert main(["info", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cost = detector_cost(arch.structure, arch.sample(), arch.settings.num_classes, size, 37)
    assert out["macs"]["total"] == cost["total"].macs
    assert main(["info", str(path)]) == 0
    assert "input 128x160, 37 RoIs" in capsys.readouterr().out
    # an explicit --input-size still wins
    assert main(["info", str(path), "--json", "--input-size", "64x96"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = detector_cost(arch.structure, arch.sample(), arch.settings.num_classes, (64, 96), 37)
    assert out["macs"]["total"] == expected["total"].macs


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "no such file"),
        ("{", "invalid JSON"),
        ('{"format": "hitdet-architecture", "version": 1}', "detector: missing"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path, content, message):
    path = tmp_path / "arch.json"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "hitdet", "info", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_bad_argument_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["info", "hit-detector", "--input-size", "big"])
    assert info.value.code == 2


def test_one_stage_costs_agree_with_counting_the_model():
    from dataclasses import replace

    arch = tiny_arch(width=0.25)
    arch = replace(arch, detector_type="retinanet", structure=replace(arch.structure, head_blocks=8))
    arch.choices.update({"head/b4": "sep_k3", "head/b5": "skip", "head/b6": "conv_k1", "head/b7": "ir_k3_e1"})
    model = build_detector(arch).eval()
    h, w = 64, 96
    cost = detector_cost(arch.structure, arch.sample(), arch.settings.num_classes, (h, w), 0, "retinanet")
    x = torch.randn(1, 3, h, w)
    levels = list(model.backbone(x).values())
    assert cost["head"].params == sum(p.numel() for p in model.head.parameters())
    assert cost["head"].macs == macs(model.head, levels)
    assert cost["rpn"].params == cost["rpn"].macs == 0
    assert cost["total"].params == sum(p.numel() for p in model.parameters())
    assert cost["total"].macs == macs(model.backbone, x) + cost["head"].macs
