"""The parts of benchmarks/search_vs_random.py: Kendall tau-b, the MAC-matched sampler, the
hand-made baseline's MACs, and the second synthetic dataset (glyphs). The harness itself is
not run here (it trains detectors for minutes)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hitdet.baselines import BaselineConfig, baseline_macs, build_baseline, match_width
from hitdet.errors import UserError
from hitdet.search_evidence import kendall_tau_b, label_choices, mac_matched_samples
from search_spaces.costs import detector_cost
from search_spaces.ops import OP_NAMES
from tests.helpers import SETTINGS, TINY

# ----------------------------------------------------------------------------- Kendall tau-b


def test_kendall_tau_b_hand_computed() -> None:
    # x increasing; y = 3 1 2 5 4: discordant pairs (3,1) (3,2) (5,4), the other 7 concordant -> (7-3)/10.
    assert kendall_tau_b([1, 2, 3, 4, 5], [3, 1, 2, 5, 4]) == pytest.approx(0.4)
    # ties: x = 1 1 2 3, y = 1 2 2 3. Of 6 pairs one is tied in x only, one in y only, 4 concordant:
    # tau_b = 4 / sqrt((6-1)(6-1)) = 0.8 (tau-a would be 4/6).
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        kendall_tau_b([1, 2], [1])


# ----------------------------------------------------------------------------- the MAC-matched sampler

SUB = {
    "backbone": ["ir_k3_e3", "ir_k5_e6", "sep_k3", "skip"],
    "neck": ["conv_k1", "sep_k3", "sep_k5_d3"],
    "head": ["skip", "conv_k3", "ir_k3_e6"],
}
SIZE, ROIS, CLASSES = (128, 160), 64, 5


def _macs(sample: dict[str, str]) -> float:
    return float(detector_cost(TINY, sample, CLASSES, SIZE, ROIS)["total"].macs)


def test_label_choices_take_each_component_sub_space() -> None:
    choices = label_choices(TINY.labels(), {"neck": SUB["neck"]}, OP_NAMES)
    assert set(choices) == set(TINY.labels())
    for label, ops in choices.items():
        assert ops == (SUB["neck"] if label.startswith("neck/") else list(OP_NAMES))


def test_mac_matched_samples_are_within_tolerance_and_in_the_sub_spaces() -> None:
    choices = label_choices(TINY.labels(), SUB, OP_NAMES)
    searched = {label: ops[0] for label, ops in choices.items()}
    target = _macs(searched)
    samples = mac_matched_samples(choices, _macs, target, 6, np.random.default_rng(0), 0.15, 5000,
                                  exclude=[searched])
    assert len(samples) == 6
    keys = {tuple(sorted(s.sample.items())) for s in samples}
    assert len(keys) == 6 and tuple(sorted(searched.items())) not in keys  # distinct, never the excluded one
    for s in samples:
        assert s.matched
        macs = detector_cost(TINY, s.sample, CLASSES, SIZE, ROIS)["total"].macs  # recomputed here
        assert abs(macs - target) <= 0.15 * target
        assert s.macs == pytest.approx(macs)
        for label, op in s.sample.items():
            comp = label.split("/")[0]
            assert op in SUB[comp], (label, op)


def test_mac_matched_samples_flag_the_closest_when_nothing_matches() -> None:
    choices = label_choices(TINY.labels(), SUB, OP_NAMES)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    tries = 50
    # The cheapest possible sample is far above 1 MAC: no draw can match.
    samples = mac_matched_samples(choices, _macs, 1.0, 1, rng_a, 0.15, tries)
    assert len(samples) == 1 and not samples[0].matched
    # the closest of the same 50 draws, recomputed from the same random stream
    labels = list(choices)
    draws = [{lb: choices[lb][rng_b.integers(len(choices[lb]))] for lb in labels} for _ in range(tries)]
    assert samples[0].macs == pytest.approx(min(_macs(d) for d in draws))


# ----------------------------------------------------------------------------- inherited weights


def test_search_supernet_loads_its_checkpoint_and_fix_path_runs_only_the_sample(tmp_path: Path) -> None:
    import copy

    from hitdet.search_evidence import CHECKPOINT_PREFIX, fix_path, load_search_supernet
    from search_spaces import TrinitySpace
    from strategies import HitDetStrategy
    from strategies.mixed import HitDetMixedLayer

    torch.manual_seed(0)
    net = HitDetStrategy("search", sub_spaces=SUB).mutate_model(TrinitySpace(TINY, SUB, SETTINGS))
    layers = [m for m in net.modules() if isinstance(m, HitDetMixedLayer)]
    for m in layers:  # as if the run had removed an op at every backbone position
        if str(m.label).startswith("backbone/"):
            m.drop("skip")
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)  # weights a freshly built supernet does not have
    ckpt = {"state_dict": {CHECKPOINT_PREFIX + k: v for k, v in net.state_dict().items()},
            "hitdet_strategy": {"active": {str(m.label): m.active_mask.tolist() for m in layers}}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    loaded = load_search_supernet(TINY, SETTINGS, SUB, tmp_path / "last.ckpt")
    saved, got = net.state_dict(), loaded.state_dict()
    assert list(saved) == list(got) and all(torch.equal(saved[k], got[k]) for k in saved)

    rng = np.random.default_rng(1)
    sample = {str(m.label): m.active_names()[rng.integers(len(m.active_names()))] for m in layers}
    fixed = fix_path(loaded, sample)
    for m in fixed.modules():
        if isinstance(m, HitDetMixedLayer):
            assert m.active_names() == [sample[str(m.label)]]
    assert len([m for m in loaded.modules() if isinstance(m, HitDetMixedLayer) and len(m.active_names()) > 1])
    # the same path by α alone: the chosen op's logit far above the others gives softmax weights 1 and 0
    forced = copy.deepcopy(loaded)
    with torch.no_grad():
        for m in forced.modules():
            if isinstance(m, HitDetMixedLayer):
                m._arch_alpha.fill_(-1e4)
                m._arch_alpha[m.names.index(sample[str(m.label)])] = 0.0
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        a, b = fixed.eval().backbone(x), forced.eval().backbone(x)
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


# ----------------------------------------------------------------------------- the hand-made baseline


def _counted_macs(model: nn.Module, size: tuple[int, int], rois: int) -> int:
    """MACs of convs and linears counted by forward hooks on the built detector's parts."""
    total = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += mod.in_channels // mod.groups * mod.out_channels * k * out.shape[-2] * out.shape[-1]
        else:
            total += mod.in_features * mod.out_features * out.shape[0]

    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            mod.register_forward_hook(hook)
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, *size))
        for f in feats.values():
            model.rpn.head([f])
        c = model.backbone.out_channels
        model.roi_heads.box_predictor(model.roi_heads.box_head(torch.zeros(rois, c, 7, 7)))
    return total


def test_baseline_macs_match_a_target_and_the_built_model() -> None:
    arch_sample = {label: ops[0] for label, ops in label_choices(TINY.labels(), SUB, OP_NAMES).items()}
    target = _macs(arch_sample)
    cfg, macs = match_width(target, CLASSES, SIZE, ROIS)
    model = build_baseline(cfg, CLASSES, min_size=SIZE[0], max_size=SIZE[1])
    counted = _counted_macs(model, SIZE, ROIS)
    assert counted == macs  # the analytic count is the model's
    assert abs(counted - target) <= 0.15 * target
    # and another width is counted right too (the stem, stages and FPN all scale)
    other = BaselineConfig(width=0.5)
    assert _counted_macs(build_baseline(other, 3), SIZE, 32) == baseline_macs(other, 3, SIZE, 32)


# ----------------------------------------------------------------------------- the glyphs dataset

GLYPH_IDS = [3, 4, 7, 11, 16, 21, 30]


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_glyphs_dataset_is_deterministic_coco_valid_with_its_classes(tmp_path: Path) -> None:
    from hitdet.cli import main
    from hitdet.data import SynthSpec, load_split, write_synthetic
    from hitdet.data.synth import GLYPH_CATEGORIES

    assert main(["data", "synth", "--style", "glyphs", "--out", str(tmp_path / "a"), "--train", "24",
                 "--val", "6", "--seed", "2"]) == 0
    again = write_synthetic(tmp_path / "b", SynthSpec(num_train=24, num_val=6, seed=2, style="glyphs"))
    other = write_synthetic(tmp_path / "c", SynthSpec(num_train=24, num_val=6, seed=3, style="glyphs"))
    shapes = write_synthetic(tmp_path / "d", SynthSpec(num_train=24, num_val=6, seed=2))
    assert _digest(tmp_path / "a") == _digest(again)
    assert _digest(tmp_path / "a") != _digest(other)
    assert [c["id"] for c in GLYPH_CATEGORIES] == GLYPH_IDS
    for split in ("train", "val"):
        ds = load_split(tmp_path / "a", split)
        ds.verify_images()
        assert ds.num_classes == 7
        assert ds.cat_ids == GLYPH_IDS
        used = {a["category_id"] for a in ds.coco.dataset["annotations"]}
        assert used <= set(GLYPH_IDS)
        for a in ds.coco.dataset["annotations"]:
            x, y, w, h = a["bbox"]
            img = ds.coco.imgs[a["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
    assert len({a["category_id"] for a in load_split(tmp_path / "a", "train").coco.dataset["annotations"]}) >= 5
    assert load_split(shapes, "train").cat_ids == [2, 5, 9, 14]  # the default style is unchanged


def test_unknown_style_is_refused_before_writing(tmp_path: Path) -> None:
    from hitdet.data import SynthSpec, write_synthetic

    with pytest.raises(UserError, match="unknown style 'letters'"):
        write_synthetic(tmp_path / "x", SynthSpec(style="letters"))
    assert not (tmp_path / "x").exists()
