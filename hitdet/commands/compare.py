"""``hitdet compare RUN...``: train runs side by side (params, MACs, AP, AP50) as a table."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train runs side by side: params, MACs, AP, AP50, latency (hitdet bench)")
    p.add_argument("runs", nargs="+", help="train run folders (each with architecture.json and metrics.json)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hitdet.compare import dataset_warning, format_table, latency_warning, summarise_all

    rows = summarise_all([Path(r) for r in args.runs])
    for warning in (dataset_warning(rows), latency_warning(rows)):
        if warning:
            print(f"hitdet compare: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps([asdict(r) for r in rows]))
    else:
        print(format_table(rows))
    return 0
