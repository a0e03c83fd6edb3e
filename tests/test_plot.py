"""``hitdet plot`` and ``hitdet compare`` on hand-written run folders that mimic the real files.

The search run starts from all 32 ops and screens 24 of them out over two epochs, as a screen does;
the train runs have architecture.json, metrics.json and TensorBoard scalars as ``hitdet train`` writes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import unittest.mock
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hitdet.cli import main
from search_spaces.costs import detector_cost
from search_spaces.ops import OP_NAMES
from strategies.heatmap import HeatmapPanel, figure_rgb, heatmap_figure, relative_matrix, relative_to_uniform
from tests.helpers import tiny_arch

PNG = b"\x89PNG\r\n\x1a\n"
LAYERS = {"head": ["head/b0", "head/b1"], "backbone": [f"backbone/s1_b{i}" for i in range(5)],
          "neck": ["neck/lateral1", "neck/lateral2", "neck/out1", "neck/out2"]}  # written head first on purpose


def search_metadata(seed: int = 0) -> dict:
    """32 ops per component; 12 removed after epoch 2 and 12 after epoch 3 (epochs counted from 1), 8 left."""
    rng = np.random.default_rng(seed)
    ops = list(OP_NAMES)
    events, history, alive = [], [], {c: list(ops) for c in LAYERS}
    for epoch in range(3):
        history.append({"epoch": epoch + 1, "step": 3 * (epoch + 1),
                        "scores": {c: {op: 1 / len(alive[c]) + 1e-3 * rng.standard_normal() for op in alive[c]}
                                   for c in LAYERS}})
        if epoch >= 1:
            for c in LAYERS:
                gone = sorted(alive[c], key=lambda op: history[-1]["scores"][c][op])[:12]
                events += [{"component": c, "op": op, "score": history[-1]["scores"][c][op], "epoch": epoch + 1,
                            "step": 3 * (epoch + 1)} for op in gone]
                alive[c] = [op for op in alive[c] if op not in gone]
    probs = {}
    for c, labels in LAYERS.items():
        for label in labels:
            logits = 0.05 * rng.standard_normal(len(alive[c]))
            p = np.exp(logits) / np.exp(logits).sum()
            probs[label] = {op: float(v) for op, v in zip(alive[c], p, strict=True)}
    return {"strategy": "hitdet", "mode": "screen", "alpha_probabilities": probs, "sub_spaces": alive,
            "initial_sub_spaces": {c: list(ops) for c in LAYERS}, "screening_events": events,
            "score_history": history, "epoch_base": 1}


@pytest.fixture
def search_run(tmp_path: Path) -> Path:
    run = tmp_path / "screen"
    run.mkdir()
    (run / "metadata.json").write_text(json.dumps(search_metadata()))
    return run


def write_train_run(run: Path, min_size: int, max_size: int, rois: int, best_ap: float) -> Path:
    """A finished train run: architecture.json, metrics.json (2 epochs) and TensorBoard scalars."""
    from torch.utils.tensorboard import SummaryWriter

    arch = tiny_arch()
    arch = replace(arch, settings=replace(arch.settings, min_size=min_size, max_size=max_size,
                                          rpn_post_nms_top_n_test=rois))
    arch.save(run / "architecture.json")
    history = [{"epoch": 1, "AP": best_ap / 2, "AP50": best_ap, "AP75": 0.0},
               {"epoch": 2, "AP": best_ap, "AP50": 2 * best_ap, "AP75": best_ap / 4}]
    (run / "metrics.json").write_text(json.dumps({"best": history[1], "last": history[1], "history": history}))
    writer = SummaryWriter(str(run / "tensorboard"))
    for step in range(1, 21):
        writer.add_scalar("train/loss", 2.0 / step, step)
        writer.add_scalar("train/loss_classifier", 1.0 / step, step)
        writer.add_scalar("lr-SGD", 0.01 * min(1.0, step / 10), step)
        writer.add_scalar("epoch", float(step > 10) + 1, step)  # hitdet's logger counts epochs from 1
    writer.close()
    return run


def is_png(path: Path, min_bytes: int = 10_000) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) >= min_bytes


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk."""
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_colour_scale_puts_uniform_at_the_centre():
    for n in (1, 2, 8, 32):
        assert relative_to_uniform(1 / n, n) == pytest.approx(0.0, abs=1e-12)
        assert relative_to_uniform(2 / n, n) == pytest.approx(1.0)
        assert relative_to_uniform(0.5 / n, n) == pytest.approx(-1.0)
    # each row is relative to its own number of active ops; inactive cells are NaN
    panel = HeatmapPanel("neck", ["a", "b"], ["x", "y", "z"], [{"x": 0.5, "y": 0.5}, {"x": 0.2, "y": 0.3, "z": 0.5}])
    mat = relative_matrix(panel)
    assert mat[0, 0] == pytest.approx(0.0) and math.isnan(mat[0, 2])
    assert mat[1] == pytest.approx([math.log2(0.2 * 3), math.log2(0.3 * 3), math.log2(0.5 * 3)])


def test_heatmap_panels_keep_every_initial_op_in_detector_order(search_run):
    from hitdet.plot import heatmap_panels

    meta = json.loads((search_run / "metadata.json").read_text())
    panels = heatmap_panels(meta)
    assert [p.component for p in panels] == ["backbone", "neck", "head"]
    for panel in panels:
        assert panel.ops == list(OP_NAMES) and panel.layers == LAYERS[panel.component]
        gone = {e["op"]: e["epoch"] for e in meta["screening_events"] if e["component"] == panel.component}
        assert panel.removed == gone and len(gone) == 24
        mat = relative_matrix(panel)
        assert np.isnan(mat[:, [panel.ops.index(op) for op in gone]]).all()
        assert np.isfinite(mat).sum() == 8 * len(panel.layers)
    assert sorted({e["epoch"] for e in meta["screening_events"]}) == [2, 3]
    # a file written before epochs were counted from 1 (no epoch_base) counted them from 0
    old = {**meta, "screening_events": [{**e, "epoch": e["epoch"] - 1} for e in meta["screening_events"]]}
    del old["epoch_base"]
    assert [p.removed for p in heatmap_panels(old)] == [p.removed for p in panels]


def test_plot_search_run(search_run, tmp_path, capsys):
    out = tmp_path / "pictures"
    assert main(["plot", str(search_run), "--out", str(out), "--dpi", "100"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "score_history.png"]
    assert is_png(out / "alpha.png") and is_png(out / "score_history.png")
    # 32 columns of 0.2 in at 100 dpi: the heatmaps alone are >= 640 px wide, so 7 pt labels do not overlap
    width, height = png_size(out / "alpha.png")
    assert width >= 32 * 0.2 * 100 and height > width / 2
    assert capsys.readouterr().out.split() == [str(out / "alpha.png"), str(out / "score_history.png")]


def test_tensorboard_heatmap_is_the_same_drawing(tmp_path):
    """log_heatmaps draws with heatmap_figure: the logged image equals one drawn from the same panel."""
    from strategies.logs import log_heatmaps
    from strategies.penalty import group_components
    from strategies.screening import RemovalEvent

    images = {}

    class Writer:
        def add_image(self, tag, img, global_step, dataformats):
            images[tag] = img

    class Logger:
        experiment = Writer()

    ops = ["a", "b", "c", "d"]
    comps = group_components({"neck/l1": ops, "neck/l2": ops})
    probs = {"neck/l1": torch.tensor([0.5, 0.3, 0.2, 0.0]), "neck/l2": torch.tensor([0.1, 0.6, 0.3, 0.0])}
    active = {label: torch.tensor([True, True, True, False]) for label in probs}
    event = RemovalEvent("neck", "d", 0.01, 2, 6)  # after epoch 2 (from 1): current_epoch 1
    log_heatmaps(Logger(), comps, probs, active, 1, {"neck": ops}, [event])
    rows = [{"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 0.1, "b": 0.6, "c": 0.3}]
    panel = HeatmapPanel("neck", ["neck/l1", "neck/l2"], ops, rows, {"d": 2})
    expected = figure_rgb(heatmap_figure([panel], "neck: op probabilities after epoch 2"))
    assert images["alpha/neck"].shape == expected.shape
    assert np.array_equal(images["alpha/neck"], expected)


def test_plot_train_run_and_architecture(tmp_path):
    run = write_train_run(tmp_path / "train", 64, 128, 20, 0.3)
    assert main(["plot", str(run), "--dpi", "80"]) == 0
    assert is_png(run / "plots" / "training.png")
    assert main(["plot", str(run / "architecture.json"), "--dpi", "80"]) == 0
    assert is_png(run / "architecture.png", 30_000)


def test_compare_table_and_picture(tmp_path, capsys):
    runs = [write_train_run(tmp_path / "small", 64, 128, 20, 0.25),
            write_train_run(tmp_path / "large", 100, 150, 37, 0.4)]
    assert main(["compare", *map(str, runs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for row, run, size, rois, ap in zip(rows, runs, [(64, 128), (128, 160)], [20, 37], [0.25, 0.4], strict=True):
        arch = tiny_arch()
        cost = detector_cost(arch.structure, arch.sample(), arch.settings.num_classes, size, rois)["total"]
        assert row["name"] == run.name and row["params"] == cost.params and row["macs"] == cost.macs
        assert row["ap"] == ap and row["ap50"] == 2 * ap and tuple(row["input_size"]) == size
    assert main(["compare", *map(str, runs)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:5] == ["small", f"{rows[0]['params'] / 1e6:.2f}", f"{rows[0]['macs'] / 1e9:.2f}",
                                    "25.0", "50.0"]
    png = tmp_path / "cmp.png"
    assert main(["plot", "--compare", *map(str, runs), "--out", str(png), "--dpi", "80"]) == 0
    assert is_png(png)
    assert main(["plot", "--compare", *map(str, runs)]) == 2  # needs --out


def test_plot_refuses_to_overwrite_without_force(tmp_path, capsys):
    run = write_train_run(tmp_path / "train", 64, 128, 20, 0.3)
    out = tmp_path / "pictures"
    assert main(["plot", str(run), "--out", str(out), "--dpi", "60"]) == 0
    before = (out / "training.png").read_bytes()
    capsys.readouterr()
    assert main(["plot", str(run), "--out", str(out), "--dpi", "70"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out / "training.png") in err[0] and "--force" in err[0]
    assert (out / "training.png").read_bytes() == before
    assert main(["plot", str(run), "--out", str(out), "--dpi", "70", "--force"]) == 0
    assert (out / "training.png").read_bytes() != before


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("metadata.json", '{"alpha_probabilities": {"backbone/s1_b0": {"sep_k3": 0.5', "invalid JSON"),
        ("metadata.json", '{"mode": "screen"}', "alpha_probabilities: missing"),
        ("metrics.json", '{"history": [{"epoch": 1, "AP"', "invalid JSON"),
        (None, None, "no such file"),
    ],
)
def test_damaged_run_folder_is_one_line_exit_2(tmp_path, capsys, name, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if name:
        (run / name).write_text(content)
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(run / (name or "metadata.json")) in err[0]
    assert not (run / "plots").exists()


def test_damaged_run_folder_from_the_shell(search_run):
    text = (search_run / "metadata.json").read_text()
    (search_run / "metadata.json").write_text(text[: len(text) // 2])  # truncated mid-write
    proc = subprocess.run([sys.executable, "-m", "hitdet", "plot", str(search_run)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(search_run / "metadata.json") in lines[0] and "invalid JSON" in lines[0]


# -- pictures that read: labels next to their own lines, nothing overlapping, captions that fit the run


def _text_boxes(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    return {t: t.get_window_extent(renderer) for ax in fig.axes for t in ax.texts if t.get_text().strip()}


def test_architecture_path_names_clear_of_the_level_names():
    """'top-down path' / 'bottom-up path' overlap no other text, also on a half-depth (searched) structure."""
    from hitdet.architecture import Architecture, load_architecture
    from hitdet.plot import architecture_figure
    from hitdet.training.runner import half_depth_architecture
    from search_spaces.structure import STRUCTURES

    preset = load_architecture("hit-detector")
    half_cpu = STRUCTURES["cpu"].half_depth()  # a searched CPU-scale half-depth detector (screening's shape)
    searched = Architecture.from_sample({label: "sep_k3" for label in half_cpu.labels()}, half_cpu,
                                        preset.settings, name="searched")
    for arch in (preset, half_depth_architecture(preset), searched):
        boxes = _text_boxes(architecture_figure(arch))
        paths = [t for t in boxes if t.get_text().endswith(" path")]
        assert len(paths) == 2
        for t in paths:
            hits = [o.get_text() for o in boxes if o is not t and boxes[t].overlaps(boxes[o])]
            assert hits == [], (arch.structure.stages, t.get_text(), hits)


def test_score_history_names_ops_in_a_legend_with_their_last_scores(search_run):
    from hitdet.plot import LABELLED, score_history_figure

    meta = json.loads((search_run / "metadata.json").read_text())
    fig = score_history_figure(meta, "screen")
    last = meta["score_history"][-1]["scores"]
    for ax in fig.axes:
        comp = ax.get_title().split(":")[0]
        entries = [t.get_text() for t in ax.get_legend().get_texts()]
        relative = {op: s * len(last[comp]) for op, s in last[comp].items()}
        ranked = sorted(relative, key=relative.get, reverse=True)
        named = [*ranked[:LABELLED], *ranked[-LABELLED:]]
        assert entries[0] == f"{32 - len(named)} other ops" and entries[-1] == "uniform (1)"
        assert entries[1:-1] == [f"{op}  {relative[op]:.2f}" for op in named]
        assert not ax.texts or all("ops" in t.get_text() for t in ax.texts)  # no loose op names by the lines


def test_heatmap_caption_speaks_of_screened_out_ops_only_when_some_were():
    ops = ["a", "b", "c"]
    rows = [{"a": 0.5, "b": 0.3, "c": 0.2}]
    plain = heatmap_figure([HeatmapPanel("neck", ["neck/l1"], ops, rows)], "search").get_suptitle()
    screened = heatmap_figure([HeatmapPanel("neck", ["neck/l1"], [*ops, "d"], rows, {"d": 1})], "screen").get_suptitle()
    assert "screened out" not in plain and "chosen op" in plain
    assert "screened out" in " ".join(screened.split())


def test_compare_plot_names_each_run_in_a_legend(tmp_path):
    from matplotlib.figure import Figure

    runs = [write_train_run(tmp_path / f"run{i}", 64, 128, 20, 0.3 + 0.01 * i) for i in range(3)]
    saved = {}
    original = Figure.savefig

    def keep(fig, *args, **kwargs):
        saved["fig"] = fig
        return original(fig, *args, **kwargs)

    with unittest.mock.patch.object(Figure, "savefig", keep):
        assert main(["plot", "--compare", *map(str, runs), "--out", str(tmp_path / "c.png"), "--dpi", "60"]) == 0
    (ax,) = saved["fig"].axes
    entries = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [e.split(":")[0] for e in entries] == ["run0", "run1", "run2"]
    assert not [t for t in ax.texts if t.get_text().startswith("run")]  # no labels beside the points
