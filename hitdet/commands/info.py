"""``hitdet info ARCH``: parameters and MACs per component, computed analytically."""

from __future__ import annotations

import argparse
import json

from hitdet.arch_cost import architecture_cost
from hitdet.architecture import load_architecture, width_record
from hitdet.errors import UserError
from search_spaces.costs import COST_COMPONENTS

LABELS = {"backbone": "backbone", "neck": "neck", "rpn": "RPN", "head": "RoI head", "total": "total"}


def parse_size(text: str) -> tuple[int, int]:
    """``800x1216`` (height x width) -> (800, 1216)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 800x1216, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters and MACs of an architecture, per component")
    p.add_argument("arch", help="architecture JSON file or preset name (e.g. hit-detector)")
    p.add_argument(
        "--input-size",
        type=parse_size,
        metavar="HxW",
        help="padded input size (default: the architecture's own detector min_size x max_size, each padded to "
        "size_divisible; 800x1344 for hit-detector)",
    )
    p.add_argument(
        "--rois",
        type=int,
        help="RoIs the head runs on (default: the architecture's rpn_post_nms_top_n_test, 1000 for hit-detector)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object {params, macs}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.rois is not None and args.rois < 0:
        raise UserError(f"--rois must be >= 0, got {args.rois}")
    arch = load_architecture(args.arch)
    cost, size, rois = architecture_cost(arch, args.input_size, args.rois)
    keys = [*COST_COMPONENTS, "total"]
    if args.json:
        print(json.dumps({"params": {k: cost[k].params for k in keys}, "macs": {k: cost[k].macs for k in keys}}))
        return 0
    h, w = size
    print(f"{arch.name or args.arch}: {arch.detector_type}, {arch.settings.num_classes} classes (incl. background)")
    print(f"input {h}x{w}, {rois} RoIs; MACs are multiply-accumulates (1 MAC = 2 FLOPs)")
    if width_record(arch):  # a run's architecture: the width multiplier it was trained or searched at
        print(f"channels: {width_record(arch)}")
    print(f"{'component':<10} {'params':>14} {'params (M)':>11} {'MACs (G)':>10}")
    for k in keys:
        if k == "total":
            print("-" * 48)
        print(f"{LABELS[k]:<10} {cost[k].params:>14,} {cost[k].params / 1e6:>11.2f} {cost[k].macs / 1e9:>10.2f}")
    return 0
