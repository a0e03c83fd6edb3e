"""TensorBoard output of the search: per-epoch probability heatmaps and screening events.

Scalars go through ``LightningModule.log``; images and text need the logger's writer, so
they are written only when the Lightning logger is a TensorBoard one (anything with an
``experiment.add_image``); other loggers, or none, are skipped silently. The heatmaps are
drawn with matplotlib's Agg canvas directly (no pyplot, no global backend change).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from strategies.penalty import Component


def _writer(logger: Any) -> Any:
    exp = getattr(logger, "experiment", None) if logger is not None else None
    return exp if exp is not None and hasattr(exp, "add_image") else None


def heatmap_image(title: str, rows: list[str], columns: list[str], matrix: np.ndarray) -> np.ndarray:
    """An RGB image (H, W, 3, uint8) of a layers x ops probability matrix."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h = max(2.5, 0.25 * len(rows) + 1.5)
    w = max(4.0, 0.28 * len(columns) + 2.5)
    fig = Figure(figsize=(w, h), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(float(matrix.max()), 1e-6))
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=6)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_heatmaps(
    logger: Any,
    components: dict[str, Component],
    probs: dict[str, torch.Tensor],
    active: dict[str, torch.Tensor],
    epoch: int,
) -> None:
    """One image per component: ``alpha/<component>`` (rows = layers, columns = searched ops)."""
    writer = _writer(logger)
    if writer is None:
        return
    with torch.no_grad():
        for c, comp in components.items():
            mat = comp.matrix({k: v.detach().double().cpu() for k, v in probs.items()})
            keep = comp.presence({k: v.cpu() for k, v in active.items()}).any(0)
            cols = [col for col, k in zip(comp.columns, keep.tolist(), strict=True) if k]
            img = heatmap_image(f"{c}: op probabilities, epoch {epoch}", comp.labels, cols, mat[:, keep].numpy())
            writer.add_image(f"alpha/{c}", img, global_step=epoch, dataformats="HWC")


def log_event(logger: Any, event: Any, index: int) -> None:
    """A screening removal as TensorBoard text (``screening/removed``)."""
    writer = _writer(logger)
    if writer is None:
        return
    writer.add_text(
        "screening/removed",
        f"epoch {event.epoch}, step {event.step}: removed `{event.op}` from **{event.component}** "
        f"(score {event.score:.4g})",
        global_step=index,
    )
