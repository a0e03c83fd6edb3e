"""The NNI search spaces: labels, op lists, conversions sample <-> architecture JSON, MACs, HPO export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from hitdet.architecture import Architecture, from_dict, load_architecture
from hitdet.builder import build_detector
from search_spaces import (
    OP_NAMES,
    BackboneSpace,
    DetectorStructure,
    HeadSpace,
    NeckSpace,
    SpaceError,
    TrinitySpace,
    detector_hpo_search_space,
    sample_from_hpo,
    write_hpo_search_space,
)
from search_spaces.hpo import hpo_search_space
from tests.helpers import SETTINGS, TINY

nni_space = pytest.importorskip("nni.nas.space")
model_context = nni_space.model_context

OPS3 = {"backbone": ["ir_k3_e3", "skip", "ir_k5_e1_g2"], "neck": ["sep_k3", "conv_k1"], "head": ["ir_k3_e1", "skip"]}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def layer_choices(space: nn.Module) -> dict[str, list[str]]:
    """What NNI itself sees: label -> candidate values of every mutable in the space."""
    return {label: list(m.values) for label, m in space.simplify().items()}


def test_component_spaces_labels_and_per_component_op_lists() -> None:
    space = TrinitySpace(TINY, OPS3, SETTINGS)
    seen = layer_choices(space)
    assert list(seen) == TINY.labels()  # stable order: backbone, neck, head
    assert len(seen) == 10 + 8 + 4
    for label, ops in seen.items():
        assert ops == OPS3[label.split("/")[0]], label
    assert space.search_space_choices() == seen
    comps = space.component_spaces()
    assert isinstance(comps["backbone"], BackboneSpace)
    assert list(layer_choices(comps["backbone"])) == TINY.backbone_labels()
    assert isinstance(comps["neck"], NeckSpace) and list(layer_choices(comps["neck"])) == TINY.neck_labels()
    assert isinstance(comps["head"], HeadSpace) and list(layer_choices(comps["head"])) == TINY.head_labels()
    # one list for every component (the Table 4 ablation); missing dict keys mean the whole pool
    shared = TrinitySpace(TINY, ["sep_k3", "skip"], SETTINGS)
    assert all(ops == ["sep_k3", "skip"] for ops in layer_choices(shared).values())
    partial = HeadSpace(TINY, {"neck": ["sep_k3"]})
    assert all(ops == list(OP_NAMES) for ops in layer_choices(partial).values())


def test_depth_settings_and_bad_op_lists() -> None:
    assert len(BackboneSpace(DetectorStructure().scaled(0.125), ["skip"]).labels()) == 20
    assert len(BackboneSpace(DetectorStructure().scaled(0.125), ["skip"], half_depth=True).labels()) == 10
    custom = DetectorStructure().scaled(0.125).with_depths((1, 2, 3, 1))
    assert BackboneSpace(custom, ["skip"]).labels() == custom.backbone_labels()
    for bad, msg in [
        (["ir_k3_e3", "nope"], "unknown op"),
        ([], "empty"),
        (["skip", "skip"], "duplicate"),
        ({"backbon": ["skip"]}, "unknown component"),
        ("skip", "list of op names"),
    ]:
        with pytest.raises(SpaceError, match=msg):
            BackboneSpace(TINY, bad)


def random_samples(space: TrinitySpace, n: int) -> list[dict[str, str]]:
    """NNI's own random samples (``ModelSpace.random`` returns a model; the mutables give the dict)."""
    samples = []
    for seed in range(n):
        rs, sample = np.random.RandomState(seed), {}
        for mutable in space.simplify().values():
            mutable.random(sample, rs)
        samples.append(sample)
    return samples


def first_sample(space: nn.Module) -> dict[str, str]:
    return {label: m.values[0] for label, m in space.simplify().items()}


def test_sample_to_architecture_to_detector_matches_space_fixed_model() -> None:
    space = TrinitySpace(TINY, OPS3, SETTINGS)
    for sample in random_samples(space, 3):
        with model_context(sample):
            fixed = TrinitySpace(TINY, OPS3, SETTINGS)
        assert not fixed.simplify(), "a model built in model_context has no choices left"
        arch = Architecture.from_sample(sample, space.structure, space.settings)
        # through the JSON text, as a user would store it
        arch = from_dict(json.loads(json.dumps(arch.to_dict())), "round trip")
        assert arch.sample() == sample
        built = build_detector(arch)
        assert shapes(fixed) == shapes(built)  # same modules at the same paths
        assert n_params(fixed) == n_params(built)
        pairs = list(zip(fixed.modules(), built.modules(), strict=True))
        assert all(isinstance(f, type(b)) for f, b in pairs)  # a space class subclasses its skeleton
        frozen = space.freeze(sample)
        assert n_params(frozen) == n_params(built)
        # the weights carry over: the fixed space model's state dict loads into the built detector
        built.load_state_dict(fixed.state_dict())


def test_fixed_model_runs_and_space_dry_run_trains() -> None:
    space = TrinitySpace(TINY, OPS3, SETTINGS)
    images = [torch.rand(3, 64, 80)]
    targets = [{"boxes": torch.tensor([[5.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])}]
    losses = space(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    with model_context(first_sample(space)):
        fixed = TrinitySpace(TINY, OPS3, SETTINGS)
    fixed.eval()
    with torch.no_grad():
        out = fixed(images)
    assert out[0]["boxes"].shape[1] == 4


def test_preset_is_a_sample_of_the_default_space() -> None:
    preset = load_architecture("hit-detector")
    sample = preset.sample()
    with torch.device("meta"):  # the default space holds ~0.7G parameters: shapes only
        default = TrinitySpace()
        assert default.check_contains(sample) is None
        seen = layer_choices(default)
        assert len(seen) == 32 and all(ops == list(OP_NAMES) for ops in seen.values())
        assert default.validate_sample(sample) == sample
        with model_context(sample):
            fixed = TrinitySpace()
        built = build_detector(preset)
    assert shapes(fixed) == shapes(built)
    assert n_params(fixed) == n_params(built)
    # and back: the default space's sample gives the preset's architecture JSON
    back = Architecture.from_sample(sample, default.structure, default.settings, name="hit-detector",
                                    metadata=preset.metadata)
    assert back.to_dict() == preset.to_dict()


def test_bad_samples_are_clear_errors() -> None:
    space = TrinitySpace(TINY, OPS3, SETTINGS)
    sample = first_sample(space)
    with pytest.raises(SpaceError, match="not a candidate"):
        with model_context({**sample, "neck/out2": "ir_k7_e6"}):
            TrinitySpace(TINY, OPS3, SETTINGS)
    missing = dict(sample)
    del missing["head/b3"]
    with pytest.raises(SpaceError, match="head/b3"):
        with model_context(missing):
            TrinitySpace(TINY, OPS3, SETTINGS)
    with pytest.raises(SpaceError, match="not a candidate"):
        space.validate_sample({**sample, "backbone/s1_b0": "conv_k5"})


# ----------------------------------------------------------------------------- MACs


class ConvMacs:
    """Counts the MACs of every Conv2d/Linear inside a module from the shapes it really sees."""

    def __init__(self, module: nn.Module) -> None:
        self.macs = 0
        self.handles = [m.register_forward_hook(self.hook) for m in module.modules() if isinstance(m, nn.Conv2d)]

    def hook(self, module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        k = module.kernel_size[0] * module.kernel_size[1]
        self.macs += output.numel() * (module.in_channels // module.groups) * k

    def close(self) -> int:
        for h in self.handles:
            h.remove()
        return self.macs


def measured_position_macs(fixed: TrinitySpace, image_hw: tuple[int, int], num_rois: int) -> dict[str, int]:
    """Run the fixed components on one image / ``num_rois`` RoIs and measure each position's MACs."""
    body, neck, head = fixed.backbone.body, fixed.backbone.neck, fixed.roi_heads.box_head
    modules = dict(zip(TINY.backbone_labels(), [b for stage in body.stages for b in stage], strict=True))
    modules.update(zip(TINY.neck_labels(), [*neck.laterals, *neck.outs], strict=True))
    modules.update(zip(TINY.head_labels(), head.blocks, strict=True))
    counters = {label: ConvMacs(m) for label, m in modules.items()}
    with torch.no_grad():
        neck(body(torch.rand(1, 3, *image_hw)))
        head(torch.rand(num_rois, TINY.neck_channels, TINY.roi_size, TINY.roi_size))
    return {label: c.close() for label, c in counters.items()}


@pytest.mark.parametrize("image_hw", [(64, 96), (70, 90)])
def test_candidate_macs_equal_measured_macs(image_hw: tuple[int, int]) -> None:
    ops = {"backbone": ["ir_k5_e3", "skip", "conv_k3_d2", "ir_k3_e1_g2"], "neck": ["sep_k5_d3", "skip", "conv_k1"],
           "head": ["ir_k3_e6", "sep_k3"]}
    space = TrinitySpace(TINY, ops, SETTINGS, input_size=image_hw, num_rois=5)
    table = space.candidate_macs()
    assert list(table) == TINY.labels()
    assert all(list(per_op) == ops[label.split("/")[0]] for label, per_op in table.items())
    assert all(isinstance(v, float) for per_op in table.values() for v in per_op.values())
    # every op of each component appears at every one of its positions over these samples
    samples = [{label: ops[label.split("/")[0]][i % len(ops[label.split("/")[0]])] for label in table}
               for i in range(4)]
    for sample in samples:
        with model_context(sample):
            fixed = TrinitySpace(TINY, ops, SETTINGS, input_size=image_hw, num_rois=5)
        measured = measured_position_macs(fixed, image_hw, 5)
        for label, op in sample.items():
            assert table[label][op] == measured[label], (label, op)
    # the component spaces report the same numbers for their own positions
    for comp in space.component_spaces().values():
        mine = comp.candidate_macs()
        assert mine == {label: table[label] for label in mine}


def test_neck_space_behind_another_backbone_reports_its_macs() -> None:
    channels, strides = [8, 16, 24], [4, 8, 16]
    neck = NeckSpace(None, ["sep_k3", "conv_k1"], in_channels=channels, channels=16, strides=strides,
                     input_size=(64, 96))
    assert neck.labels() == ["neck/lateral1", "neck/lateral2", "neck/lateral3", "neck/out1", "neck/out2", "neck/out3"]
    table = neck.candidate_macs()
    feats = [torch.rand(1, c, 64 // s, 96 // s) for c, s in zip(channels, strides, strict=True)]
    for op in ["sep_k3", "conv_k1"]:
        with model_context(dict.fromkeys(neck.labels(), op)):
            fixed = NeckSpace(None, ["sep_k3", "conv_k1"], in_channels=channels, channels=16, strides=strides)
        counters = {label: ConvMacs(m) for label, m in zip(neck.labels(), [*fixed.laterals, *fixed.outs], strict=True)}
        with torch.no_grad():
            out = fixed(feats)
        assert list(out) == ["0", "1", "2", "pool"]
        for label, c in counters.items():
            assert table[label][op] == c.close(), (label, op)


def test_default_space_macs_scale_with_rois_and_input() -> None:
    with torch.device("meta"):
        head = HeadSpace(num_rois=1000)
        head2 = HeadSpace(num_rois=2000)
        bb = BackboneSpace()
        bb_small = BackboneSpace(input_size=(400, 608))
    a, b = head.candidate_macs(), head2.candidate_macs()
    assert all(b[label][op] == 2 * a[label][op] for label in a for op in a[label])
    # half the input side, a quarter of the MACs (up to the odd sizes of the deeper levels)
    ratio = bb.candidate_macs()["backbone/s1_b0"]["ir_k3_e3"] / bb_small.candidate_macs()["backbone/s1_b0"]["ir_k3_e3"]
    assert 3.9 < ratio < 4.1
    assert bb.candidate_macs()["backbone/s1_b1"]["skip"] == 0.0  # identity at stride 1


# ----------------------------------------------------------------------------- HPO export


def test_hpo_search_space_export(tmp_path) -> None:
    space = TrinitySpace(TINY, OPS3, SETTINGS)
    exported = space.hpo_search_space()
    assert exported == detector_hpo_search_space(TINY, OPS3)  # the same without building the space
    assert exported == hpo_search_space({label: m.values for label, m in space.simplify().items()})
    assert list(exported) == TINY.labels()
    assert exported["neck/lateral1"] == {"_type": "choice", "_value": ["sep_k3", "conv_k1"]}
    path = write_hpo_search_space(tmp_path / "space.json", space)
    assert json.loads(path.read_text()) == exported
    # what the tuner hands back is a sample of the space, and a valid architecture
    params = {label: spec["_value"][-1] for label, spec in exported.items()}
    sample = sample_from_hpo(params)
    assert space.check_contains(sample) is None
    Architecture.from_sample(sample, TINY, SETTINGS)
    assert len(detector_hpo_search_space()) == 32
    assert hpo_search_space(exported) == exported  # exporting an export changes nothing
    # the command line: python -m search_spaces.hpo OUT --half-depth --neck-ops ...
    from search_spaces.hpo import main

    assert main([str(tmp_path / "cli.json"), "--half-depth", "--ops", "skip,sep_k3", "--neck-ops", "conv_k1"]) == 0
    cli = json.loads((tmp_path / "cli.json").read_text())
    assert len(cli) == 22 and cli["neck/out4"]["_value"] == ["conv_k1"]
    assert cli["head/b0"]["_value"] == ["skip", "sep_k3"]


def test_import_filters_nni_warnings_and_builder_needs_no_nni() -> None:
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error', RuntimeWarning)\n"
        "import search_spaces, hitdet.builder\n"
        "assert 'nni' not in sys.modules, 'search_spaces must not import NNI eagerly'\n"
        "search_spaces.TrinitySpace\n"
        "assert 'nni' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
