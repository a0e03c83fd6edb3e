"""Pictures: an architecture as boxes (in the spirit of the paper's Fig. 5).

matplotlib is an optional extra (``pip install hitdet[plot]``); it is imported on use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hitdet.architecture import Architecture
from hitdet.errors import UserError
from search_spaces.ops import OPS

FAMILY_COLOURS = {"ir": "#8ecae6", "sep": "#ffb703", "conv": "#fb8500", "skip": "#d9d9d9", "fixed": "#bdb2ff"}


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or a clear error when the extra is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install 'hitdet[plot]'") from None
    return plt


def _colour(op: str) -> str:
    return FAMILY_COLOURS[OPS[op].family]


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, colour: str, fontsize: float = 7) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=colour, ec="#333333", lw=0.6))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Any, x0: float, y0: float, x1: float, y1: float) -> None:
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "lw": 0.6, "color": "#555555"})


def plot_architecture(arch: Architecture, out: str | os.PathLike[str]) -> Path:
    """Draw backbone (stem, stages, tail), neck cells and head blocks, coloured by op family."""
    plt = pyplot()
    st, ops = arch.structure, arch.sample()
    rows: list[tuple[str, str, str]] = [("stem", f"{st.stem.op}  s{st.stem.stride}  {st.stem.out_channels}", "fixed")]
    taps: list[int] = []
    labels = iter(st.backbone_labels())
    for stage in st.stages:
        for slot in stage:
            label = next(labels)
            rows.append((label.split("/")[1], f"{ops[label]}  s{slot.stride}  {slot.out_channels}", ops[label]))
        taps.append(len(rows) - 1)
    for t in st.tail:
        rows.append(("tail", f"{t.op}  s{t.stride}  {t.out_channels}", "fixed"))
    if st.tail:
        taps[-1] = len(rows) - 1

    h, gap = 0.8, 0.2
    height = len(rows) * (h + gap)
    fig, ax = plt.subplots(figsize=(13, max(6.0, height * 0.42)))
    y_of = {}
    for i, (name, text, op) in enumerate(rows):
        y = height - (i + 1) * (h + gap)
        y_of[i] = y + h / 2
        colour = FAMILY_COLOURS["fixed"] if op == "fixed" else _colour(op)
        _box(ax, 0, y, 4.2, h, text, colour)
        ax.text(-0.15, y + h / 2, name, ha="right", va="center", fontsize=6)
    ax.text(2.1, height + 0.4, "backbone", ha="center", fontsize=10, weight="bold")

    levels = st.num_levels
    lat, outs = st.neck_labels()[:levels], st.neck_labels()[levels:]
    for i in range(levels):
        y = y_of[taps[i]] - h / 2
        _box(ax, 5.2, y, 2.6, h, f"lateral{i + 1}: {ops[lat[i]]}", _colour(ops[lat[i]]))
        _box(ax, 8.4, y, 2.6, h, f"out{i + 1}: {ops[outs[i]]}", _colour(ops[outs[i]]))
        _arrow(ax, 4.2, y + h / 2, 5.2, y + h / 2)
        _arrow(ax, 7.8, y + h / 2, 8.4, y + h / 2)
        ax.text(11.1, y + h / 2, f"N{i + 1}", va="center", fontsize=7)
    ax.text(8.1, height + 0.4, f"neck (PANet, {st.neck_channels} ch)", ha="center", fontsize=10, weight="bold")

    head_top = height - 1.0
    for i, label in enumerate(st.head_labels()):
        _box(ax, 12.2, head_top - i * (h + gap), 2.8, h, f"b{i}: {ops[label]}", _colour(ops[label]))
    fc_y = head_top - st.head_blocks * (h + gap)
    _box(ax, 12.2, fc_y, 2.8, h, f"fc {st.fc_channels}", FAMILY_COLOURS["fixed"])
    ax.text(13.6, height + 0.4, f"RoI head ({st.roi_size}x{st.roi_size})", ha="center", fontsize=10, weight="bold")

    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(fc=c, ec="#333333", label=f) for f, c in FAMILY_COLOURS.items()],
        loc="lower right",
        fontsize=8,
        frameon=False,
    )
    ax.set_xlim(-1.2, 15.4)
    ax.set_ylim(-0.3, height + 1.0)
    ax.axis("off")
    ax.set_title(f"{arch.name or 'architecture'} ({arch.detector_type})", fontsize=11)
    return _save(fig, out)


def _read_run(run: Path) -> dict[str, Any]:
    from hitdet.io import read_json

    path = run / "metadata.json"
    if not path.is_file():
        raise UserError(f"{run}: not a screen/search run folder (no metadata.json)")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("alpha_probabilities"), dict):
        raise UserError(f"{path}: alpha_probabilities: missing")
    return data


def plot_run(run: str | os.PathLike[str], out: str | os.PathLike[str]) -> list[Path]:
    """α heatmaps per component (layers x ops) and the column scores over epochs (paper Fig. 4)."""
    plt = pyplot()
    run, out = Path(run), Path(out)
    meta = _read_run(run)
    probs: dict[str, dict[str, float]] = meta["alpha_probabilities"]
    components: dict[str, list[str]] = {}
    for label in probs:
        components.setdefault(label.split("/")[0] if "/" in label else "default", []).append(label)
    written = []
    for comp, labels in components.items():
        ops = list(dict.fromkeys(op for label in labels for op in probs[label]))
        matrix = [[probs[label].get(op, float("nan")) for op in ops] for label in labels]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * len(ops) + 2.5), max(2.5, 0.3 * len(labels) + 1.5)))
        im = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0)
        ax.set_xticks(range(len(ops)), ops, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), [label.split("/")[-1] for label in labels], fontsize=7)
        ax.set_title(f"{comp}: op probabilities (softmax of α), {meta.get('mode', '')}", fontsize=9)
        fig.colorbar(im, ax=ax)
        written.append(_save(fig, out / f"alpha_{comp}.png"))
    history = meta.get("score_history") or []
    if history:
        comps = sorted({c for h in history for c in h["scores"]})
        fig, axes = plt.subplots(1, len(comps), figsize=(5.5 * len(comps), 4), squeeze=False)
        for ax, comp in zip(axes[0], comps, strict=True):
            ops = sorted({op for h in history for op in h["scores"].get(comp, {})})
            for op in ops:
                xs = [h["epoch"] + 1 for h in history if op in h["scores"].get(comp, {})]
                ys = [h["scores"][comp][op] for h in history if op in h["scores"].get(comp, {})]
                ax.plot(xs, ys, marker="o", ms=2, lw=0.8, label=op)
            ax.set_title(f"{comp}: op scores over epochs", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("mean probability over layers")
            if len(ops) <= 12:
                ax.legend(fontsize=6)
        written.append(_save(fig, out / "score_history.png"))
    return written


def _save(fig: Any, out: str | os.PathLike[str]) -> Path:
    """Save through a temporary file so that a failed plot leaves nothing half-written."""
    from hitdet.io import atomic_path

    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=130, bbox_inches="tight", format=out.suffix.lstrip(".") or "png")
    finally:
        fig.clf()
        import matplotlib.pyplot as plt

        plt.close(fig)
    return out
