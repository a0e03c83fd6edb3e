"""``hitdet plot``: an architecture as a picture, or a search run's α heatmaps and history."""

from __future__ import annotations

import argparse
from pathlib import Path

from hitdet.architecture import load_architecture
from hitdet.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw an architecture (JSON or preset) or a search run folder")
    p.add_argument("target", help="architecture JSON / preset name, or a screen/search run folder")
    p.add_argument("--out", help="output PNG (architecture) or folder (run); default beside the input")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hitdet import plot

    target = Path(args.target)
    if target.is_dir():
        written = plot.plot_run(target, Path(args.out) if args.out else target / "plots")
    else:
        arch = load_architecture(args.target)
        if args.out:
            out = Path(args.out)
        elif target.suffix == ".json":
            out = target.with_suffix(".png")
        else:
            out = Path(f"{args.target}.png")
        if out.suffix.lower() != ".png":
            raise UserError(f"--out {out}: expected a .png file")
        written = [plot.plot_architecture(arch, out)]
    for path in written:
        print(path)
    return 0
