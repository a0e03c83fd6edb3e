"""``hitdet screen`` and ``hitdet search``: screen the op pool, then search the trinity end to end."""

from __future__ import annotations

import argparse

from hitdet.commands.common import (
    add_config_options,
    add_run_options,
    config_source,
    parse_devices,
    print_config,
    run_flags,
)
from hitdet.errors import UserError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="COCO-format dataset folder (default: the built-in synthetic dataset)")
    add_config_options(p, out="sub spaces or architecture, checkpoints, logs", config="paper, synth-cpu",
                       example="train.epochs=2 --set strategy.mu=0.2", section="train.")
    p.add_argument("--backbone-weights", help="pretrained supernet backbone (hitdet pretrain --space)")
    add_run_options(p)


def register(sub: argparse._SubParsersAction) -> None:
    screen = sub.add_parser("screen", help="screen the 32-op pool into per-component sub spaces (paper Sec. 3.2)")
    _common(screen)
    screen.add_argument("--components", help="screen only these components, e.g. backbone or neck,head")
    screen.add_argument("--num-ops", type=int, help="ops kept per component (default 8)")
    screen.add_argument("--mu", type=float, help="weight of the column-sparse regulariser (default 0.1)")
    screen.set_defaults(func=run, mode="screen")
    search = sub.add_parser("search", help="end-to-end trinity search with the FLOPs penalty (paper Sec. 3.3-3.4)")
    _common(search)
    search.add_argument("--sub-spaces", help="subspaces.json from hitdet screen, 'paper-neck' or 'all' (default)")
    search.add_argument("--lambda", dest="lam", type=float, help="weight of the FLOPs penalty (default 0.01)")
    search.add_argument("--target-macs", help="search towards a MACs budget of the whole detector, e.g. 3.5G "
                        "(counted as hitdet info does, at the priced input size and RoI count)")
    search.set_defaults(func=run, mode="search")




def run(args: argparse.Namespace) -> int:
    from hitdet.searching import load_search_config, run_search

    flags = {**run_flags(args, "train."), "--epochs": ("train.epochs", args.epochs)}
    if args.mode == "screen":
        comps = None
        if args.components:
            from search_spaces.positions import COMPONENTS

            comps = [c.strip() for c in args.components.split(",") if c.strip()]
            unknown = [c for c in comps if c not in COMPONENTS]
            if unknown or not comps:
                raise UserError(f"--components: unknown component {(unknown[0] if unknown else args.components)!r} "
                                f"(known: {', '.join(COMPONENTS)})")
        flags.update({"--components": ("strategy.screen_components", comps),
                      "--num-ops": ("strategy.num_ops", args.num_ops), "--mu": ("strategy.mu", args.mu)})
    else:
        flags.update({"--sub-spaces": ("sub_spaces", args.sub_spaces or None),
                      "--lambda": ("strategy.penalty_lambda", args.lam),
                      "--target-macs": ("target_macs", args.target_macs)})
    cfg = load_search_config(args.mode, config_source(args), args.overrides, flags=flags)
    if args.print_config:
        return print_config(cfg.to_dict())
    summary = run_search(
        args.mode, args.out, cfg, args.data, resume=args.resume, force=args.force,
        backbone_weights=args.backbone_weights, accelerator=args.accelerator, devices=parse_devices(args.devices),
        strategy=args.strategy, num_nodes=args.num_nodes, progress=not args.no_progress,
        inputs={"--config": args.config},
    )
    if not summary:
        return 0
    if args.mode == "screen":
        for comp, ops in summary["kept"].items():
            print(f"{comp:<9} kept {len(ops)}: {', '.join(ops)}")
        print(f"sub spaces: {summary['sub_spaces']}")
    else:
        print(format_search_summary(summary["detector"]))
        print(f"architecture: {summary['architecture']}")
    return 0


def format_search_summary(det: dict) -> str:
    """The chosen ops per component, the detector's parameters and MACs (next to the target), α's decisiveness."""
    lines = [f"{comp:<9} {' '.join(ops)}" for comp, ops in det["chosen"].items() if ops]
    h, w = det["input_size"]
    macs = f"MACs      {det['macs'] / 1e9:.4g} G ({h}x{w} input, {det['num_rois']} RoIs; multiply-accumulates)"
    if det.get("target_macs"):
        target = det["target_macs"]
        off = (det["macs"] - target) / target
        macs += f"; target {target / 1e9:.4g} G ({100 * off:+.1f} %"
        tolerance = det.get("target_tolerance")
        if tolerance is not None and abs(off) > tolerance:  # say so, not only in metadata.json's budget_decode
            macs += f", outside the ±{100 * tolerance:g} % tolerance; see budget_decode in metadata.json"
        macs += ")"
    lines += [macs, f"params    {det['params'] / 1e6:.3f} M"]
    from strategies.export import describe_decisiveness

    text = describe_decisiveness(det.get("decisiveness") or {})
    if text:
        lines.append(f"alpha     {text}")
    return "\n".join(lines)
