"""Pictures of an architecture, a search run, a train run, and several train runs side by side.

* :func:`plot_architecture`: backbone, the neck's top-down and bottom-up paths, head (paper Fig. 5 spirit);
* :func:`plot_run` of a screen/search run: α heatmaps (:mod:`strategies.heatmap`, the same drawing as
  the TensorBoard images) and the op scores over epochs (paper Fig. 4); of a train run: loss, lr and AP;
* :func:`plot_compare`: AP against MACs for several train runs (:mod:`hitdet.compare`).

Figures are built on matplotlib's Agg canvas (no pyplot state) and saved through a temporary file,
so a failed plot leaves nothing half-written; nothing is replaced unless ``force`` is set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hitdet.architecture import Architecture
from hitdet.errors import UserError
from hitdet.run_files import SEARCH, read_metadata, read_metrics, run_kind, run_name
from search_spaces.kinds import detector_kind
from search_spaces.ops import OPS
from search_spaces.panet import PANET
from strategies.heatmap import FONT, HeatmapPanel, epochs_removed, heatmap_figure, ordered

FAMILY_COLOURS = {"ir": "#8ecae6", "sep": "#ffb703", "conv": "#e07a5f", "skip": "#d9d9d9", "fixed": "#bdb2ff"}
DPI = 130
LABELLED = 3  # score history: the top and the bottom ops named (in the legend)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def check_free(paths: list[Path], force: bool) -> None:
    """Refuse (one line) to replace an existing file unless ``force``, or to write where no file can be
    created (under a file, in a read-only folder); called before anything is drawn."""
    from hitdet.io import check_creatable

    for path in paths:
        if path.exists() and not force:
            raise UserError(f"{path}: exists (use --force to replace it)")
        check_creatable(path)


def _save(fig: Any, out: str | os.PathLike[str], dpi: int = DPI) -> Path:
    """Save through a temporary file (:func:`hitdet.io.atomic_path`): a failed plot leaves nothing half-written,
    and a disk error is one line naming the folder."""
    from hitdet.io import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lstrip(".").lower() or "png")
    return out


# ---------------------------------------------------------------- architecture


def _colour(op: str) -> str:
    return FAMILY_COLOURS[OPS[op].family]


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, colour: str, fontsize: float = FONT) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=colour, ec="#333333", lw=0.6))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Any, x0: float, y0: float, x1: float, y1: float) -> None:
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "lw": 0.7, "color": "#444444"})


def _path(ax: Any, points: list[tuple[float, float]]) -> None:
    """A polyline with an arrow head on its last segment."""
    xs, ys = zip(*points, strict=True)
    ax.plot(xs[:-1], ys[:-1], color="#444444", lw=0.7)
    _arrow(ax, xs[-2], ys[-2], xs[-1], ys[-1])


def _sum_node(ax: Any, x: float, y: float) -> None:
    """A round "+" (a text box, so that it stays round whatever the axes' aspect)."""
    ax.text(x, y, "+", ha="center", va="center", fontsize=FONT + 1, zorder=4,
            bbox={"boxstyle": "circle,pad=0.25", "fc": "white", "ec": "#333333", "lw": 0.7})


def _draw_neck(ax: Any, st: Any, ops: dict[str, str], ys: list[float], strides: list[int], h: float,
               height: float) -> float:
    """The neck beside the backbone's taps C1..C_L at heights ``ys``; returns the x where its outputs N_i stand.

    PANet's two paths are drawn as such; a neck of another kind as its cells, one row a level.
    """
    if st.neck_type != PANET:
        return _draw_cells(ax, st, ops, ys, h, height)
    levels = st.num_levels
    lat, outs = st.neck_labels()[:levels], st.neck_labels()[levels:]
    x_lat, x_td, x_out, x_bu, x_conv, x_n = 5.0, 8.25, 9.0, 12.25, 12.75, 14.55
    for i in range(levels):
        y = ys[i]
        ax.text(4.3, y + 0.12, f"C{i + 1}", fontsize=FONT + 1, weight="bold")
        ax.text(4.3, y - 0.3, f"/{strides[i]}", fontsize=FONT, color="#555555")
        _arrow(ax, 4.2, y, x_lat, y)
        _box(ax, x_lat, y - h / 2, 2.5, h, f"lateral{i + 1}: {ops[lat[i]]}", _colour(ops[lat[i]]))
        ax.text(x_lat + 2.6, y + 0.12, f"L{i + 1}", fontsize=FONT)
        if i < levels - 1:  # P_i = L_i + up(P_{i+1})
            _sum_node(ax, x_td, y)
            _arrow(ax, x_lat + 2.5, y, x_td - 0.22, y)
            _arrow(ax, x_td, ys[i + 1], x_td, y + 0.22)
            ax.text(x_td - 0.08, (y + ys[i + 1]) / 2, "up 2x", rotation=90, ha="right", va="center", fontsize=FONT,
                    color="#555555")
        else:  # P_L = L_L
            ax.plot([x_lat + 2.5, x_td], [y, y], color="#444444", lw=0.7)
            ax.plot([x_td], [y], marker="o", ms=3, color="#444444")
        ax.text(x_td + 0.1, y + 0.28, f"P{i + 1}", fontsize=FONT)
        _arrow(ax, x_td + (0.22 if i < levels - 1 else 0), y, x_out, y)
        _box(ax, x_out, y - h / 2, 2.5, h, f"out{i + 1}: {ops[outs[i]]}", _colour(ops[outs[i]]))
        ax.text(x_out + 2.55, y + 0.12, f"O{i + 1}", fontsize=FONT)
        if i == 0:  # N_1 = O_1
            _arrow(ax, x_out + 2.5, y, x_n, y)
        else:  # N_i = conv3x3(maxpool2(N_{i-1}) + O_i)
            _arrow(ax, x_out + 2.5, y, x_bu - 0.22, y)
            _sum_node(ax, x_bu, y)
            _arrow(ax, x_bu + 0.22, y, x_conv, y)
            _box(ax, x_conv, y - h / 2, 1.3, h, "conv3x3", FAMILY_COLOURS["fixed"])
            _arrow(ax, x_conv + 1.3, y, x_n, y)
            below = y - h / 2 - 0.15
            _path(ax, [(x_n + 0.15, ys[i - 1]), (x_n + 0.15, below), (x_bu, below), (x_bu, y - 0.22)])
            ax.text(x_bu + 0.1, below - 0.05, "maxpool 2", va="top", fontsize=FONT, color="#555555")
        ax.plot([x_n + 0.15], [y], marker="o", ms=4, color="#222222")
        ax.text(x_n + 0.35, y, f"N{i + 1}", va="center", fontsize=FONT + 1, weight="bold")
    ax.text((x_lat + x_n) / 2, height + 0.3, f"neck (PANet, {st.neck_channels} channels)", ha="center",
            fontsize=FONT + 3, weight="bold")
    if levels > 1:
        # in the widest gap between two levels, clear of the P_i and N_i names (a half-depth backbone's
        # top levels are two rows apart: the top gap is too short for the words)
        k = max(range(levels - 1), key=lambda i: ys[i + 1] - ys[i])
        mid = (ys[k] + ys[k + 1] + 0.28) / 2
        ax.text(x_td + 0.08, mid, "top-down path", rotation=90, va="center", fontsize=FONT, style="italic")
        ax.text(x_n + 0.23, mid, "bottom-up path", rotation=90, va="center", fontsize=FONT, style="italic")
    return x_n


def _draw_cells(ax: Any, st: Any, ops: dict[str, str], ys: list[float], h: float, height: float) -> float:
    """A neck of another kind than PANet: its cells in label order, spread over the levels' rows."""
    labels = st.neck_labels()
    per_row = -(-len(labels) // len(ys))
    x0, width = 5.0, 8.6 / per_row
    for i, label in enumerate(labels):
        y, col = ys[min(i // per_row, len(ys) - 1)], i % per_row
        text = f"{label.split('/')[1]}: {ops[label]}"
        _box(ax, x0 + col * width, y - h / 2, width - 0.15, h, text, _colour(ops[label]))
    for i, y in enumerate(ys):
        _arrow(ax, 4.2, y, x0, y)
        ax.text(4.3, y + 0.12, f"C{i + 1}", fontsize=FONT + 1, weight="bold")
    ax.text(x0 + 4.3, height + 0.3, f"neck ({st.neck_type}, {st.neck_channels} channels)", ha="center",
            fontsize=FONT + 3, weight="bold")
    return 14.55


def plot_architecture(arch: Architecture, out: str | os.PathLike[str], force: bool = False, dpi: int = DPI) -> Path:
    """Backbone (stem at the bottom, coarse levels on top), the PANet neck's two paths, the head; ops by family."""
    out = Path(out)
    check_free([out], force)
    return _save(architecture_figure(arch), out, dpi)


def architecture_figure(arch: Architecture) -> Any:
    """The Figure :func:`plot_architecture` saves."""
    st, ops = arch.structure, arch.sample()
    rows: list[tuple[str, str, str]] = [("stem", f"{st.stem.op}  s{st.stem.stride}  {st.stem.out_channels}", "fixed")]
    taps: list[int] = []
    strides: list[int] = []
    stride = st.stem.stride
    labels = iter(st.backbone_labels())
    for stage in st.stages:
        for slot in stage:
            label = next(labels)
            stride *= slot.stride
            rows.append((label.split("/")[1], f"{ops[label]}  s{slot.stride}  {slot.out_channels}", ops[label]))
        taps.append(len(rows) - 1)
        strides.append(stride)
    for t in st.tail:
        stride *= t.stride
        rows.append(("tail", f"{t.op}  s{t.stride}  {t.out_channels}", "fixed"))
    if st.tail:
        taps[-1] = len(rows) - 1
        strides[-1] = stride

    h, step = 0.8, 1.0
    height = len(rows) * step
    fig = _figure(14.5, max(6.5, height * 0.42 + 2.2))
    ax = fig.add_subplot(1, 1, 1)
    y_of = {}
    for i, (name, text, op) in enumerate(rows):  # bottom-up: the image enters at the stem
        y = i * step
        y_of[i] = y + h / 2
        _box(ax, 0, y, 4.2, h, text, FAMILY_COLOURS["fixed"] if op == "fixed" else _colour(op))
        ax.text(-0.15, y + h / 2, name, ha="right", va="center", fontsize=FONT)
    ax.text(2.1, height + 0.3, "backbone (op  stride  channels)", ha="center", fontsize=FONT + 3, weight="bold")

    levels = st.num_levels
    ys = [y_of[taps[i]] for i in range(levels)]
    x_n = _draw_neck(ax, st, ops, ys, strides, h, height)

    x_head = 16.0
    two_stage = detector_kind(arch.detector_type).two_stage
    head_rows = [(f"RoIAlign {st.roi_size}x{st.roi_size} on N1..N{levels}", "fixed")] if two_stage else []
    half = len(st.head_labels()) // 2  # one-stage: the first half is the class tower, the rest the box tower
    head_rows += [
        (f"b{i}: {ops[label]}" if two_stage else f"{'cls' if i < half else 'box'} b{i}: {ops[label]}", ops[label])
        for i, label in enumerate(st.head_labels())
    ]
    head_rows += [(f"fc {st.fc_channels}", "fixed"), ("class + box predictor", "fixed")] if two_stage else []
    top = height - 1.0
    for i, (text, op) in enumerate(head_rows):
        _box(ax, x_head, top - i * step, 2.9, h, text, FAMILY_COLOURS["fixed"] if op == "fixed" else _colour(op))
        if i and (two_stage or i != half):  # the two one-stage towers run side by side on each level
            _arrow(ax, x_head + 1.45, top - (i - 1) * step, x_head + 1.45, top - i * step + h)
    head_title = "RoI head (on RPN proposals)" if two_stage else "head (one-stage, on N1..N4 + pool)"
    ax.text(x_head + 1.45, height + 0.3, head_title, ha="center", fontsize=FONT + 3, weight="bold")
    _path(ax, [(x_n + 0.8, ys[-1]), (x_n + 1.0, ys[-1]), (x_n + 1.0, top + h / 2), (x_head, top + h / 2)])

    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(fc=c, ec="#333333", label=f"{f} ops" if f != "fixed" else "fixed layer")
                 for f, c in FAMILY_COLOURS.items()],
        loc="upper left", bbox_to_anchor=(0.0, -0.01), ncol=5, fontsize=FONT + 1, frameon=False,
    )
    caption = (
        "C_i: backbone output i (/stride).  L_i = lateral_i(C_i).  Top-down: P_4 = L_4, P_i = L_i + up(P_i+1) "
        "(nearest 2x upsampling).  O_i = out_i(P_i).\n"
        "Bottom-up: N_1 = O_1, N_i+1 = conv3x3(maxpool2(N_i) + O_i+1).  N_1..N_4 feed the "
        + ("RPN (plus one max-pooled extra level) and the RoI head." if two_stage else "detection head.")
        + "  Searched cells: lateral, out, backbone blocks, head blocks."
    )
    ax.text(0.0, -0.045, caption, transform=ax.transAxes, va="top", fontsize=FONT + 1)
    ax.set_xlim(-1.2, x_head + 3.1)
    ax.set_ylim(-0.4, height + 0.9)
    ax.axis("off")
    ax.set_title(f"{arch.name or 'architecture'} ({arch.detector_type})", fontsize=FONT + 5)
    return fig


# ---------------------------------------------------------------- runs


def plot_run(
    run: str | os.PathLike[str], out: str | os.PathLike[str], force: bool = False, dpi: int = DPI
) -> list[Path]:
    """A screen/search run: alpha.png and score_history.png; a train run: training.png. Into folder ``out``."""
    run, out = Path(run), Path(out)
    if run_kind(run) == SEARCH:
        meta = read_metadata(run)
        names = ["alpha.png"] + (["score_history.png"] if meta.get("score_history") else [])
        check_free([out / n for n in names], force)
        written = [_save(alpha_figure(meta, run_name(run)), out / "alpha.png", dpi)]
        if meta.get("score_history"):
            written.append(_save(score_history_figure(meta, run_name(run)), out / "score_history.png", dpi))
        return written
    metrics = read_metrics(run)
    check_free([out / "training.png"], force)
    return [_save(training_figure(run, metrics), out / "training.png", dpi)]


def heatmap_panels(meta: dict[str, Any]) -> list[HeatmapPanel]:
    """One panel per component (backbone, neck, head order) from a run's metadata."""
    probs: dict[str, dict[str, float]] = meta["alpha_probabilities"]
    initial: dict[str, list[str]] = meta.get("initial_sub_spaces") or {}
    events = meta.get("screening_events") or []
    by_comp: dict[str, list[str]] = {}
    for label in probs:
        by_comp.setdefault(label.split("/", 1)[0] if "/" in label else "default", []).append(label)
    panels = []
    for comp in ordered(list(by_comp)):
        labels = by_comp[comp]
        removed = epochs_removed(events, comp, meta.get("epoch_base", 0))
        ops = list(initial.get(comp) or [])
        ops += [op for op in dict.fromkeys([*(o for lb in labels for o in probs[lb]), *removed]) if op not in ops]
        panels.append(HeatmapPanel(comp, labels, ops, [probs[label] for label in labels], removed))
    return panels


def alpha_figure(meta: dict[str, Any], name: str = "") -> Any:
    """The α heatmaps of all components in one figure (the TensorBoard images, one panel each)."""
    mode = meta.get("mode", "")
    return heatmap_figure(heatmap_panels(meta), f"{name} ({mode}): final op probabilities", dpi=DPI)


def score_history_figure(meta: dict[str, Any], name: str = "") -> Any:
    """Op scores per epoch end, one panel per component (paper Fig. 4).

    An op's score is its mean probability over the layers; it is drawn relative to uniform (score x
    ops still searched), so that the curves do not all jump up together when ops are screened out.
    """
    from matplotlib.ticker import MaxNLocator

    offset = 1 - int(meta.get("epoch_base", 0))  # files from before epochs counted from 1 have none
    history = [{**h, "epoch": h["epoch"] + offset} for h in meta["score_history"]]
    events = [{**e, "epoch": e["epoch"] + offset} for e in meta.get("screening_events") or []]
    comps = ordered(list(dict.fromkeys(c for h in history for c in h["scores"])))
    fig = _figure(6.6 * len(comps) + 0.5, 4.2)
    axes = fig.subplots(1, len(comps), squeeze=False)[0]
    for ax, comp in zip(axes, comps, strict=True):
        series: dict[str, tuple[list[int], list[float]]] = {}
        for h in history:
            scores = h["scores"].get(comp, {})
            for op, score in scores.items():  # relative to uniform: score x ops still searched (1 = uniform)
                xs, ys = series.setdefault(op, ([], []))
                xs.append(h["epoch"])
                ys.append(float(score) * len(scores))
        last_x = max(xs[-1] for xs, _ in series.values())
        final = [op for op in series if series[op][0][-1] == last_x]  # still searched at the last epoch end
        ranked = sorted(final, key=lambda op: series[op][1][-1], reverse=True)
        top, bottom = ranked[:LABELLED], ranked[-LABELLED:] if len(ranked) > LABELLED else []
        bottom = [op for op in bottom if op not in top]
        others = [op for op in series if op not in top and op not in bottom]
        for k, op in enumerate(others):
            ax.plot(*series[op], color="#b0b0b0", lw=0.7, marker="o", ms=1.5, zorder=1,
                    label=f"{len(others)} other ops" if k == 0 else None)
        # Named in a legend, with each one's last value: labels at the line ends landed beside other ops'
        # lines where the ends crowd (the bottom ones overlap); the bottom ones are dashed, so that lines
        # lying on each other stay apart.
        colours = {op: c for op, c in zip(top, ["#d62728", "#ff7f0e", "#bcbd22"], strict=False)}
        colours.update(zip(bottom, ["#1f77b4", "#17becf", "#9467bd"], strict=False))
        for op in [*top, *bottom]:
            xs, ys = series[op]
            ax.plot(xs, ys, color=colours[op], lw=1.6, marker="o" if op in top else "s", ms=2.5, zorder=3,
                    ls="-" if op in top else "--", label=f"{op}  {ys[-1]:.2f}")
        ax.axhline(1.0, ls=":", color="black", lw=0.8, zorder=2, label="uniform (1)")
        removed = [e for e in events if e["component"] == comp]
        for e in removed:
            xs, ys = series.get(e["op"], ([], []))
            if e["epoch"] in xs:
                ax.plot([e["epoch"]], [ys[xs.index(e["epoch"])]], marker="x", color="#7f0000", ms=5,
                        mew=1.0, ls="none", zorder=4)
        per_epoch: dict[int, int] = {}
        for e in removed:
            per_epoch[e["epoch"]] = per_epoch.get(e["epoch"], 0) + 1
        for x, k in sorted(per_epoch.items()):
            ax.axvline(x, color="#7f0000", lw=0.5, ls=":", zorder=0)
            ax.text(x, 0.01, f"-{k} ops ", transform=ax.get_xaxis_transform(), va="bottom", ha="right",
                    fontsize=FONT, color="#7f0000")
        ax.set_xlim(0.7, last_x + 0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=FONT)
        ax.set_xlabel("end of epoch  (x: screened out here)", fontsize=FONT + 1)
        ax.set_ylabel("op score x ops left  (1 = uniform)", fontsize=FONT + 1)
        ax.set_title(f"{comp}: {len(series)} ops, top {len(top)} and bottom {len(bottom)} named",
                     fontsize=FONT + 2)
        ax.legend(fontsize=FONT, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                  title="score at the end", title_fontsize=FONT)
    fig.suptitle(f"{name}: op scores over epochs".strip(": "), fontsize=FONT + 3)
    return fig


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard scalars of a run: tag -> [(step, value)]; empty when there are no event files."""
    folder = run / "tensorboard"
    if not folder.is_dir() or not any(folder.rglob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def training_figure(run: Path, metrics: dict[str, Any]) -> Any:
    """Training loss (total and parts) and learning rate per step, validation AP per epoch."""
    from matplotlib.ticker import MaxNLocator

    scalars = _scalars(run)
    fig = _figure(15, 4.2)
    ax_loss, ax_lr, ax_ap = fig.subplots(1, 3)
    # Lightning logs "epoch" with every logged step (hitdet's logger counts from 1); an epoch ends at the last
    # step it shows.
    last_step: dict[int, int] = {}
    for step, value in scalars.get("epoch", []):
        last_step[int(value)] = max(step, last_step.get(int(value), step))
    epoch_ends = [(step, epoch) for epoch, step in sorted(last_step.items())]
    for tag in sorted(t for t in scalars if t.startswith("train/loss")):
        steps, values = zip(*scalars[tag], strict=True)
        total = tag == "train/loss"
        ax_loss.plot(steps, values, lw=1.8 if total else 0.9, marker="o", ms=2, color="black" if total else None,
                     label="total" if total else tag.removeprefix("train/loss_"), zorder=3 if total else 2)
    lr_tags = [t for t in scalars if t == "lr" or t.startswith("lr-")]
    for tag in lr_tags:
        steps, values = zip(*scalars[tag], strict=True)
        ax_lr.plot(steps, values, lw=1.2, marker="o", ms=2, label=tag)
    for ax in (ax_loss, ax_lr):
        for step, epoch in epoch_ends:
            ax.axvline(step, color="#999999", lw=0.6, ls=":")
            ax.text(step, 1.0, f"ep{epoch}", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=FONT, color="#777777")
        ax.set_xlabel("step (dotted: epoch ends)", fontsize=FONT + 1)
        ax.tick_params(labelsize=FONT)
    ax_loss.set_title("training loss", fontsize=FONT + 3, pad=12)
    if scalars:
        ax_loss.legend(fontsize=FONT, frameon=False)
    else:
        ax_loss.text(0.5, 0.5, "no TensorBoard event files", ha="center", transform=ax_loss.transAxes)
    ax_lr.set_title("learning rate", fontsize=FONT + 3, pad=12)
    history = metrics["history"]
    for key, style in (("AP", "-o"), ("AP50", "--s"), ("AP75", ":^")):
        pts = [(h["epoch"], 100 * h[key]) for h in history if isinstance(h.get(key), int | float)]
        if pts:
            ax_ap.plot(*zip(*pts, strict=True), style, ms=3, label=key)
    best = metrics.get("best")
    if best:
        ax_ap.annotate(f"best AP {100 * best['AP']:.1f} (epoch {best['epoch']})", (best["epoch"], 100 * best["AP"]),
                       textcoords="offset points", xytext=(4, 6), fontsize=FONT)
    ax_ap.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_ap.set_xlabel("epoch", fontsize=FONT + 1)
    ax_ap.set_ylabel("COCO AP x 100 (validation)", fontsize=FONT + 1)
    ax_ap.tick_params(labelsize=FONT)
    ax_ap.set_title("validation AP", fontsize=FONT + 3)
    if history:
        ax_ap.legend(fontsize=FONT, frameon=False)
    fig.suptitle(f"{run_name(run)}: training", fontsize=FONT + 4)
    return fig


# ---------------------------------------------------------------- several runs


def plot_compare(runs: list[Path], out: str | os.PathLike[str], force: bool = False, dpi: int = DPI) -> Path:
    """AP (best validation epoch) against MACs (each run's own input size) for several train runs."""
    from hitdet.compare import dataset_warning, summarise_all

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: expected a .png file")
    check_free([out], force)
    rows = summarise_all(runs)
    warning = dataset_warning(rows)
    if warning:
        print(f"hitdet plot: {warning}", file=sys.stderr)
    shown = [r for r in rows if r.ap is not None]
    fig = _figure(6.5, 4.6 + 0.22 * len(shown))
    ax = fig.add_subplot(1, 1, 1)
    # Each run its own colour and marker, named in a legend below the axes: labels beside the points
    # overlapped one another (runs of similar cost) and were clipped at the edges.
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    for k, r in enumerate(shown):
        h, w = r.input_size
        ax.scatter([r.macs / 1e9], [100 * r.ap], s=42, zorder=3, marker=markers[k % len(markers)],
                   color=f"C{k % 10}", edgecolors="black", linewidths=0.4,
                   label=f"{r.name}: AP {100 * r.ap:.1f}, {r.macs / 1e9:.3g} GMACs, {r.params / 1e6:.2f}M params, "
                         f"{h}x{w}" + (f", {r.latency_ms:.3g} ms" if r.latency_ms is not None else ""))
    if shown:
        ax.legend(fontsize=FONT, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, ncol=1)
    macs = [r.macs for r in shown]
    if macs and max(macs) > 10 * min(macs):
        ax.set_xscale("log")
    missing = [r.name for r in rows if r.ap is None]
    if missing:
        ax.set_title(f"no validation epoch yet: {', '.join(missing)}", fontsize=FONT, loc="left", pad=18)
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=FONT)
    ax.set_xlabel("GMACs (multiply-accumulates at each run's own padded input size)", fontsize=FONT + 1)
    ax.set_ylabel("AP x 100 (best validation epoch)", fontsize=FONT + 1)
    ax.set_title("accuracy against cost", fontsize=FONT + 3)
    return _save(fig, out, dpi)
