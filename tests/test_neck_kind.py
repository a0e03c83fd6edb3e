"""A new neck kind is one file plus a registration (search_spaces.kinds): a toy neck, defined and registered here,
goes through the architecture JSON, the fixed builder, the analytic costs, ``hitdet info``, the picture and the
search space like the built-in PANet neck, with nothing else changed."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hitdet.architecture import Architecture, ArchitectureError, from_dict, load_architecture
from hitdet.builder import build_detector
from hitdet.cli import main
from search_spaces.costs import detector_cost
from search_spaces.kinds import NECKS, NeckKind, register_neck
from search_spaces.ops import op_cost
from search_spaces.positions import Position
from tests.helpers import SETTINGS, TINY

# ---------------------------------------------------------------- the toy kind: all a new neck needs


class TopDownNeck(nn.Module):
    """A searched lateral cell per level (C_i -> channels), then a plain top-down sum: no other layer."""

    def __init__(self, in_channels: Sequence[int], channels: int, make_block, extra_level: bool = True) -> None:
        super().__init__()
        self.out_channels = channels
        self.extra_level = extra_level
        self.cells = nn.ModuleList(make_block(f"neck/in{i + 1}", c, channels, 1) for i, c in enumerate(in_channels))

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        levels = [cell(feats[i]) for i, cell in enumerate(self.cells)]
        outs = [levels[-1]]
        for x in reversed(levels[:-1]):
            outs.insert(0, x + F.interpolate(outs[0], size=x.shape[-2:], mode="nearest"))
        result = OrderedDict((str(i), o) for i, o in enumerate(outs))
        if self.extra_level:
            result["pool"] = F.max_pool2d(outs[-1], 1, 2)
        return result


class TopDown(NeckKind):
    name = "toy-top-down"
    module_class = TopDownNeck

    def cells(self, num_levels: int) -> list[str]:
        return [f"in{i}" for i in range(1, num_levels + 1)]

    def positions(self, in_channels: Sequence[int], channels: int,
                  sizes: Sequence[tuple[int, int]]) -> list[Position]:
        return [Position(f"neck/in{i + 1}", "neck", c, channels, 1, h, w)
                for i, (c, (h, w)) in enumerate(zip(in_channels, sizes, strict=True))]


@pytest.fixture
def toy() -> Iterator[NeckKind]:
    kind = register_neck(TopDown())  # the registration
    yield kind
    NECKS.pop(kind.name)


# ---------------------------------------------------------------- what it gets


OPS = ("ir_k3_e3", "sep_k5_d2", "conv_k1", "skip")
SIZE = (64, 96)


def toy_arch(detector_type: str = "faster_rcnn") -> Architecture:
    structure = replace(TINY, neck_type="toy-top-down", head_blocks=4)
    sample = {label: OPS[i % len(OPS)] for i, label in enumerate(structure.labels())}
    return Architecture.from_sample(sample, structure, SETTINGS, name="toy", detector_type=detector_type)


def level_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """C1..C4 of a stride-2 stem and four stride-2 stages: ceil(size / 4, 8, 16, 32)."""
    return [(-(-height // s), -(-width // s)) for s in (4, 8, 16, 32)]


@pytest.mark.parametrize("detector_type", ["faster_rcnn", "retinanet"])
def test_a_toy_neck_saves_loads_builds_and_is_costed(toy: NeckKind, detector_type: str, tmp_path: Path) -> None:
    arch = toy_arch(detector_type)
    assert arch.structure.neck_labels() == ["neck/in1", "neck/in2", "neck/in3", "neck/in4"]

    path = arch.save(tmp_path / "toy.json")
    data = json.loads(path.read_text())
    assert data["neck"]["type"] == "toy-top-down" and len(data["neck"]["cells"]) == 4
    assert load_architecture(path) == arch

    model = build_detector(path)
    cost = detector_cost(arch.structure, arch.sample(), SETTINGS.num_classes, SIZE, 20, detector_type)
    assert cost["total"].params == sum(p.numel() for p in model.parameters())  # counted, not built: equal
    assert cost["neck"].params == sum(p.numel() for p in model.backbone.neck.parameters())
    st = arch.structure
    by_hand = sum(op_cost(arch.choices[f"neck/in{i + 1}"], c, st.neck_channels, 1, h, w).macs
                  for i, (c, (h, w)) in enumerate(zip(st.feature_channels(), level_sizes(*SIZE), strict=True)))
    assert cost["neck"].macs == by_hand  # the laterals at their levels' sizes, and no fixed layer

    model.eval()
    with torch.no_grad():
        (detections,) = model([torch.rand(3, *SIZE)])
    assert set(detections) == {"boxes", "labels", "scores"}
    model.train()
    losses = model([torch.rand(3, *SIZE)], [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]),
                                             "labels": torch.tensor([1])}])
    assert all(torch.isfinite(v) for v in losses.values())


def test_info_and_the_picture_take_the_toy_neck(toy: NeckKind, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    from hitdet.plot import plot_architecture

    arch = toy_arch()
    path = arch.save(tmp_path / "toy.json")
    assert main(["info", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    size = arch.settings.padded_size()
    cost = detector_cost(arch.structure, arch.sample(), SETTINGS.num_classes, size,
                         SETTINGS.rpn_post_nms_top_n_test)
    assert printed["params"]["total"] == cost["total"].params and printed["macs"]["neck"] == cost["neck"].macs
    assert plot_architecture(arch, tmp_path / "toy.png").stat().st_size > 0


def test_the_search_space_of_the_toy_neck(toy: NeckKind) -> None:
    pytest.importorskip("nni.nas.space")
    from nni.nas.space import model_context

    from search_spaces import TrinitySpace

    arch = toy_arch()
    ops = {"backbone": ["ir_k3_e3", "skip"], "neck": ["sep_k5_d2", "conv_k1"], "head": ["ir_k3_e3", "skip"]}
    space = TrinitySpace(arch.structure, ops, SETTINGS, input_size=SIZE, num_rois=20)
    assert list(space.candidate_macs()) == arch.structure.labels()
    assert space.search_space_choices()["neck/in3"] == ops["neck"]
    sample = {label: ops[label.split("/")[0]][i % 2] for i, label in enumerate(arch.structure.labels())}
    with model_context(sample):
        fixed = TrinitySpace(arch.structure, ops, SETTINGS, input_size=SIZE, num_rois=20)
    built = build_detector(Architecture.from_sample(sample, arch.structure, SETTINGS))
    assert {k: v.shape for k, v in fixed.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}


def test_an_unknown_neck_type_is_one_clear_error(toy: NeckKind) -> None:
    data = toy_arch().to_dict()
    data["neck"]["type"] = "nope"
    with pytest.raises(ArchitectureError, match=r"toy.json: neck.type: unknown neck type 'nope' \(known: panet, "
                                                r"toy-top-down\)"):
        from_dict(data, "toy.json")
    data["neck"]["type"] = "toy-top-down"
    data["neck"]["cells"] = data["neck"]["cells"][:3]
    with pytest.raises(ArchitectureError, match=r"neck.cells: expected 4 ops, got 3"):
        from_dict(data, "toy.json")
