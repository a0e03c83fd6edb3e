"""The parts of the evidence harness (benchmarks/evidence): its statistics, the MAC-matched sampler,
the hand picks, the hand-made baseline's MACs, and the glyphs and photos datasets. The harness
itself is not run here (it trains detectors for hours); its smoke run is `--scale quick`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.evidence.handmade import BaselineConfig, baseline_macs, build_baseline, match_width
from benchmarks.evidence.samples import label_choices, mac_matched_samples
from benchmarks.evidence.stats import (
    agreement,
    chance_agreement,
    levelled,
    noise_decisiveness,
    paired_bootstrap,
)
from hitdet.errors import UserError
from search_spaces.costs import detector_cost
from search_spaces.ops import OP_NAMES
from tests.helpers import TINY

# ----------------------------------------------------------------------------- statistics


def test_paired_bootstrap_of_a_constant_offset_is_that_offset_exactly() -> None:
    # the units of a row are alike and y is x minus 0.05 at each seed: every resample differs by exactly 0.05
    x = {"a": {0: 0.30, 1: 0.20}, "b": {0: 0.30, 1: 0.20}}
    y = {"c": {0: 0.25, 1: 0.15}, "d": {0: 0.25, 1: 0.15}}
    d = paired_bootstrap(x, y, n=500)
    assert d["diff"] == pytest.approx(0.05) and d["lo"] == pytest.approx(0.05) and d["hi"] == pytest.approx(0.05)
    assert (d["units_x"], d["units_y"], d["seeds"]) == (2, 2, 2)


def test_paired_bootstrap_pairs_by_training_seed() -> None:
    # seed 1 is 0.2 better for both rows; row x is 0.01 above row y at each seed. Paired on the seed,
    # every resample's difference is 0.01 (seed effects cancel); unpaired it would swing by +-0.2.
    x = {"s": {0: 0.11, 1: 0.31}}
    y = {"h": {0: 0.10, 1: 0.30}}
    d = paired_bootstrap(x, y, n=500)
    assert d["lo"] == pytest.approx(0.01) and d["hi"] == pytest.approx(0.01)


def test_rows_sharing_no_training_seed_are_compared_unpaired() -> None:
    # one seed per unit, alternating: each unit stands by its own AP; two constant rows differ exactly
    x = {"a": {0: 0.30}, "b": {1: 0.30}}
    y = {"c": {1: 0.20}, "d": {0: 0.20}, "e": {1: 0.20}}
    d = paired_bootstrap(x, y, n=500)
    assert d["diff"] == pytest.approx(0.10) and d["lo"] == pytest.approx(0.10) and d["hi"] == pytest.approx(0.10)
    assert (d["units_x"], d["units_y"], d["seeds"]) == (2, 3, 0)


def test_paired_bootstrap_interval_covers_the_spread_of_units() -> None:
    x = {f"u{i}": {0: v} for i, v in enumerate([0.1, 0.2, 0.3, 0.4])}
    y = {"h": {0: 0.0}}
    d = paired_bootstrap(x, y, n=4000, seed=1)
    assert d["diff"] == pytest.approx(0.25)
    assert 0.1 <= d["lo"] < 0.25 < d["hi"] <= 0.4  # means of resamples of {0.1..0.4} stay within them


def test_agreement_and_chance_by_hand() -> None:
    a = {"p": "x", "q": "y", "r": "z"}
    b = {"p": "x", "q": "z", "r": "z"}
    c = {"p": "w", "q": "y", "r": "z"}
    # pairs: (a,b) 2/3, (a,c) 2/3, (b,c) 1/3 -> 5/9
    assert agreement([a, b, c]) == pytest.approx(5 / 9)
    assert agreement([a, b, c], ["p"]) == pytest.approx(1 / 3)
    same = {"p": ["x", "y"], "q": ["x", "y", "z", "w"]}
    # uniform picks from the same sets: 1/2 at p, 1/4 at q -> 3/8
    assert chance_agreement([same, same]) == pytest.approx(3 / 8)
    # partly different sub spaces: at p {x,y} vs {y,z}: 1/4; at q the same four: 1/4
    other = {"p": ["y", "z"], "q": ["x", "y", "z", "w"]}
    assert chance_agreement([same, other]) == pytest.approx(1 / 4)


def test_levelled_reads_the_last_epochs() -> None:
    assert levelled([0.1, 0.2, 0.3, 0.31, 0.312])["levelled"] is True  # +0.012 over 2 epochs at 0.31: < 5 %
    rising = levelled([0.1, 0.2, 0.3, 0.35, 0.40])
    assert rising["levelled"] is False and rising["gain"] == pytest.approx(0.10)
    assert levelled([0.1, 0.2])["levelled"] is None


def test_noise_decisiveness_reproduces_the_figure_noise_gives() -> None:
    # Issue #19's simulation: 32 positions x 8 ops, 16 Adam steps at the travel lr 4.4 / 16 -> about 28.2 of
    # 32 positions at >= 2x uniform (median 2.85x). Ours, from its own random stream:
    noise = noise_decisiveness(32, 8, 16, 4.4 / 16, repeats=20)
    assert 26.5 <= noise["at_least_2x_uniform"] <= 30.0
    assert 2.5 <= noise["median_ratio"] <= 3.2
    # lr 0: alpha never moves, nothing looks decisive
    assert noise_decisiveness(32, 8, 16, 0.0, repeats=2)["at_least_2x_uniform"] == 0


# ----------------------------------------------------------------------------- the MAC-matched sampler

SUB = {
    "backbone": ["ir_k3_e3", "ir_k5_e6", "sep_k3", "skip"],
    "neck": ["conv_k1", "sep_k3", "sep_k5_d3"],
    "head": ["skip", "conv_k3", "ir_k3_e6"],
}
SIZE, ROIS, CLASSES = (128, 160), 64, 5


def _macs(sample: dict[str, str]) -> float:
    return float(detector_cost(TINY, sample, CLASSES, SIZE, ROIS)["total"].macs)


def test_learning_rate_is_the_best_mean_over_the_probes_not_the_best_single_run() -> None:
    from benchmarks.evidence.harness import choose_lrs

    runs = [  # the shallow probe peaks at 0.04, where the deep one starves: mean 0.20 at 0.02 beats 0.17 at 0.04
        {"family": "space", "probe": "shallow", "lr": 0.02, "AP": 0.27},
        {"family": "space", "probe": "shallow", "lr": 0.04, "AP": 0.30},
        {"family": "space", "probe": "deep", "lr": 0.02, "AP": 0.13},
        {"family": "space", "probe": "deep", "lr": 0.04, "AP": 0.04},
        {"family": "torchvision", "probe": "torchvision", "lr": 0.01, "AP": 0.25},
        {"family": "torchvision", "probe": "torchvision", "lr": 0.05, "AP": 0.25},  # a tie: the lr nearer 0.02
    ]
    assert choose_lrs(runs) == {"space": 0.02, "torchvision": 0.01}


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
    """The dataset's bytes: images and annotations (not run.json, the command's record of the run)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "run.json"):
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


# ----------------------------------------------------------------------------- the hand picks


def test_hand_picks_are_samples_of_the_space() -> None:
    from hitdet.architecture import Architecture, load_architecture
    from search_spaces.hand_picks import HAND_PICKS, hand_pick
    from search_spaces.structure import CPU_STRUCTURE

    st = CPU_STRUCTURE
    for name in HAND_PICKS:
        sample = hand_pick(name, st)
        Architecture.from_sample(sample, st)  # validates every label and op
    stage = hand_pick("stage-ir", st)
    assert [label for label, op in stage.items() if op != "skip"] == [
        "backbone/s1_b0", "backbone/s2_b0", "backbone/s3_b0", "backbone/s4_b0"]
    assert {stage[label] for label in ["backbone/s1_b0", "backbone/s4_b0"]} == {"ir_k3_e3"}
    # the released pick is the preset's ops, position by position (same depths in the CPU structure)
    assert hand_pick("released", st) == load_architecture("hit-detector").sample()


# ----------------------------------------------------------------------------- the photos dataset


def test_photos_dataset_is_deterministic_coco_valid_with_its_classes(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    from hitdet.cli import main
    from hitdet.data import SynthSpec, load_split, write_synthetic
    from hitdet.data.photos import PHOTO_CATEGORIES

    assert main(["data", "synth", "--style", "photos", "--out", str(tmp_path / "a"), "--train", "30",
                 "--val", "8", "--seed", "1"]) == 0
    again = write_synthetic(tmp_path / "b", SynthSpec(num_train=30, num_val=8, seed=1, style="photos"))
    other = write_synthetic(tmp_path / "c", SynthSpec(num_train=30, num_val=8, seed=2, style="photos"))
    assert _digest(tmp_path / "a") == _digest(again)
    assert _digest(tmp_path / "a") != _digest(other)
    ids = [c["id"] for c in PHOTO_CATEGORIES]
    assert len(ids) == 10 and ids != list(range(1, 11))  # ids with gaps: the id mapping is exercised
    for split in ("train", "val"):
        ds = load_split(tmp_path / "a", split)
        ds.verify_images()
        assert ds.num_classes == 10 and ds.cat_ids == sorted(ids)
        for a in ds.coco.dataset["annotations"]:
            x, y, w, h = a["bbox"]
            img = ds.coco.imgs[a["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
    assert len({a["category_id"] for a in load_split(tmp_path / "a", "train").coco.dataset["annotations"]}) >= 8


def test_photos_train_and_val_draw_from_disjoint_sources() -> None:
    pytest.importorskip("skimage")
    from hitdet.data.photos import _split_sources

    train, val = _split_sources("train"), _split_sources("val")
    for key in ("photos", "fonts", "faces", "clutter", "coins"):
        assert not set(train[key]) & set(val[key]), key
    assert len(train["coins"]) == 16 and len(val["coins"]) == 8  # all 24 coins of the photograph, split
    assert len(set(train["faces"]) | set(val["faces"])) == 100


def test_photo_boxes_hold_their_objects(tmp_path: Path) -> None:
    """Every annotated box differs from the background photo it was pasted on (the object is in it)."""
    pytest.importorskip("skimage")
    from hitdet.data.photos import photo_image

    rng = np.random.default_rng(5)
    img, objects = photo_image(rng, "train", max_objects=5, empty_fraction=0.0)
    assert objects
    arr = np.asarray(img, np.float32)
    for _, (x0, y0, x1, y1) in objects:
        inside = arr[y0:y1, x0:x1]
        assert inside.size and inside.std() > 5  # an object, not flat background noise
