"""``hitdet pipeline --data DIR --out RUN``: data check -> screen -> search -> retrain -> eval on a COCO folder."""

from __future__ import annotations

import argparse

STAGES = ("screen", "search", "train")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="data check -> screen -> search -> retrain -> eval on a COCO-layout folder "
                       "(hitdet demo is this on the built-in set)")
    p.add_argument("--data", required=True, help="COCO-layout dataset folder (train/, val/, annotations/)")
    p.add_argument("--out", required=True, help="run folder: screen/, search/, train/, eval/, summary.json")
    p.add_argument("--config", default="synth-cpu",
                   help="recipe name or YAML file for every stage (default synth-cpu: 128-160 px at the demo's "
                        "stage sizes; other recipes run at their own)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="override one stage's key, STAGE one of screen, search, train (repeatable), e.g. "
                        "--set search.strategy.penalty_lambda=0 or --set train.epochs=24")
    p.add_argument("--baseline", nargs="?", const="stage-ir", default=None, metavar="HAND_PICK",
                   help="also train and evaluate an in-space hand pick by the same recipe (default stage-ir: one "
                        "ir_k3_e3 per backbone stage, skip elsewhere) and print both")
    p.add_argument("--force", action="store_true", help="replace the run in a non-empty OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def stage_overrides(overrides: list[str]) -> dict[str, list[str]]:
    """``STAGE.KEY=VALUE`` items by stage; anything else is one line naming the item."""
    from hitdet.errors import UserError

    out: dict[str, list[str]] = {s: [] for s in STAGES}
    for item in overrides:
        stage, _, rest = item.partition(".")
        if stage not in STAGES or "=" not in rest:
            raise UserError(f"--set {item!r}: expected STAGE.KEY=VALUE with STAGE one of {', '.join(STAGES)}")
        out[stage].append(rest)
    return out


def run(args: argparse.Namespace) -> int:
    from hitdet.pipeline import PipelineSettings, run_pipeline

    settings = PipelineSettings(recipe=args.config, baseline=args.baseline, **stage_overrides(args.overrides))
    run_pipeline(args.data, args.out, settings, force=args.force, progress=not args.no_progress)
    return 0
