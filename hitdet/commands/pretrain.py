"""``hitdet pretrain``: train a backbone (fixed or supernet) as an image classifier before detection."""

from __future__ import annotations

import argparse
import json

from hitdet.commands.common import (
    add_config_options,
    add_run_options,
    config_source,
    parse_devices,
    print_config,
    run_flags,
)
from hitdet.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a backbone (an architecture's, or a supernet with uniform α) on ImageFolder data",
        description=(
            "Pretrain a backbone as a classifier (global pooling + linear) on a folder in ImageFolder layout "
            "(DIR/train/CLASS/*, DIR/val/CLASS/*: ImageNet's layout). Target: --arch (a fixed architecture's "
            "backbone, for `hitdet train --backbone-weights`; paper: 300 epochs) or --space (the backbone "
            "supernet with every candidate weighted equally, for `hitdet screen|search --backbone-weights`; "
            "paper: 10 epochs). Writes OUT/backbone.pt, OUT/pretrain.json, checkpoints and TensorBoard logs."
        ),
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--arch", help="architecture JSON or preset name: pretrain its backbone")
    target.add_argument(
        "--space",
        metavar="OPS",
        help="pretrain the backbone supernet over OPS: 'all' (the 32-op pool), op1,op2,... or a sub-spaces JSON "
        "written by screening",
    )
    p.add_argument("--half-depth", action="store_true", help="with --space: the screening variant (2+2+4+2 blocks)")
    p.add_argument(
        "--structure",
        metavar="ARCH",
        help="with --space: take the backbone's depths and widths from this architecture (default: the released)",
    )
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (default 1; tiny CPU runs)")
    p.add_argument("--data", required=True, help="classification folder in ImageFolder layout (train/ and val/)")
    add_config_options(p, out="backbone.pt, pretrain.json, checkpoints, logs",
                       config="supernet (10 epochs), searched (300 epochs), synth-cpu; default: supernet for "
                       "--space, searched for --arch", example="label_smoothing=0.1")
    p.add_argument("--batch-size", type=int, help="images per device per step")
    p.add_argument("--lr", type=float, help="learning rate for 256 images per step (scaled by the total batch)")
    p.add_argument("--image-size", type=int, help="crop size in pixels (default 224)")
    p.add_argument(
        "--init-weights",
        metavar="PT",
        help="start from a backbone weights file: this target's, or for --arch a supernet's (its chosen candidates)",
    )
    add_run_options(p)
    p.set_defaults(func=run)




def run(args: argparse.Namespace) -> int:
    from hitdet.architecture import load_architecture
    from hitdet.pretrain.config import load_config
    from hitdet.pretrain.model import architecture_target, parse_space_ops, supernet_target
    from hitdet.pretrain.runner import run_pretraining

    if args.width <= 0:
        raise UserError(f"--width must be positive, got {args.width}")
    if args.arch is not None:
        if args.half_depth or args.structure:
            raise UserError("--half-depth and --structure go with --space, not --arch")
        target = architecture_target(args.arch, width=args.width)
        recipe = "searched"
    else:
        ops, source = parse_space_ops(args.space)
        structure = load_architecture(args.structure).structure if args.structure else None
        if args.structure:
            source["structure"] = args.structure
        target = supernet_target(ops, structure, half_depth=args.half_depth, width=args.width, source=source)
        recipe = "supernet"
    config = load_config(
        config_source(args),
        args.overrides,
        flags=run_flags(args),
        recipe=recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        image_size=args.image_size,
    )
    if args.print_config:
        return print_config(config.to_dict())
    summary = run_pretraining(
        target,
        args.data,
        args.out,
        config,
        accelerator=args.accelerator,
        devices=parse_devices(args.devices),
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        resume=args.resume,
        force=args.force,
        init_weights=args.init_weights,
        progress=not args.no_progress,
        inputs={"--arch": args.arch, "--space": args.space, "--structure": args.structure, "--config": args.config},
    )
    metrics = summary["metrics"]
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("val/", "train/top1_epoch", "train/loss"))}
    print(f"pretrained {target.kind} backbone for {summary['epochs_done']} epoch(s): {json.dumps(shown)}")
    print(f"weights: {summary['weights']}  (use: {summary['use']})")
    return 0
