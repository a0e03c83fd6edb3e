"""The evidence harness's report: rows with their curves, paired intervals, seed agreement, noise baselines."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.evidence.stats import (
    agreement,
    chance_agreement,
    levelled,
    noise_decisiveness,
    paired_bootstrap,
    row_mean,
)
from hitdet.io import read_json_or_none, write_json_atomic, write_text_atomic

COMPONENTS = ("backbone", "neck", "head")


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _load_rows(specs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each row's trained runs (one per training seed), by row name, in spec order."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in specs:
        rows[s["row"]].append(json.loads(Path(s["path"]).read_text()))
    return dict(rows)


def _units(runs: list[dict[str, Any]], unit: str) -> dict[str, dict[int, float]]:
    return {unit: {r["train_seed"]: float(r["AP"]) for r in runs}}


def _group(rows: dict[str, list[dict[str, Any]]], kind: str, variant: str | None = None) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for name, runs in rows.items():
        if runs[0]["kind"] == kind and (variant is None or runs[0].get("variant") == variant):
            out.update(_units(runs, name))
    return out


def _ops_per_label(kept: dict[str, list[str]], labels: list[str], all_ops: list[str]) -> dict[str, list[str]]:
    return {label: list(kept.get(label.split("/")[0], all_ops)) for label in labels}


def build_report(h: Any, specs: list[dict[str, Any]], settings: Any, lrs: dict[str, float]) -> dict[str, Any]:
    """Write OUT/report.md, report.json and curves.png; return ``{"markdown": ..., ...}``."""
    from benchmarks.evidence.harness import CONTROL
    from search_spaces.hand_picks import HAND_PICKS
    from search_spaces.ops import OP_NAMES
    from search_spaces.structure import STRUCTURES

    rows = _load_rows(specs)
    labels = STRUCTURES[h.structure_name()].labels()
    variants = [*h.variants, *([h.control] if not h.args.no_control else [])]
    size, rois = settings.padded_size(), settings.priced_rois()
    command = "python -m benchmarks.evidence " + " ".join(sys.argv[1:])
    lines = [
        f"# Evidence: {h.dataset}", "",
        f"`{command.strip()}` ({time.strftime('%Y-%m-%d')}; {h.args.scale} scale)", "",
        f"MACs at {size[0]}x{size[1]} with {rois} RoIs (the test-time proposals, as `hitdet info` prices every "
        f"detector); AP on the val split after the last epoch; learning rates from the sweep on a held-out fifth "
        f"of train: our space {lrs['space']:g}, torchvision {lrs['torchvision']:g}.", "",
    ]
    sweep = read_json_or_none(h.out / "sweep" / "table.json") or []
    if sweep:  # the sweep itself: AP on the held-out fifth, per probe and lr
        swept = sorted({r["lr"] for r in sweep})
        lines += ["| lr probe (held-out fifth of train) | " + " | ".join(f"lr {lr:g}" for lr in swept) + " |",
                  "|---|" + "---:|" * len(swept)]
        for probe in dict.fromkeys(r["probe"] for r in sweep):
            ap = {r["lr"]: r["AP"] for r in sweep if r["probe"] == probe}
            lines.append(f"| {probe} | " + " | ".join(_f(ap[lr]) if lr in ap else "" for lr in swept) + " |")
        lines.append("")

    # -- every row ------------------------------------------------------------------------------------
    lines += ["| row | kind | MACs (M) | params (K) | AP (mean over training seeds) | AP per seed | AP50 | "
              "levelled off | train min |", "|---|---|---:|---:|---:|---|---:|---|---:|"]
    table = []
    for name, runs in rows.items():
        aps = [r["AP"] for r in runs]
        lev = [levelled([p["AP"] for p in r.get("curve", [])]) for r in runs]
        flags = {x["levelled"] for x in lev}
        note = "yes" if flags == {True} else ("no" if False in flags else "n/a")
        if False in flags:
            note += " (gain " + ", ".join(_f(x["gain"]) for x in lev) + ")"
        entry = {"row": name, "kind": runs[0]["kind"], "macs": runs[0]["macs"], "params": runs[0]["params"],
                 "AP": float(np.mean(aps)), "AP_seeds": aps, "AP50": float(np.mean([r["AP50"] for r in runs])),
                 "levelled": note, "minutes": float(np.mean([r["seconds"] for r in runs])) / 60,
                 "diverged": any(r.get("diverged") for r in runs)}
        if runs[0]["kind"] == "random":
            entry["rejected"] = runs[0].get("rejected")
            entry["matched"] = runs[0].get("matched")
        table.append(entry)
        lines.append(f"| {name} | {entry['kind']} | {entry['macs'] / 1e6:.1f} | {entry['params'] / 1e3:.0f} | "
                     f"**{_f(entry['AP'])}** | {', '.join(_f(a) for a in aps)} | {_f(entry['AP50'])} | {note} | "
                     f"{entry['minutes']:.1f} |")
    randoms = [e for e in table if e["kind"] == "random"]
    if randoms:
        lines += ["", f"Random samples: {len(randoms)} of the first search seed's sub spaces within ±"
                  f"{100 * h.args.tolerance:.0f} % of its MACs; {sum(e['rejected'] or 0 for e in randoms)} draws "
                  f"rejected, {sum(not e['matched'] for e in randoms)} not matched (closest taken)."]
    lines += ["", "Hand picks: " + "; ".join(f"`{k}`: {v[0]}" for k, v in HAND_PICKS.items()) + "."]

    # -- paired differences ----------------------------------------------------------------------------
    lines += ["", "## Paired differences (AP, mean over seeds; 95 % bootstrap interval)", "",
              "| searched | minus | difference | 95 % interval | MACs searched / other | excludes 0 |",
              "|---|---|---:|---|---:|---|"]
    diffs = []
    hands = {name: _units(runs, name) for name, runs in rows.items() if runs[0]["kind"] in ("hand-pick", "torchvision")}
    for variant in h.variants:
        searched = _group(rows, "searched", variant)
        if not searched:
            continue
        s_macs = float(np.mean([rows[u][0]["macs"] for u in searched]))
        others = {**hands, "random (K)": _group(rows, "random"), CONTROL: _group(rows, "control")}
        if variant != h.variants[0]:  # the random samples and the control belong to the first variant
            others = dict(hands)
        for other, units in others.items():
            if not units:
                continue
            o_macs = float(np.mean([rows[u][0]["macs"] for u in units]))
            d = paired_bootstrap(searched, units, seed=0)
            excl = "yes, above" if d["lo"] > 0 else ("yes, below" if d["hi"] < 0 else "no")
            diffs.append({"variant": variant, "other": other, **d, "macs_ratio": s_macs / o_macs})
            lines.append(f"| {variant} ({d['units_x']} seeds) | {other} | {d['diff']:+.3f} | "
                         f"[{d['lo']:+.3f}, {d['hi']:+.3f}] | {s_macs / o_macs:.2f} | {excl} |")
    lines += ["", "The bootstrap resamples the training seeds (shared, so the difference is paired) and, within "
              "each row, its units (search seeds, random samples); with few units the interval is crude."]

    # -- seed agreement --------------------------------------------------------------------------------
    lines += ["", "## Do independent search seeds agree? (fraction of positions with the same op, mean over pairs)",
              "", "| run | all | " + " | ".join(COMPONENTS) + " | chance (uniform picks from the same sub spaces) | "
              "searched MACs (M) per seed | α decisive (≥ 2× uniform) / pure noise at the same steps and lr |",
              "|---|---:|" + "---:|" * len(COMPONENTS) + "---:|---|---|"]
    agree = {}
    for variant in variants:
        samples, choices, dec, noise, macs = [], [], [], [], []
        for seed in h.search_seeds:
            sample, kept, meta = h.searched(variant, seed)
            samples.append(sample)
            choices.append(_ops_per_label(kept, labels, list(OP_NAMES)))
            macs.append(h.macs_of(sample, settings))
            d = meta.get("decisiveness") or {}
            steps = (meta.get("architecture_steps") or {})
            if d.get("positions") and steps.get("planned") and steps.get("arc_learning_rate"):
                sizes = [len(v) for v in choices[-1].values()]
                noise.append(noise_decisiveness(d["positions"], int(np.median(sizes)), int(steps["planned"]),
                                                float(steps["arc_learning_rate"]), repeats=10)["at_least_2x_uniform"])
                dec.append(d["at_least_2x_uniform"])
        per = {c: agreement(samples, [lb for lb in labels if lb.startswith(c + "/")]) for c in COMPONENTS}
        entry = {"all": agreement(samples, labels), **per, "chance": chance_agreement(choices, labels),
                 "macs": macs, "decisive": dec, "noise_decisive": noise}
        agree[variant] = entry
        dec_text = (f"{np.mean(dec):.1f} / {np.mean(noise):.1f} of {len(labels)}" if dec else "n/a")
        lines.append(f"| {variant} | **{_f(entry['all'])}** | " + " | ".join(_f(per[c]) for c in COMPONENTS)
                     + f" | {_f(entry['chance'])} | " + " / ".join(f"{m / 1e6:.0f}" for m in macs)
                     + f" | {dec_text} |")
    lines += ["", f"`{CONTROL}`: the same pipeline with the detection loss cut from the architecture step "
              "(`strategy.arch_loss_weight=0`): what the FLOPs penalty and the screening regulariser choose alone."]

    markdown = "\n".join(lines) + "\n"
    write_text_atomic(h.out / "report.md", markdown)
    _plot_curves(rows, h.out / "curves.png", f"{h.dataset}: val AP per epoch (mean over training seeds)")
    report = {"command": command.strip(), "dataset": h.dataset, "input_size": list(size), "rois": rois, "lrs": lrs,
              "rows": table, "differences": diffs, "agreement": agree, "markdown": markdown,
              "row_mean": {name: row_mean(_units(runs, name)) for name, runs in rows.items()}}
    write_json_atomic(h.out / "report.json", {k: v for k, v in report.items() if k != "markdown"})
    return report


def _plot_curves(rows: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"hand-pick": ("tab:blue", "-", 1.6), "torchvision": ("tab:green", "--", 1.6),
              "searched": ("tab:red", "-", 2.0), "control": ("tab:gray", ":", 1.4), "random": ("tab:orange", "-", 0.7)}
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, runs in rows.items():
        curves = [r.get("curve") or [] for r in runs]
        n = min((len(c) for c in curves), default=0)
        if n == 0:
            continue
        epochs = [p["epoch"] for p in curves[0][:n]]
        ap = np.mean([[p["AP"] for p in c[:n]] for c in curves], axis=0)
        colour, ls, lw = styles.get(runs[0]["kind"], ("black", "-", 1.0))
        label = name if runs[0]["kind"] != "random" else ("random samples" if name.endswith("random-1") else None)
        ax.plot(epochs, ap, color=colour, linestyle=ls, linewidth=lw, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val AP")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
