"""The one training recipe of every row of the evidence harness (the hand picks are
:mod:`search_spaces.hand_picks`)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch


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
