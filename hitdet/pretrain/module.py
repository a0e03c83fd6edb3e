"""The Lightning module of pretraining: cross-entropy (optional label smoothing), top-1/top-5, SGD + cosine."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from hitdet.pretrain.config import PretrainConfig
from hitdet.pretrain.model import BackboneClassifier
from hitdet.training.rng import load_rng_states, save_rng_states


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Fraction of samples whose class is among the top-k scores, per k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(target[:, None])
    return [hits[:, : min(k, kmax)].any(dim=1).float().mean() for k in ks]


def lr_factor(step: int, total: int, warmup: int, min_factor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_factor`` at step ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ClassificationModule(pl.LightningModule):
    """Trains a :class:`BackboneClassifier`; logs ``train/loss``, ``train/top1``, ``val/top1``, ``val/top5``."""

    def __init__(self, model: BackboneClassifier, config: PretrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)
        top1, top5 = topk_accuracy(logits.detach(), labels)
        n = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/top1", top1, prog_bar=True, batch_size=n, on_step=True, on_epoch=True)
        self.log("train/top5", top5, batch_size=n, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        top1, top5 = topk_accuracy(logits, labels)
        n = images.shape[0]
        self.log("val/loss", loss, batch_size=n, sync_dist=True)
        self.log("val/top1", top1, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/top5", top5, batch_size=n, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        save_rng_states(checkpoint)  # crops, flips and shuffling after a resume as without one

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        load_rng_states(checkpoint)
        # An lr changed on --resume (a recovery after a divergence) takes effect at once: Lightning restores the
        # saved scheduler and optimiser states after this hook, and their saved lr would override the config's.
        lr = self.config.total_lr(self.trainer.world_size)
        for sched in checkpoint.get("lr_schedulers") or []:
            old = sched.get("base_lrs") or []
            if not old or all(b == lr for b in old):
                continue
            scale = lr / old[0]
            sched["base_lrs"] = [lr for _ in old]
            sched["_last_lr"] = [v * scale for v in sched.get("_last_lr", [])]
            for opt in checkpoint.get("optimizer_states") or []:
                for group in opt.get("param_groups", []):
                    group["initial_lr"], group["lr"] = lr, group["lr"] * scale

    def configure_optimizers(self) -> dict:
        cfg = self.config
        lr = cfg.total_lr(self.trainer.world_size)
        optimizer = torch.optim.SGD(
            self.model.parameters(), lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        per_epoch = total / max(self.trainer.max_epochs or cfg.epochs, 1)
        warmup = int(round(cfg.warmup_epochs * per_epoch))
        min_factor = min(cfg.min_lr / lr, 1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, warmup, min_factor)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
