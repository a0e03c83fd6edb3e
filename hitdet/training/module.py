"""The Lightning module that trains a detector: used by ``hitdet train`` and wrapped by the search.

Why one module for both: the search's weight steps and the retraining must use the same
losses, optimiser and schedule. It subclasses NNI's ``LightningModule`` so that an NNI
evaluator can hand it a supernet with :meth:`set_model`; retraining passes the fixed
detector to the constructor instead.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import SGD
from torch.optim.lr_scheduler import LambdaLR

from hitdet.errors import NonFiniteLossError
from hitdet.evaluation import METRIC_NAMES, coco_evaluate, to_coco_results
from hitdet.training.config import TrainConfig
from hitdet.training.rng import load_rng_states, save_rng_states
from hitdet.training.schedule import warmup_cosine_factor, warmup_step_factor
from search_spaces.quiet import quiet_nni_import

with quiet_nni_import():
    from nni.nas.evaluator.pytorch.lightning import LightningModule


class DetectionModule(LightningModule):
    """Train a torchvision detector (loss dict in train mode) and validate it by COCO mAP.

    - ``training_step`` returns the sum of the detector's losses and logs each as ``train/<name>``;
    - ``configure_optimizers`` returns one SGD optimiser (momentum, weight decay from the
      config, lr scaled by the total batch size) with a per-step LambdaLR: linear warm-up then
      steps by ``gamma`` at the ``milestones`` epochs;
    - gradients are clipped to ``config.grad_clip_norm`` (unless the Trainer sets its own);
    - validation runs the detector in eval mode and logs ``val/AP``, ``val/AP50``, ... computed
      by COCOeval against the validation dataset's ground truth (a :class:`CocoDetection` or a
      Subset of one, found through the trainer, or given with :meth:`set_validation_data`).
    """

    def __init__(self, model: nn.Module | None = None, config: TrainConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if config is None:
            config = TrainConfig()
        elif isinstance(config, Mapping):
            config = TrainConfig(**config)
        self.config: TrainConfig = config
        self.save_hyperparameters({"config": config.to_dict()})
        if model is not None:
            self.set_model(model)
        self._val_dataset: Any = None
        self._val_results: list[dict[str, Any]] = []
        self._val_ids: list[int] = []
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ training

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]] | None = None) -> Any:
        return self.model(images, targets)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses: dict[str, torch.Tensor] = self.model(images, targets)
        loss = sum(losses.values())
        self._check_finite(loss, losses)
        n = len(images)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=n)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss  # type: ignore[return-value]

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_rng_states(checkpoint)  # flips, RoI sampling, the search's shuffling come after the checkpoint

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_rng_states(checkpoint)
        self._apply_recovery(checkpoint)

    def _apply_recovery(self, checkpoint: dict[str, Any]) -> None:
        """A resume that changed the lr or the schedule (a recovery after a divergence) takes effect at once.

        Lightning restores the optimiser's and the scheduler's states after this hook, from this
        dictionary: their saved base lr (and the lr of the step the run stopped at) would otherwise
        override the config's new ``lr``, and the step schedule's new ``gamma``/``milestones`` would
        apply only from the next step. Untouched when those keys are as the run had them.
        """
        saved = (checkpoint.get("hyper_parameters") or {}).get("config") or {}
        keys = ("lr", "base_lr", "gamma", "milestones", "warmup_iters", "warmup_ratio", "schedule")
        now = self.config.to_dict()
        if not saved or all(saved.get(k) == now.get(k) for k in keys):
            return
        lr = self.config.total_lr(self._world_size())
        factor = self._lr_factor()
        for sched in checkpoint.get("lr_schedulers") or []:
            step = int(sched.get("last_epoch", 0))
            sched["base_lrs"] = [lr for _ in sched.get("base_lrs", [])]
            sched["_last_lr"] = [lr * factor(step) for _ in sched.get("_last_lr", [])]
            for opt in checkpoint.get("optimizer_states") or []:
                for group in opt.get("param_groups", []):
                    group["initial_lr"], group["lr"] = lr, lr * factor(step)
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"]["config"] = now

    def _check_finite(self, loss: torch.Tensor, losses: Mapping[str, torch.Tensor]) -> None:
        """Stop training on a NaN or infinite loss, before it reaches a backward pass or a checkpoint.

        Every loss of ``hitdet train`` and of the search (its weight and architecture steps both
        call :meth:`training_step`) passes here. Under DDP all ranks agree, so all stop together.
        """
        local = bool(torch.isfinite(loss.detach()).all())
        finite = local
        trainer = self._trainer
        if trainer is not None and self._world_size() > 1:
            finite = bool(trainer.strategy.reduce_boolean_decision(local, all=True))
        if finite:
            return
        step = int(trainer.global_step) if trainer is not None else 0
        epoch = int(trainer.current_epoch) + 1 if trainer is not None else 1  # from 1, as the bar and log say
        bad = ", ".join(f"{k}={float(v.detach()):g}" for k, v in losses.items() if not bool(torch.isfinite(v).all()))
        what = f"non-finite loss {float(loss.detach()):g} [{bad}]" if not local else "non-finite loss on another rank"
        raise NonFiniteLossError(
            f"{what} at global step {step}, epoch {epoch}; training stopped, no checkpoint written from this "
            "step (try a lower lr or grad_clip_norm)"
        )

    def _world_size(self) -> int:
        trainer = self._trainer
        return int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1

    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch (for the step schedule), from the attached trainer."""
        trainer = self._trainer
        if trainer is None:
            return 1
        total = trainer.estimated_stepping_batches
        epochs = trainer.max_epochs
        if epochs and epochs > 0 and math.isfinite(total):
            return max(1, int(round(total / epochs)))
        batches = trainer.num_training_batches
        return max(1, int(batches)) if math.isfinite(batches) else 1

    def _lr_factor(self) -> Callable[[int], float]:
        """The lr multiplier per optimiser step of the config's schedule (warm-up, then steps or cosine)."""
        cfg = self.config
        if cfg.schedule == "cosine":
            return warmup_cosine_factor(self.steps_per_epoch() * cfg.epochs, cfg.warmup_iters, cfg.warmup_ratio)
        return warmup_step_factor(self.steps_per_epoch(), cfg.milestones, cfg.gamma, cfg.warmup_iters,
                                  cfg.warmup_ratio)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.config
        lr = cfg.total_lr(self._world_size())
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        scheduler = LambdaLR(optimizer, self._lr_factor())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        value = gradient_clip_val if gradient_clip_val is not None else self.config.grad_clip_norm
        if value and value > 0:
            algorithm = gradient_clip_algorithm or "norm"
            self.clip_gradients(optimizer, gradient_clip_val=value, gradient_clip_algorithm=algorithm)

    # ------------------------------------------------------------------ validation

    def set_validation_data(self, dataset: Any) -> None:
        """The dataset whose ground truth validation scores against (default: the val loader's)."""
        self._val_dataset = dataset

    def _validation_base(self) -> Any:
        from hitdet.data import unwrap

        dataset = self._val_dataset
        if dataset is None and self._trainer is not None:
            loaders = self._trainer.val_dataloaders
            if isinstance(loaders, (list, tuple)):
                loaders = loaders[0] if loaders else None
            dataset = getattr(loaders, "dataset", None)
        if dataset is None:
            return None
        base, _ = unwrap(dataset)
        return base if hasattr(base, "coco") and hasattr(base, "label_to_cat_id") else None

    def on_validation_epoch_start(self) -> None:
        self._val_results, self._val_ids = [], []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        outputs = self.model(images)
        base = self._validation_base()
        ids = [int(t["image_id"]) for t in targets]
        self._val_ids.extend(ids)
        if base is not None:
            self._val_results.extend(to_coco_results(outputs, ids, base.label_to_cat_id))

    def on_validation_epoch_end(self) -> None:
        base = self._validation_base()
        if base is None:
            warnings.warn("validation data is not a COCO dataset: no mAP computed", UserWarning, stacklevel=1)
            return
        results, ids = self._val_results, self._val_ids
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (results, ids))
            results = [r for part in gathered for r in part[0]]
            ids = [i for part in gathered for i in part[1]]
        metrics = coco_evaluate(base.coco, results, image_ids=ids, backend=self.config.backend)
        self.last_metrics = metrics
        for name in METRIC_NAMES:
            self.log(f"val/{name}", metrics[name], prog_bar=name in ("AP", "AP50"), sync_dist=self._world_size() > 1)
        self._val_results, self._val_ids = [], []
