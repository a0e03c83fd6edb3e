"""The rows of the evidence harness: in-space hand picks, and one training recipe for every row.

Hand picks cost nothing to find: a search that does not beat them at no more MACs has found
nothing. Each is a sample of the search's own space (any structure), so it is built, priced and
trained exactly as a searched architecture is.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from search_spaces.structure import DetectorStructure

# The released Hit-Detector's op at each position (docs/hit-detector.md), by label.
RELEASED_OPS: dict[str, str] = {
    **{f"backbone/s1_b{i}": op for i, op in enumerate(["ir_k3_e3", "ir_k3_e3", "ir_k3_e3_d2", "ir_k3_e3"])},
    **{f"backbone/s2_b{i}": op for i, op in enumerate(["ir_k5_e6", "ir_k5_e6", "ir_k3_e3", "ir_k3_e3"])},
    **{f"backbone/s3_b{i}": op for i, op in enumerate(["ir_k7_e6", "ir_k5_e6", "ir_k5_e6_d2", "ir_k5_e3",
                                                       "ir_k5_e6", "ir_k5_e6_d2", "ir_k5_e6", "ir_k5_e6_d2"])},
    **{f"backbone/s4_b{i}": op for i, op in enumerate(["ir_k7_e6", "ir_k5_e6", "ir_k5_e6_d2", "ir_k5_e6"])},
    **{f"neck/lateral{i + 1}": op for i, op in enumerate(["sep_k5_d3", "sep_k5_d3", "sep_k5_d2", "sep_k3_d3"])},
    **{f"neck/out{i + 1}": op for i, op in enumerate(["sep_k3_d3", "sep_k5_d3", "sep_k5_d3", "sep_k3_d3"])},
    **{f"head/b{i}": op for i, op in enumerate(["ir_k5_e6", "ir_k3_e6", "ir_k5_e6", "ir_k5_e6"])},
}


def _pick(structure: DetectorStructure, backbone_first: str, backbone_rest: str, neck: str,
          head: str) -> dict[str, str]:
    out = {}
    for label in structure.labels():
        if label.startswith("backbone/"):
            out[label] = backbone_first if label.endswith("_b0") else backbone_rest
        else:
            out[label] = neck if label.startswith("neck/") else head
    return out


def _released(structure: DetectorStructure) -> dict[str, str]:
    """The released ops where the structure has the released position, ``ir_k3_e3`` elsewhere (half depth)."""
    return {label: RELEASED_OPS.get(label, "ir_k3_e3") for label in structure.labels()}


# name -> (what it is, how it is made from a structure)
HAND_PICKS: dict[str, tuple[str, Callable[[DetectorStructure], dict[str, str]]]] = {
    "stage-ir": ("one ir_k3_e3 per backbone stage (its first, strided block), skip at every other position "
                 "(neck and head included: a 1-fc box head)",
                 lambda st: _pick(st, "ir_k3_e3", "skip", "skip", "skip")),
    "stage-ir+conv-neck": ("one ir_k3_e3 per backbone stage, conv_k3 at every neck position (an FPN with 3x3 "
                           "convolutions), skip in the head",
                           lambda st: _pick(st, "ir_k3_e3", "skip", "conv_k3", "skip")),
    "backbone-ir": ("ir_k3_e3 at every backbone position (a MobileNetV2-like backbone), skip in the neck and head",
                    lambda st: _pick(st, "ir_k3_e3", "ir_k3_e3", "skip", "skip")),
    "all-ir": ("ir_k3_e3 at every position, neck and RoI head included",
               lambda st: _pick(st, "ir_k3_e3", "ir_k3_e3", "ir_k3_e3", "ir_k3_e3")),
    "released": ("the released Hit-Detector's ops at this structure's widths", _released),
}


def hand_pick(name: str, structure: DetectorStructure) -> dict[str, str]:
    """The sample ``{label: op}`` of hand pick ``name`` on ``structure``."""
    return HAND_PICKS[name][1](structure)


class _Curve:
    """A Lightning callback that records the validation metrics of every epoch (1-based)."""

    def __new__(cls) -> Any:
        import pytorch_lightning as pl

        class Curve(pl.Callback):
            def __init__(self) -> None:
                self.points: list[dict[str, float]] = []

            def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
                # after the epoch's validation: a callback's on_validation_epoch_end runs before the
                # module's, which computes the metrics, so it would read the previous epoch's
                if not getattr(module, "last_metrics", None):
                    return
                m = module.last_metrics
                self.points.append({"epoch": trainer.current_epoch + 1, "AP": float(m["AP"]),
                                    "AP50": float(m["AP50"])})

        return Curve()


def train_row(build: Callable[[], torch.nn.Module], cfg: Any, train_ds: Any, val_ds: Any,
              accelerator: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """The one training recipe of every row: seed, build, fit ``cfg.epochs`` with validation every epoch.

    ``hitdet train``'s module and loaders (``DetectionModule``, ``make_train_loader``,
    ``make_eval_loader``) with a plain Lightning Trainer (no checkpoints, no logger). Returns
    ``{"params", "curve": [{epoch, AP, AP50}], "AP", "AP50" (the last epoch's: no best-epoch
    picking), "seconds"}``; a diverged run is AP 0, flagged ``diverged``.
    """
    import pytorch_lightning as pl

    from hitdet.errors import NonFiniteLossError
    from hitdet.training.module import DetectionModule
    from hitdet.training.runner import make_eval_loader, make_train_loader

    pl.seed_everything(cfg.seed, verbose=False)
    model = build()
    params = sum(p.numel() for p in model.parameters())
    pl.seed_everything(cfg.seed, verbose=False)
    module = DetectionModule(model, cfg)
    curve = _Curve()
    trainer = pl.Trainer(
        max_epochs=cfg.epochs, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=1, use_distributed_sampler=False, callbacks=[curve],
    )
    start = time.perf_counter()
    row: dict[str, Any] = {"params": params}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*treespec.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        try:
            trainer.fit(module, make_train_loader(train_ds, cfg.batch_size, cfg.seed, cfg.num_workers),
                        make_eval_loader(val_ds, cfg.eval_batch_size, cfg.num_workers))
            row.update(AP=module.last_metrics["AP"], AP50=module.last_metrics["AP50"])
        except NonFiniteLossError as exc:  # counted as AP 0 (it learnt nothing usable), and flagged
            row.update(AP=0.0, AP50=0.0, diverged=str(exc))
    row["curve"] = curve.points
    row["seconds"] = time.perf_counter() - start
    return row
