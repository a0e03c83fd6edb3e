"""The one-shot Lightning module of the HitDet strategy (first-order DARTS, paper Sec. 3.4).

Each training step is an architecture step on a batch of the architecture half of the data,
then a weight step on a batch of the weight half. The architecture loss is the evaluator's
loss plus the architecture terms (:mod:`strategies.terms`), differentiable in alpha; the
weight optimiser is the evaluator's, the architecture optimiser Adam over the alphas only.

The module only sequences the steps. The work is its collaborators', each owning its part
of the checkpoint: :class:`~strategies.supernet.Supernet` (searched layers, removed ops),
:class:`~strategies.costs.CostModel` (MACs table), the terms, :class:`~strategies.screener.Screener`
(ranking, removals, events, history, sub spaces), the decision rule (:mod:`strategies.decision`)
and the DDP checks (:mod:`strategies.distributed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule
from torch import nn

from strategies import logs
from strategies.contribution import ContributionMeter, architecture_backward, scalar_loss
from strategies.costs import CostModel
from strategies.decision import DECISIONS, DecisionRule
from strategies.distributed import check_ranks_agree, rewrap_ddp
from strategies.screener import ArchStep, Screener, snapshot_scores
from strategies.screening import SubSpaces
from strategies.settings import SearchSettings
from strategies.supernet import Supernet, arch_parameters, frozen
from strategies.terms import ArchitectureTerm, TermContext, distinct_terms, evaluate_terms, terms_from_settings

CHECKPOINT_KEY = "hitdet_strategy"


class HitDetLightningModule(DartsLightningModule):
    """Search logic wrapped around the evaluator's LightningModule (see module docstring).

    Args:
        training_module: the evaluator's LightningModule (loss, weight optimiser).
        settings: the run's settings.
        terms: the architecture loss terms; default :func:`strategies.terms.terms_from_settings`.
        screener: default a :class:`~strategies.screener.Screener` with ``settings.scoring``'s rule.
        decision: the export's decision rule; default the one ``settings.decision_rule`` names.
    """

    def __init__(self, training_module: Any, settings: SearchSettings, *,
                 terms: Sequence[ArchitectureTerm] | None = None, screener: Screener | None = None,
                 decision: DecisionRule | None = None) -> None:
        super().__init__(
            training_module,
            arc_learning_rate=settings.arc_learning_rate,
            gradient_clip_val=settings.gradient_clip_val,
            log_prob_every_n_step=10**9,  # we log heatmaps and summaries instead of 1 scalar per op
            warmup_epochs=settings.arch_start_epoch,
        )
        self.settings = settings
        self.terms = distinct_terms(terms_from_settings(settings) if terms is None else terms)
        self.screener = screener if screener is not None else Screener(settings)
        self.decision = decision if decision is not None else DECISIONS.build(settings.decision_rule, settings)
        self.costs = CostModel()
        self.contributions = ContributionMeter()
        self.supernet: Supernet | None = None
        self._weight_params: list[nn.Parameter] | None = None
        self._alphas: list[nn.Parameter] | None = None
        self._nstep = 0
        self._arch_progress = 0.0  # architecture epochs done (fractional), for the regulariser's burn-in
        self.arc_lr_used: float | None = None
        self.arch_steps_planned: int | None = None

    # -- set-up and views -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Find the mixed layers, group them into components and get the cost table (once)."""
        if self.supernet is not None:
            return
        total = sum(p.numel() for p in self.model.parameters())
        arch = sum(p.numel() for p in self.arch_parameters())
        net = Supernet(self.supernet_modules(), self.settings, total, arch)
        self.costs.setup(self.model, net.layers, net.active())
        self.supernet = net

    @property
    def layers(self) -> dict[str, list[Any]]:
        return self.supernet.layers if self.supernet is not None else {}

    @property
    def components(self) -> dict[str, Any]:
        return self.supernet.components if self.supernet is not None else {}

    @property
    def reference_macs(self) -> float:
        return self.costs.reference

    def probs(self) -> dict[str, torch.Tensor]:
        """Op probabilities per label (differentiable; removed ops are 0)."""
        return self.supernet.probs()

    def scores(self) -> dict[str, dict[str, float]]:
        """Column score of every op still searched, per component, now (a snapshot)."""
        return snapshot_scores(self.supernet)

    def sub_spaces(self) -> SubSpaces:
        """The screening result (kept ops by score, highest first; removal order)."""
        return self.screener.sub_spaces(self.supernet)

    def arch_parameters(self) -> list[nn.Parameter]:
        """The alphas, each once, in module order (:func:`strategies.supernet.arch_parameters`; not NNI's set order)."""
        return arch_parameters(self.supernet_modules())

    def alphas(self) -> list[nn.Parameter]:
        """The architecture parameters (cached: NNI's ``arch_parameters`` walks every module)."""
        if self._alphas is None:
            self._alphas = self.arch_parameters()
        return self._alphas

    def weight_parameters(self) -> list[nn.Parameter]:
        if self._weight_params is None:
            arch = {id(p) for p in self.arch_parameters()}
            params = self.training_module.parameters()
            self._weight_params = [p for p in params if id(p) not in arch and p.requires_grad]
        return self._weight_params

    def arch_terms(self, probs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The architecture terms' values for these probabilities (differentiable), by name."""
        epoch = int(self.trainer.current_epoch) if self._trainer is not None else 0
        return evaluate_terms(self.terms, probs, TermContext(self.supernet, self.costs, self._arch_progress, epoch))

    # -- the steps ------------------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        trn_batch, arc_batch = batch["train"], batch["val"]
        alphas, net = self.alphas(), self.supernet
        logs_: dict[str, Any] = {}

        if self.trainer.current_epoch >= self.settings.arch_start_epoch:
            nb = self.trainer.num_training_batches
            per_epoch = nb if isinstance(nb, int) and nb > 0 else 1
            self._arch_progress = self.trainer.current_epoch - self.settings.arch_start_epoch + batch_idx / per_epoch
            arc_optim = self.architecture_optimizers()
            with frozen(self.weight_parameters() if self.settings.freeze_weights_in_arch_step else []):
                arc_optim.zero_grad()
                arc_loss, effects, terms = architecture_backward(self, arc_batch, batch_idx)
                for p in net.frozen_alphas(self.settings):
                    p.grad = None
                arc_optim.step()
            loss_of = lambda b: scalar_loss(self.training_module.training_step(b, 2 * batch_idx))  # noqa: E731
            self.screener.observe(net, ArchStep(arc_batch, batch_idx, arc_loss.detach(), loss_of, effects))
            logs_["search/loss_arch"] = arc_loss.detach()
            logs_.update({f"search/{k}": v.detach() for k, v in terms.items()})

        with frozen(alphas):
            out = self.training_module.training_step(trn_batch, 2 * batch_idx + 1)
            w_loss = scalar_loss(out)
            self.advance_optimization(w_loss, batch_idx, self.gradient_clip_val)
        self.advance_lr_schedulers(batch_idx)
        self.costs.maybe_measure(net.layers, net.active())  # the weight step records inputs too (no penalty, export)

        self._nstep += 1
        every = max(int(getattr(self.trainer, "log_every_n_steps", 50) or 1), 1)
        if self._nstep % every == 0 or self._nstep == 1:  # floats only here: no device sync per step
            logs.log_step(self, {**logs_, "search/loss_weight": w_loss.detach()}, net, self.costs)
        return out

    def planned_arch_steps(self) -> int | None:
        """Architecture steps the run will take (batches per epoch x epochs with α updates)."""
        trainer = self._trainer
        if trainer is None or not trainer.max_epochs or trainer.max_epochs < 1:
            return None
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            return None
        per_epoch = total / trainer.max_epochs
        return max(1, int(round(per_epoch * max(trainer.max_epochs - self.settings.arch_start_epoch, 0))))

    def configure_architecture_optimizers(self) -> torch.optim.Optimizer:
        params = self.arch_parameters()
        if not params:
            raise ValueError("No architecture parameters found. Nothing to search.")
        s = self.settings
        self.arch_steps_planned = self.planned_arch_steps()
        self.arc_lr_used = lr = s.arch_lr(self.arch_steps_planned)
        return torch.optim.Adam(params, lr, betas=tuple(s.arc_betas), weight_decay=s.arc_weight_decay)

    def on_fit_start(self) -> None:
        self.prepare()
        self.settings.check_epochs(self.trainer.max_epochs)
        return super().on_fit_start()

    def on_train_epoch_start(self) -> None:
        self.prepare()
        self.screener.start_epoch()
        self.contributions.start_epoch()
        # NNI's warm-up toggles requires_grad on the alphas; ours is done per step instead.
        return self.training_module.on_train_epoch_start()

    def on_train_epoch_end(self) -> None:
        net, trainer = self.supernet, self.trainer
        check_ranks_agree(self, net)  # before screening, which acts on α
        self.screener.record_epoch(net, int(trainer.current_epoch) + 1, int(trainer.global_step))  # from 1
        if self.settings.screening and trainer.current_epoch >= self.settings.arch_start_epoch:
            if self.screener.screen(net, trainer):
                self._weight_params = None
                rewrap_ddp(trainer)  # so that DDP's reducer lets the removed ops' weights go
            if self.screener.events:  # the counts after this epoch's removals
                self.log_dict(net.num_ops(), on_step=False, on_epoch=True)
        if self.settings.log_heatmaps:
            logs.log_heatmaps(self.logger, net.components, net.probs(), net.active(), trainer.current_epoch,
                              net.initial_columns, self.screener.events)
        return super().on_train_epoch_end()

    def on_train_end(self) -> None:
        if self.settings.screening and self.screener.screen(self.supernet, self._trainer, final=True):
            self._weight_params = None
        return super().on_train_end()

    # -- checkpoints --------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save what the state dict does not hold: the removed ops, the events, the cost table."""
        self.prepare()
        checkpoint[CHECKPOINT_KEY] = {**self.supernet.state(), **self.screener.state(), "costs": self.costs.state(),
                                      **self.contributions.state()}
        self.training_module.on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume a screening: remove the ops the checkpoint had removed before weights load.

        Lightning calls this before it loads the state dict and before it builds the
        optimisers, so both see exactly the supernet that was saved.
        """
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is not None:
            self.prepare()
            self.supernet.load_state(state)
            self._weight_params = None
            self.screener.load_state(state)
            self.contributions.load_state(state)
            self.costs.load_state(state["costs"])
        self.training_module.on_load_checkpoint(checkpoint)

