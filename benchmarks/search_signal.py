"""Does the detection loss steer the search? Seed agreement of the search stage, per setting.

    OMP_NUM_THREADS=1 python -m benchmarks.search_signal --data DATA --out runs/signal \\
        --variant "full-16:" --variant "sample-200:strategy.mixed_op=sample,train.epochs=6,steps_per_epoch=40"

Each variant is ``NAME:KEY=VALUE,KEY=VALUE`` (``hitdet search --set`` overrides on top of the
``synth-cpu`` recipe and the fixed sub spaces). Every variant runs ``hitdet search`` once per
``--seeds`` (only ``train.seed`` differs: the data, the sub spaces and the settings are the same) at
λ = 0 by default, so that only the detection loss moves α. The report gives, per variant, how
often two seeds pick the same op at a position (mean over pairs), for the argmax of α and for the
``contribution`` decision (the op whose removal would raise the loss most), next to chance
(uniform picks from the same sub spaces) and next to how decisive α looks against what the same
number of Adam steps on pure noise gives. Runs are cached in OUT (a rerun resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.evidence.stats import agreement, chance_agreement, noise_decisiveness
from hitdet.io import write_json_atomic, write_text_atomic

# A fixed, deliberately mixed sub space per component (skip, cheap and expensive ops), so that the
# search's own signal is measured apart from screening's.
SUB_SPACES = {
    "backbone": ["skip", "ir_k3_e1", "ir_k3_e3", "ir_k3_e6", "ir_k5_e3", "ir_k5_e6", "sep_k3", "conv_k3"],
    "neck": ["skip", "conv_k1", "conv_k3", "sep_k3", "sep_k5", "ir_k3_e3", "sep_k3_d3", "conv_k3_d2"],
    "head": ["skip", "conv_k1", "conv_k3", "sep_k3", "sep_k5", "ir_k3_e1", "ir_k3_e3", "ir_k5_e3"],
}


def run_one(name: str, sets: list[str], seed: int, data: str, out: Path) -> dict[str, Any]:
    from hitdet.searching import load_search_config, run_search

    folder = out / name / f"seed{seed}"
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    subs = out / "subspaces.json"
    cfg = load_search_config("search", "synth-cpu", [*sets, f"train.seed={seed}", f"sub_spaces={subs}"])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_search("search", folder / "search", cfg, data, force=True, progress=False)
    meta = json.loads((folder / "search" / "metadata.json").read_text())
    argmax = {label: max(p, key=p.get) for label, p in meta["alpha_probabilities"].items()}
    result = {"variant": name, "seed": seed, "seconds": time.perf_counter() - t0, "argmax": argmax,
              "contribution": meta["sample"] if meta["settings"].get("decision") == "contribution" else None,
              "decisiveness": meta.get("decisiveness"), "steps": meta.get("architecture_steps")}
    write_json_atomic(done, result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search_signal", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset folder (COCO layout)")
    p.add_argument("--out", required=True, help="output folder (cached runs, report.md)")
    p.add_argument("--variant", action="append", required=True, metavar="NAME:KEY=VALUE,...")
    p.add_argument("--seeds", default="0,1,2", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every variant (default strategy.penalty_lambda=0 and the contribution decision)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "subspaces.json", {"format": "hitdet-subspaces", "version": 1,
                                               "components": {c: {"ops": ops} for c, ops in SUB_SPACES.items()}})
    base = ["strategy.penalty_lambda=0", "strategy.decision=contribution", *args.set]
    lines = ["| variant | seconds per run | arch steps (lr) | agreement, argmax of α | agreement, contribution | "
             "chance | α decisive / pure noise (of 32) |", "|---|---:|---|---:|---:|---:|---|"]
    report = {}
    for spec in args.variant:
        name, _, rest = spec.partition(":")
        sets = [*base, *[kv for kv in rest.split(",") if kv]]
        runs = [run_one(name, sets, seed, args.data, out) for seed in args.seeds]
        labels = list(runs[0]["argmax"])
        choices = [{label: SUB_SPACES[label.split("/")[0]] for label in labels}] * len(runs)
        a_arg = agreement([r["argmax"] for r in runs], labels)
        a_con = agreement([r["contribution"] for r in runs], labels) if runs[0]["contribution"] else float("nan")
        chance = chance_agreement(choices, labels)
        steps = runs[0]["steps"] or {}
        dec = sum(r["decisiveness"]["at_least_2x_uniform"] for r in runs) / len(runs)
        noise = noise_decisiveness(len(labels), 8, int(steps.get("planned") or 1),
                                   float(steps.get("arc_learning_rate") or 0), repeats=10)["at_least_2x_uniform"]
        secs = sum(r["seconds"] for r in runs) / len(runs)
        report[name] = {"sets": sets, "agreement_argmax": a_arg, "agreement_contribution": a_con, "chance": chance,
                        "decisive": dec, "noise_decisive": noise, "seconds": secs, "steps": steps}
        lines.append(f"| {name} | {secs:.0f} | {steps.get('planned')} ({steps.get('arc_learning_rate', 0):.3g}) | "
                     f"{a_arg:.3f} | {a_con:.3f} | {chance:.3f} | {dec:.1f} / {noise:.1f} |")
        print(lines[-1], flush=True)
    text = (f"`python -m benchmarks.search_signal {' '.join(sys.argv[1:] if argv is None else argv)}` "
            f"({time.strftime('%Y-%m-%d')})\n\n" + "\n".join(lines) + "\n")
    write_text_atomic(out / "report.md", text)
    write_json_atomic(out / "report.json", report)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
