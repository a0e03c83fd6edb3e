"""``hitdet train ARCH --data DIR --out RUN``: retrain a fixed detector (see hitdet.training.runner)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hitdet.commands.common import (
    add_config_options,
    add_run_options,
    config_source,
    parse_devices,
    print_config,
    run_flags,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="retrain an architecture (JSON or preset) on a COCO-format dataset")
    p.add_argument("arch", nargs="?", help="architecture JSON or preset name (with --resume: the run's own)")
    p.add_argument("--data", help="dataset folder in COCO layout (default: the built-in synthetic dataset)")
    add_config_options(p, out="weights, checkpoints, logs, metrics", config="paper (default), synth-cpu",
                       example="epochs=6 --set detector.min_size=128")
    p.add_argument("--batch-size", type=int, help="images per device per step (lr scales with it)")
    p.add_argument("--lr", type=float, help="fixed learning rate (default: 0.04 x total batch / 32)")
    p.add_argument("--width", type=float, help="channel multiplier of the architecture (default: the channels its "
                   "JSON states; a preset takes the recipe's preset_width, 0.125 in synth-cpu)")
    p.add_argument("--backbone-weights", help="pretrained backbone (hitdet pretrain) to start from")
    add_run_options(p)
    p.set_defaults(func=run)




def run(args: argparse.Namespace) -> int:
    from hitdet.architecture import load_architecture
    from hitdet.errors import UserError
    from hitdet.training.config import load_config

    source = config_source(args)  # --out is required unless --print-config
    out = Path(args.out or ".")
    if args.resume:
        arch = load_architecture(out / "architecture.json") if (out / "architecture.json").is_file() else None
        if arch is None:
            raise UserError(f"{out / 'architecture.json'}: not found, nothing to resume")
    elif args.arch is not None:
        arch = load_architecture(args.arch)
    elif args.print_config:  # the config does not depend on the architecture
        arch = None
    else:
        raise UserError("ARCH: give an architecture JSON or preset name (e.g. hitdet train hit-detector)")
    cfg = load_config(source, args.overrides, flags=run_flags(args),
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, width=args.width)
    if args.print_config:
        return print_config(cfg.to_dict())
    from hitdet.training.runner import train

    summary = train(arch, out, cfg, data_dir=args.data, resume=args.resume, force=args.force,
                    accelerator=args.accelerator, devices=parse_devices(args.devices), strategy=args.strategy,
                    num_nodes=args.num_nodes, progress=not args.no_progress, backbone_weights=args.backbone_weights,
                    inputs={"ARCH": None if args.resume else args.arch, "--config": args.config})
    if summary:
        best, last = summary.get("best"), summary.get("last")
        if last:
            print(f"last epoch {last['epoch']}: AP {last['AP']:.4f}  AP50 {last['AP50']:.4f}")
        if best:
            print(f"best epoch {best['epoch']}: AP {best['AP']:.4f}  AP50 {best['AP50']:.4f}")
        print(f"weights: {out / 'best.pt'}, {out / 'last.pt'}; architecture: {out / 'architecture.json'}")
    return 0
