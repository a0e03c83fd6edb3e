"""Several train runs side by side: size, cost and accuracy (``hitdet compare``, ``hitdet plot --compare``).

A run's MACs and parameters come from its own ``architecture.json`` at its own input size and RoI
count (:func:`hitdet.arch_cost.architecture_cost`, as ``hitdet info`` prints them); its AP and
AP50 are those of the best validation epoch in ``metrics.json``; its latency, where the run folder has
a ``bench.json`` (``hitdet bench RUN/architecture.json``), the median batch-1 forward pass measured there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hitdet.arch_cost import architecture_cost
from hitdet.architecture import load_architecture
from hitdet.errors import UserError
from hitdet.io import read_json_or_none
from hitdet.run_files import read_metrics, run_name


@dataclass
class RunSummary:
    name: str
    params: int
    macs: int
    ap: float | None  # None while no epoch has finished
    ap50: float | None
    input_size: tuple[int, int]
    rois: int
    dataset: str | None = None  # run.json's dataset: the folder it was trained on (None: not recorded)
    dataset_sha256: str | None = None  # ... and the SHA-256 of its annotation files together
    latency_ms: float | None = None  # RUN/bench.json (hitdet bench): median batch-1 latency; None: not measured
    latency_on: str | None = None  # ... and where: "cpu (x86_64, 4 threads)", "cuda (NVIDIA H100)"


def _bench(run: Path) -> tuple[float | None, str | None]:
    """The batch-1 median latency in ``run/bench.json`` and the device it was measured on, if there is one."""
    from hitdet.bench import BENCH_FORMAT

    data = read_json_or_none(run / "bench.json")
    if not isinstance(data, dict) or data.get("format") != BENCH_FORMAT:
        return None, None
    for r in data.get("results") or []:
        latency = r.get("latency_ms") if isinstance(r, dict) else None
        median = latency.get("median") if isinstance(latency, dict) else None
        if r.get("batch") == 1 and isinstance(median, (int, float)):
            where = str(data.get("device", "?"))
            detail = data.get("device_name")
            if where == "cpu":
                detail = f"{detail}, {data.get('cpu_threads')} threads"
            return float(median), f"{where} ({detail})"
    return None, None


def summarise(run: Path) -> RunSummary:
    """One train run's row; a one-line error when the folder is not a train run or a file is damaged."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder")
    arch_path = run / "architecture.json"
    if not arch_path.is_file():
        raise UserError(f"{arch_path}: no such file (not a train run folder)")
    arch = load_architecture(arch_path)
    metrics = read_metrics(run)
    best = metrics.get("best")
    if best is None and metrics["history"]:  # a run still training: its best epoch so far
        best = max(metrics["history"], key=lambda h: h.get("AP", float("-inf")))
    cost, size, rois = architecture_cost(arch)
    ap = best.get("AP") if best else None
    ap50 = best.get("AP50") if best else None
    record = read_json_or_none(run / "run.json")
    dataset = record.get("dataset") if isinstance(record, dict) else None
    path = sha = None
    if isinstance(dataset, dict):
        path, sha = dataset.get("path"), dataset.get("sha256")
    elif isinstance(record, dict) and isinstance(record.get("data"), str):
        path = record["data"]  # a run from before the dataset record: its folder only
    latency, latency_on = _bench(run)
    return RunSummary(run_name(run), cost["total"].params, cost["total"].macs, ap, ap50, size, rois,
                      path if isinstance(path, str) else None, sha if isinstance(sha, str) else None,
                      latency, latency_on)


def summarise_all(runs: list[Path]) -> list[RunSummary]:
    """Rows in the given order; names made unique by their parent folder when two runs share one."""
    rows = [summarise(Path(r)) for r in runs]
    names = [row.name for row in rows]
    for row, run in zip(rows, runs, strict=True):
        if names.count(row.name) > 1:
            row.name = f"{Path(run).resolve().parent.name}/{row.name}"
    return rows


def dataset_warning(rows: list[RunSummary]) -> str | None:
    """One line when the runs were trained on different datasets (annotation hashes differ; the folders,
    for runs recorded before the hashes), else None. Runs that recorded nothing are not compared."""
    groups: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    hashed = all(r.dataset_sha256 for r in rows if r.dataset)
    for r in rows:
        key = r.dataset_sha256 if hashed else r.dataset
        if key:
            groups.setdefault(key, []).append(r.name)
            where.setdefault(key, f"{r.dataset}" + (f" (annotations {r.dataset_sha256[:12]})" if hashed else ""))
    if len(groups) < 2:
        return None
    parts = "; ".join(f"{', '.join(names)} on {where[key]}" for key, names in groups.items())
    return f"warning: these runs were trained on different datasets, their AP is not comparable: {parts}"


def latency_warning(rows: list[RunSummary]) -> str | None:
    """One line when the runs' latencies were measured on different devices (or CPU thread counts), else None."""
    where: dict[str, list[str]] = {}
    for r in rows:
        if r.latency_on:
            where.setdefault(r.latency_on, []).append(r.name)
    if len(where) < 2:
        return None
    parts = "; ".join(f"{', '.join(names)} on {device}" for device, names in where.items())
    return f"warning: these runs' latencies were measured on different devices, they are not comparable: {parts}"


def format_table(rows: list[RunSummary]) -> str:
    """A fixed-width text table: name, params, MACs, AP, AP50, latency (and the size MACs were counted at)."""
    width = max([len("run"), *(len(r.name) for r in rows)])

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    lines = [f"{'run':<{width}} {'params (M)':>10} {'MACs (G)':>9} {'AP':>6} {'AP50':>6} {'ms':>8}  input, RoIs"]
    for r in rows:
        h, w = r.input_size
        ms = "-" if r.latency_ms is None else f"{r.latency_ms:.1f}"
        lines.append(
            f"{r.name:<{width}} {r.params / 1e6:>10.2f} {r.macs / 1e9:>9.2f} {pct(r.ap):>6} {pct(r.ap50):>6}"
            f" {ms:>8}  {h}x{w}, {r.rois}"
        )
    lines.append("AP, AP50: best validation epoch (COCO AP x 100); MACs at each run's own padded input size")
    devices = sorted({r.latency_on for r in rows if r.latency_on})
    lines.append("ms: median batch-1 latency from RUN/bench.json (hitdet bench RUN/architecture.json)"
                 + (f", measured on {'; '.join(devices)}" if devices else "; - where not measured"))
    return "\n".join(lines)
