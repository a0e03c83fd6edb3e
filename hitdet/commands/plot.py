"""``hitdet plot``: an architecture, a screen/search run, a train run, or several train runs as pictures."""

from __future__ import annotations

import argparse
from pathlib import Path

from hitdet.architecture import load_architecture
from hitdet.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw an architecture, a screen/search or train run, or compare train runs")
    p.add_argument("target", nargs="+", help="architecture JSON / preset name, a run folder, or with --compare "
                   "several train run folders")
    p.add_argument("--out", help="output PNG (architecture, --compare) or folder (run); default beside the input")
    p.add_argument("--compare", action="store_true", help="AP against MACs for several train runs (needs --out)")
    p.add_argument("--force", action="store_true", help="replace existing pictures")
    p.add_argument("--dpi", type=int, default=130, help="resolution of the PNGs (default 130)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hitdet import plot

    if not 30 <= args.dpi <= 600:
        raise UserError(f"--dpi must be between 30 and 600, got {args.dpi}")
    if args.compare:
        if not args.out:
            raise UserError("--compare needs --out FILE.png")
        written = [plot.plot_compare([Path(t) for t in args.target], args.out, args.force, args.dpi)]
    elif len(args.target) > 1:
        raise UserError(f"expected one architecture or run folder, got {len(args.target)} (several: --compare)")
    else:
        target = Path(args.target[0])
        if target.is_dir():
            # the run's own plots/ folder holds only pictures of it: a re-run redraws them without --force
            written = plot.plot_run(target, Path(args.out) if args.out else target / "plots",
                                    args.force or not args.out, args.dpi)
        else:
            arch = load_architecture(args.target[0])
            if args.out:
                out = Path(args.out)
            elif target.suffix == ".json":
                out = target.with_suffix(".png")
            else:
                out = Path(f"{args.target[0]}.png")
            if out.suffix.lower() != ".png":
                raise UserError(f"--out {out}: expected a .png file")
            written = [plot.plot_architecture(arch, out, args.force, args.dpi)]
    for path in written:
        print(path)
    return 0
