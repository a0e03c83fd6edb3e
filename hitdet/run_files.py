"""Reading a run folder's JSON files (metadata.json of a screen/search, metrics.json of a train).

Pictures and tables read finished (or half-finished) runs; a missing, truncated or hand-damaged
file is a one-line :class:`~hitdet.errors.UserError` naming that file, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hitdet.errors import UserError

SEARCH, TRAIN = "search", "train"


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (hitdet.io's bounded reader); a one-line error naming the file otherwise."""
    from hitdet.io import read_json

    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def run_name(run: Path) -> str:
    """The folder's name (its absolute name when given as ``.``)."""
    return run.name or run.resolve().name


def run_kind(run: Path) -> str:
    """``search`` (a screen/search run: metadata.json) or ``train`` (metrics.json), else a one-line error."""
    if (run / "metadata.json").exists():
        return SEARCH
    if (run / "metrics.json").exists():
        return TRAIN
    raise UserError(f"{run / 'metadata.json'}: no such file (not a screen/search run; no metrics.json of a train run)")


def read_metadata(run: Path) -> dict[str, Any]:
    """A screen/search run's metadata.json, checked for what the pictures read."""
    path = run / "metadata.json"
    meta = read_json_object(path)
    probs = meta.get("alpha_probabilities")
    if not isinstance(probs, dict) or not probs:
        raise UserError(f"{path}: alpha_probabilities: missing or empty")
    for label, row in probs.items():
        if not isinstance(row, dict) or not all(isinstance(p, int | float) for p in row.values()):
            raise UserError(f"{path}: alpha_probabilities.{label}: expected {{op: probability}}")
    for key, kind in (("initial_sub_spaces", dict), ("screening_events", list), ("score_history", list)):
        if not isinstance(meta.get(key, kind()), kind):
            raise UserError(f"{path}: {key}: expected a JSON {'object' if kind is dict else 'list'}")
    for i, event in enumerate(meta.get("screening_events", [])):
        if not isinstance(event, dict) or not {"component", "op", "epoch"} <= set(event):
            raise UserError(f"{path}: screening_events[{i}]: expected component, op and epoch")
    for i, entry in enumerate(meta.get("score_history", [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("epoch"), int) or not isinstance(
            entry.get("scores"), dict
        ):
            raise UserError(f"{path}: score_history[{i}]: expected epoch and scores")
    return meta


def read_metrics(run: Path) -> dict[str, Any]:
    """A train run's metrics.json: ``history`` (per-epoch validation metrics) and, once finished, ``best``."""
    path = run / "metrics.json"
    metrics = read_json_object(path)
    history = metrics.get("history")
    if not isinstance(history, list) or not all(isinstance(h, dict) and "epoch" in h for h in history):
        raise UserError(f"{path}: history: expected a list of per-epoch metrics")
    for i, entry in enumerate(history):
        _check_epoch(entry, f"{path}: history[{i}]")
    best = metrics.get("best")
    if best is not None and (not isinstance(best, dict) or not _is_number(best.get("AP"))):
        raise UserError(f"{path}: best: expected the best epoch's metrics with AP")
    if best is not None:
        _check_epoch(best, f"{path}: best")
    return metrics


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_epoch(entry: dict[str, Any], where: str) -> None:
    """One epoch's metrics as the pictures and tables read them: an integer epoch, AP/AP50/AP75 numbers."""
    if not isinstance(entry.get("epoch"), int) or isinstance(entry["epoch"], bool):
        raise UserError(f"{where}.epoch: expected an integer, got {entry.get('epoch')!r}")
    for key in ("AP", "AP50", "AP75"):
        if key in entry and not _is_number(entry[key]):
            raise UserError(f"{where}.{key}: expected a number, got {entry[key]!r}")
