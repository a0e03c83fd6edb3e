"""``hitdet demo``: the whole pipeline on the built-in synthetic dataset (``make demo``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="data -> screen -> search -> retrain -> eval on the synthetic dataset")
    p.add_argument("--out", default="runs/demo", help="folder for every artefact (default runs/demo)")
    p.add_argument("--force", action="store_true", help="replace an existing demo folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hitdet.demo import run_demo

    run_demo(args.out, force=args.force, progress=not args.no_progress)
    return 0
