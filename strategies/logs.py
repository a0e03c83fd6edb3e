"""TensorBoard output of the search: per-epoch probability heatmaps and screening events.

Scalars go through ``LightningModule.log``; images and text need the logger's writer, so
they are written only when the Lightning logger is a TensorBoard one (anything with an
``experiment.add_image``); other loggers, or none, are skipped silently. The heatmaps are
drawn by :mod:`strategies.heatmap` (matplotlib's Agg canvas, no pyplot).
"""

from __future__ import annotations

from typing import Any

import torch

from strategies.heatmap import HeatmapPanel, epochs_removed, figure_rgb, heatmap_figure
from strategies.penalty import Component, entropy, expected_macs


def _writer(logger: Any) -> Any:
    exp = getattr(logger, "experiment", None) if logger is not None else None
    return exp if exp is not None and hasattr(exp, "add_image") else None


def log_heatmaps(
    logger: Any,
    components: dict[str, Component],
    probs: dict[str, torch.Tensor],
    active: dict[str, torch.Tensor],
    epoch: int,
    initial: dict[str, list[str]] | None = None,
    events: list[Any] = (),
) -> None:
    """One image per component: ``alpha/<component>`` (rows = layers, columns = every op it started with).

    Drawn by :func:`strategies.heatmap.heatmap_figure`, the same picture ``hitdet plot RUN`` saves.
    """
    writer = _writer(logger)
    if writer is None:
        return
    removed = [{"component": e.component, "op": e.op, "epoch": e.epoch} for e in events]
    with torch.no_grad():
        for c, comp in components.items():
            rows = []
            for label in comp.labels:
                p, a = probs[label].detach().double().cpu().tolist(), active[label].cpu().tolist()
                cols = comp.index[label].tolist()
                rows.append({comp.columns[j]: pj for j, pj, aj in zip(cols, p, a, strict=True) if aj})
            panel = HeatmapPanel(c, list(comp.labels), list((initial or {}).get(c) or comp.columns), rows,
                                 epochs_removed(removed, c))
            fig = heatmap_figure([panel], f"{c}: op probabilities after epoch {epoch + 1}")
            writer.add_image(f"alpha/{c}", figure_rgb(fig), global_step=epoch + 1, dataformats="HWC")


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


def summary_scalars(net: Any, costs: Any) -> dict[str, float]:
    """Expected MACs (``search/macs_expected``, ``search/macs_ratio``) and per component the alpha entropy
    (``entropy/<component>``) and ops still searched (``num_ops/<component>``), for the logger."""
    with torch.no_grad():
        probs = net.probs()
        out: dict[str, float] = {}
        if costs.available:
            exp = float(expected_macs(probs, costs.macs))
            out["search/macs_expected"] = exp
            out["search/macs_ratio"] = exp / costs.reference
        for c, comp in net.components.items():
            ent = [float(entropy(probs[label])) for label in comp.labels]
            out[f"entropy/{c}"] = sum(ent) / len(ent)
        out.update(net.num_ops())
    return out


def log_step(module: Any, values: dict[str, Any], net: Any, costs: Any) -> None:
    """Log a training step's losses and :func:`summary_scalars` (host floats: the one device sync),
    and the expected MACs relative to uniform α on the progress bar (the weight loss is there as ``train/loss``)."""
    values = {k: float(v) for k, v in values.items()}
    values.update(summary_scalars(net, costs))
    module.log_dict(values, on_step=True, on_epoch=False, batch_size=1)
    if "search/macs_ratio" in values:
        module.log_dict({"MACs/uniform": values["search/macs_ratio"]}, on_step=True, on_epoch=False, batch_size=1,
                        prog_bar=True, logger=False)
