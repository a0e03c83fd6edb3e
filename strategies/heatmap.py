"""The α heatmap: one drawing, shared by the search's TensorBoard images and ``hitdet plot RUN``.

Softmax probabilities of 32 candidates sit near 1/32 for most of a search, so an absolute colour
scale paints every cell the same. Cells are coloured by ``log2(p * n_active)`` instead (0 =
uniform over the layer's active ops, +1 = twice as likely, -1 = half) with a diverging colormap
centred at 0 and scaled to the panel's own range. Every op the component started with keeps its
column: ops screened out are grey and their label says after which epoch they left; the chosen
op of each layer (argmax) is outlined. Figure size follows the op and layer counts so that the
7 pt labels stay legible at 32 ops.

Drawn on matplotlib's Agg canvas directly (no pyplot, no global backend change), so that the
training process can call it. No hitdet imports (this package sits below ``hitdet``).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FONT = 7  # points; tick labels and annotations
CELL = 0.2  # inches per op column and per layer row
REMOVED = "#9e9e9e"
ABSENT = "#f2f2f2"
COMPONENT_ORDER = ("backbone", "neck", "head")


@dataclass
class HeatmapPanel:
    """One component: rows are its searched layers, columns every op it started with."""

    component: str
    layers: list[str]
    ops: list[str]
    probs: list[dict[str, float]]  # per layer: active op -> probability
    removed: dict[str, int] = field(default_factory=dict)  # op -> the epoch (from 1) at whose end it left


def relative_to_uniform(p: Any, n_active: Any) -> Any:
    """``log2(p * n_active)``: 0 where ``p = 1/n_active`` (uniform), +1 at twice uniform, -1 at half."""
    return np.log2(np.asarray(p, dtype=float) * np.asarray(n_active, dtype=float))


def ordered(components: list[str]) -> list[str]:
    """Backbone, neck, head first (the detector's data flow), then anything else in given order."""
    known = [c for c in COMPONENT_ORDER if c in components]
    return known + [c for c in components if c not in COMPONENT_ORDER]


def relative_matrix(panel: HeatmapPanel) -> np.ndarray:
    """Layers x ops of :func:`relative_to_uniform`; NaN where the op is not active in the layer."""
    mat = np.full((len(panel.layers), len(panel.ops)), np.nan)
    col = {op: j for j, op in enumerate(panel.ops)}
    for i, row in enumerate(panel.probs):
        for op, p in row.items():
            if op in col and p > 0:
                mat[i, col[op]] = float(relative_to_uniform(p, len(row)))
    return mat


def _short(label: str) -> str:
    return label.split("/", 1)[1] if "/" in label else label


def _draw_panel(fig: Any, ax: Any, panel: HeatmapPanel) -> None:
    from matplotlib.colors import ListedColormap, TwoSlopeNorm
    from matplotlib.patches import Rectangle

    mat = relative_matrix(panel)
    finite = mat[np.isfinite(mat)]
    limit = max(float(np.abs(finite).max()) if finite.size else 0.0, 0.01)  # symmetric: 0 stays the centre
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    # Background first: removed columns grey, cells where an op never was a candidate near-white.
    background = np.zeros(mat.shape)
    for j, op in enumerate(panel.ops):
        if op in panel.removed:
            background[:, j] = 1.0
    ax.imshow(background, aspect="auto", cmap=ListedColormap([ABSENT, REMOVED]), vmin=0, vmax=1,
              interpolation="nearest")
    im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
    for i, row in enumerate(panel.probs):
        if row:
            best = max(row, key=lambda op: row[op])
            if best in panel.ops:
                j = panel.ops.index(best)
                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, ec="black", lw=1.5))
                ax.plot([j], [i], marker="o", ms=2.5, color="black")
    labels = [
        f"{op} · out ep{panel.removed[op]}" if op in panel.removed else op for op in panel.ops
    ]
    ax.set_xticks(range(len(panel.ops)), labels, rotation=90, fontsize=FONT)
    for tick, op in zip(ax.get_xticklabels(), panel.ops, strict=True):
        if op in panel.removed:
            tick.set_color("#707070")
    ax.set_yticks(range(len(panel.layers)), [_short(label) for label in panel.layers], fontsize=FONT)
    ax.set_xticks(np.arange(len(panel.ops) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(panel.layers) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=0.4)
    ax.tick_params(which="minor", length=0)
    active = len([op for op in panel.ops if op not in panel.removed])
    ax.set_title(
        f"{panel.component}: {len(panel.layers)} layers, {active} of {len(panel.ops)} ops left",
        fontsize=FONT + 2, loc="left",
    )
    bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01, aspect=max(4, 1.5 * len(panel.layers)))
    bar.ax.tick_params(labelsize=FONT)
    bar.set_label("log2(p · n active)\n0 = uniform", fontsize=FONT)


LEGEND = ("colour: probability relative to uniform over the layer's active ops; outlined with a dot: the chosen op "
          "(argmax)")
LEGEND_REMOVED = "; grey: screened out (label: after which epoch)"  # only where some op was


def heatmap_figure(panels: list[HeatmapPanel], title: str = "", dpi: int = 100) -> Any:
    """A matplotlib Figure with one heatmap panel per component, stacked in the given order."""
    from matplotlib.figure import Figure

    n_ops = max(len(p.ops) for p in panels)
    longest = max((len(op) for p in panels for op in p.ops), default=4)
    label_in = (longest + 12) * FONT * 0.6 / 72  # rotated x tick labels, removal note included
    heights = [CELL * max(len(p.layers), 2) + label_in + 0.35 for p in panels]
    width = CELL * n_ops + 2.6
    # the legend wraps to the figure's width (an 8-op search is narrow), and the figure grows by its lines
    text = LEGEND + (LEGEND_REMOVED if any(p.removed for p in panels) else "")
    legend = textwrap.wrap(text, width=max(30, int(width * 72 / ((FONT + 1) * 0.6))))
    top = (0.2 + 0.2 * (len(legend) + 1)) if title else 0.2
    fig = Figure(figsize=(width, sum(heights) + top), dpi=dpi, layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, panel in zip(axes, panels, strict=True):
        _draw_panel(fig, ax, panel)
    if title:
        fig.suptitle("\n".join([title, *legend]), fontsize=FONT + 1)
    return fig


def figure_rgb(fig: Any) -> np.ndarray:
    """An RGB array (H, W, 3, uint8) of a Figure, for ``SummaryWriter.add_image``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def epochs_removed(events: list[dict[str, Any]], component: str, base: int = 1) -> dict[str, int]:
    """op -> the epoch (from 1) at whose end it was screened out of ``component``, from removal events.

    ``base``: what the events count from (0 in files written before epochs were counted from 1).
    """
    return {str(e["op"]): int(e["epoch"]) + 1 - base for e in events if e.get("component") == component}

