"""The fixed detector builder: the paper's parameter count, structure, and a working forward pass."""

from __future__ import annotations

import subprocess
import sys

import torch
from torchvision.models.detection import FasterRCNN
from torchvision.ops import MultiScaleRoIAlign

from hitdet import build_detector
from search_spaces.costs import detector_cost
from tests.helpers import tiny_arch


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_preset_matches_paper_parameter_counts():
    """Paper Table 2: 27.12M in total; Table 1: backbone 13.9M, neck 2.7M, head 9.9M (81 classes)."""
    model = build_detector("hit-detector")
    assert isinstance(model, FasterRCNN)
    assert round(n_params(model) / 1e6, 2) == 27.12
    assert round(n_params(model.backbone.body) / 1e6, 1) == 13.9
    assert round(n_params(model.backbone.neck) / 1e6, 1) == 2.7
    assert round(n_params(model.roi_heads) / 1e6, 1) == 9.9


def test_preset_detector_configuration():
    model = build_detector("hit-detector")
    assert model.backbone.body.out_channels == [48, 96, 256, 2048]
    assert model.backbone.body.strides == [4, 8, 16, 32]
    sizes = model.rpn.anchor_generator.sizes
    assert sizes == ((32,), (64,), (128,), (256,), (512,))
    assert model.rpn.anchor_generator.num_anchors_per_location() == [3] * 5
    pool = model.roi_heads.box_roi_pool
    assert isinstance(pool, MultiScaleRoIAlign) and pool.output_size == (7, 7) and pool.sampling_ratio == 2
    assert pool.featmap_names == ["0", "1", "2", "3"]
    assert model.roi_heads.box_head.fc.in_features == 12544 and model.roi_heads.box_head.fc.out_features == 512
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 81 * 4
    assert model.rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert model.rpn.nms_thresh == 0.7
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 512
    assert model.roi_heads.fg_bg_sampler.positive_fraction == 0.25
    assert (model.roi_heads.score_thresh, model.roi_heads.nms_thresh, model.roi_heads.detections_per_img) == (
        0.05, 0.5, 100)


def test_neck_levels_and_strides():
    arch = tiny_arch()
    model = build_detector(arch).eval()
    x = torch.randn(1, 3, 64, 96)
    feats = model.backbone(x)
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert {f.shape[1] for f in feats.values()} == {arch.structure.neck_channels}


def test_tiny_detector_trains_and_detects():
    torch.manual_seed(0)
    model = build_detector(tiny_arch())
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 8.0, 30.0, 60.0], [2.0, 2.0, 20.0, 20.0]]), "labels": torch.tensor([2, 3])},
    ]
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "labels", "scores"}


def test_params_agree_with_analytic_count():
    arch = tiny_arch(width=0.25)
    model = build_detector(arch)
    cost = detector_cost(arch.structure, arch.sample(), arch.settings.num_classes)
    assert cost["backbone"].params == n_params(model.backbone.body)
    assert cost["neck"].params == n_params(model.backbone.neck)
    assert cost["rpn"].params == n_params(model.rpn)
    assert cost["head"].params == n_params(model.roi_heads)
    assert cost["total"].params == n_params(model)


def test_builder_needs_no_nni():
    code = (
        "import sys; sys.modules['nni'] = None; sys.modules['pytorch_lightning'] = None\n"
        "from hitdet.builder import build_detector\n"
        "m = build_detector('hit-detector'); print(sum(p.numel() for p in m.parameters()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "27123900"
