"""The one-shot Lightning module of the HitDet strategy (first-order DARTS, paper Sec. 3.4).

Each training step is an architecture step on a batch of the architecture half of the
data, then a weight step on a batch of the weight half. The architecture loss is the
evaluator's loss plus our FLOPs penalty (search mode) or column-sparse regulariser (screen
mode), both differentiable in alpha. The weight optimiser is the evaluator's; the
architecture optimiser is Adam over the alphas only.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule
from torch import nn

from strategies import logs
from strategies.costs import (
    CostTable,
    InputRecorder,
    candidate_params,
    table_from_measurement,
    table_from_space,
)
from strategies.distributed import rewrap_ddp
from strategies.mixed import HitDetMixedLayer
from strategies.penalty import (
    Component,
    column_regulariser,
    column_scores,
    entropy,
    expected_macs,
    flops_penalty,
    group_components,
    target_penalty,
    uniform_macs,
)
from strategies.screening import RemovalEvent, SubSpaces, kept_after_epoch
from strategies.settings import SearchSettings

_logger = logging.getLogger(__name__)

CHECKPOINT_KEY = "hitdet_strategy"


class HitDetLightningModule(DartsLightningModule):
    """Search logic wrapped around the evaluator's LightningModule (see module docstring)."""

    def __init__(self, training_module: Any, settings: SearchSettings) -> None:
        super().__init__(
            training_module,
            arc_learning_rate=settings.arc_learning_rate,
            gradient_clip_val=settings.gradient_clip_val,
            log_prob_every_n_step=10**9,  # we log heatmaps and summaries instead of 1 scalar per op
            warmup_epochs=settings.arch_start_epoch,
        )
        self.settings = settings
        self._ready = False
        self.layers: dict[str, list[HitDetMixedLayer]] = {}
        self.components: dict[str, Component] = {}
        self.costs = CostTable()
        self.reference_macs = 0.0
        self.params_table: dict[str, torch.Tensor] = {}
        self.fixed_params = 0
        self.events: list[RemovalEvent] = []
        self.history: list[dict[str, Any]] = []  # column scores per epoch (the paper's Fig. 4 view)
        self.initial_columns: dict[str, list[str]] = {}
        self._recorder: InputRecorder | None = None
        self._weight_params: list[nn.Parameter] | None = None
        self._alphas: list[nn.Parameter] | None = None
        self._macs_on: dict[tuple[Any, Any], dict[str, torch.Tensor]] = {}
        self._nstep = 0
        self._arch_progress = 0.0  # architecture epochs done (fractional), for the regulariser's burn-in
        self._score_sums: dict[str, torch.Tensor] = {}  # this epoch's column scores per component, summed
        self._score_steps = 0
        self.arc_lr_used: float | None = None
        self.arch_steps_planned: int | None = None

    # -- set-up -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Find the mixed layers, group them into components and get the cost table (once)."""
        if self._ready:
            return
        self.layers = {}
        for m in self.supernet_modules():
            if isinstance(m, HitDetMixedLayer):
                self.layers.setdefault(str(m.label), []).append(m)  # plain str, not NNI's label
        if not self.layers:
            raise ValueError("the space has no LayerChoice: nothing for the HitDet strategy to search")
        self.components = group_components({label: g[0].names for label, g in self.layers.items()})
        self.initial_columns = {
            c: [col for col in comp.columns if self._column_present(comp, col)] for c, comp in self.components.items()
        }
        if self.settings.screening and self.settings.screen_components is not None:
            # components fixed to one op while others are screened still offer every op they had
            subs = self.settings.sub_spaces or {}
            for c, comp in self.components.items():
                if c not in self.settings.screen_components:
                    self.initial_columns[c] = [col for col in comp.columns if col in subs.get(c, comp.columns)]
        self.params_table = candidate_params(self.layers)
        searched = sum(float(t.sum()) for t in self.params_table.values())
        arch = sum(p.numel() for p in self.arch_parameters())
        self.fixed_params = int(sum(p.numel() for p in self.model.parameters()) - searched - arch)
        if self.settings.screen_components is not None:
            unknown = set(self.settings.screen_components) - set(self.components)
            if unknown:
                raise ValueError(
                    f"screen_components {sorted(unknown)} not in the space's components {sorted(self.components)}"
                )
        table = table_from_space(self.model, self.layers)
        if table is not None:
            self._set_costs(table)
        else:
            self._recorder = InputRecorder(m for g in self.layers.values() for m in g)
        self._ready = True

    def _set_costs(self, table: CostTable) -> None:
        self.costs = table
        self._macs_on = {}
        if table.available:
            self.reference_macs = uniform_macs(table.macs, self.active())
            if self.reference_macs <= 0:
                warnings.warn("every candidate costs 0 MACs: the FLOPs penalty is off", stacklevel=2)
                self.costs = CostTable({}, "unavailable")

    def _maybe_measure(self) -> None:
        if self._recorder is None:
            return
        all_layers = [m for g in self.layers.values() for m in g]
        if not self._recorder.complete(all_layers):
            return
        self._recorder.remove()
        self._set_costs(table_from_measurement(self.layers, self._recorder))
        self._recorder = None

    def on_fit_start(self) -> None:
        self.prepare()
        epochs = self.trainer.max_epochs
        if epochs is not None and 0 < epochs <= self.settings.arch_start_epoch:
            warnings.warn(
                f"architecture updates start at epoch {self.settings.arch_start_epoch} (0-based) but training "
                f"stops after {epochs} epoch(s): the alphas will not be trained (set arch_start_epoch)",
                stacklevel=2,
            )
        return super().on_fit_start()

    def _column_present(self, comp: Component, col: str) -> bool:
        return any(str(n) == col for label in comp.labels for n in self.layers[label][0].active_names())

    # -- views --------------------------------------------------------------------------------

    def active(self) -> dict[str, torch.Tensor]:
        return {label: g[0].active_mask for label, g in self.layers.items()}

    def probs(self) -> dict[str, torch.Tensor]:
        """Op probabilities per label (differentiable; removed ops are 0)."""
        return {label: g[0].probs() for label, g in self.layers.items()}

    def _screened(self) -> list[str]:
        if not self.settings.screening:
            return []
        sc = self.settings.screen_components
        return list(self.components) if sc is None else list(sc)

    def _arch_on(self) -> bool:
        return self.trainer.current_epoch >= self.settings.arch_start_epoch

    def _frozen_alphas(self) -> list[nn.Parameter]:
        """Alphas that screening one component at a time leaves alone."""
        if not self.settings.screening or self.settings.screen_components is None:
            return []
        keep = set(self.settings.screen_components)
        return [
            g[0]._arch_alpha
            for c, comp in self.components.items()
            if c not in keep
            for g in (self.layers[label] for label in comp.labels)
        ]

    def arch_parameters(self) -> list[nn.Parameter]:
        """The alphas, each once, in module order.

        NNI's returns ``list(set(...))``, an order that follows memory addresses: the Adam
        state one process saves then lands on the wrong alphas in another (a resumed run, the
        other DDP ranks). Module order is the same in every process.
        """
        found: dict[int, nn.Parameter] = {}
        for m in self.supernet_modules():
            if hasattr(m, "arch_parameters"):
                for p in m.arch_parameters():
                    found.setdefault(id(p), p)
        return list(found.values())

    def alphas(self) -> list[nn.Parameter]:
        """The architecture parameters (cached: NNI's ``arch_parameters`` walks every module)."""
        if self._alphas is None:
            self._alphas = self.arch_parameters()
        return self._alphas

    def macs_on(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The cost table on the alphas' device and dtype (copied once, not every step)."""
        key = (device, dtype)
        if key not in self._macs_on:
            self._macs_on[key] = {k: v.to(device=device, dtype=dtype) for k, v in self.costs.macs.items()}
        return self._macs_on[key]

    def weight_parameters(self) -> list[nn.Parameter]:
        if self._weight_params is None:
            arch = {id(p) for p in self.arch_parameters()}
            self._weight_params = [
                p for p in self.training_module.parameters() if id(p) not in arch and p.requires_grad
            ]
        return self._weight_params

    # -- the architecture objective ----------------------------------------------------------

    def regulariser_on(self) -> bool:
        """Screening's regulariser acts after ``reg_burn_in`` architecture epochs (fractional)."""
        return self._arch_progress >= self.settings.reg_burn_in

    def arch_terms(self, probs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The penalty and regulariser terms for the current probabilities (differentiable)."""
        s = self.settings
        terms: dict[str, torch.Tensor] = {}
        if s.lam > 0 and self.costs.available:
            first = next(iter(probs.values()))
            macs = self.macs_on(first.device, first.dtype)
            if s.target_macs is not None:
                terms["penalty"] = s.lam * target_penalty(probs, macs, s.target_macs)
            else:
                terms["penalty"] = s.lam * flops_penalty(probs, macs, self.reference_macs)
        screened = self._screened()
        if screened and s.mu > 0 and self.regulariser_on():
            reg = None
            active = self.active()
            for c in screened:
                comp = self.components[c]
                mat = comp.matrix(probs)
                presence = comp.presence(active).to(mat.device)
                r = column_regulariser(
                    mat, presence.any(0), s.regulariser, presence=presence,
                    temperature=s.softmin_temperature, p=s.group_p,
                )
                reg = r if reg is None else reg + r
            if reg is not None:
                terms["regulariser"] = s.mu * reg
        return terms

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        trn_batch, arc_batch = batch["train"], batch["val"]
        alphas = self.alphas()
        logs_: dict[str, Any] = {}

        if self._arch_on():
            nb = self.trainer.num_training_batches
            per_epoch = nb if isinstance(nb, int) and nb > 0 else 1
            self._arch_progress = self.trainer.current_epoch - self.settings.arch_start_epoch + batch_idx / per_epoch
            arc_optim = self.architecture_optimizers()
            weights = self.weight_parameters() if self.settings.freeze_weights_in_arch_step else []
            for p in weights:
                p.requires_grad_(False)
            try:
                arc_optim.zero_grad()
                arc_loss = _loss(self.training_module.training_step(arc_batch, 2 * batch_idx))
                self._maybe_measure()
                terms = self.arch_terms(self.probs())
                total = arc_loss + sum(terms.values()) if terms else arc_loss
                self.manual_backward(total)
                for p in self._frozen_alphas():
                    p.grad = None
                arc_optim.step()
            finally:
                for p in weights:
                    p.requires_grad_(True)
            self._accumulate_scores()
            logs_["search/loss_arch"] = arc_loss.detach()
            logs_.update({f"search/{k}": v.detach() for k, v in terms.items()})

        for p in alphas:
            p.requires_grad_(False)
        try:
            out = self.training_module.training_step(trn_batch, 2 * batch_idx + 1)
            w_loss = _loss(out)
            self.advance_optimization(w_loss, batch_idx, self.gradient_clip_val)
        finally:
            for p in alphas:
                p.requires_grad_(True)
        self.advance_lr_schedulers(batch_idx)
        self._maybe_measure()  # the weight step also records inputs (penalty-free runs, export)

        self._nstep += 1
        every = max(int(getattr(self.trainer, "log_every_n_steps", 50) or 1), 1)
        if self._nstep % every == 0 or self._nstep == 1:  # floats only here: no device sync per step
            logs_["search/loss_weight"] = w_loss.detach()
            logs_ = {k: float(v) for k, v in logs_.items()}
            logs_.update(self.summary_scalars())
            self.log_dict(logs_, on_step=True, on_epoch=False, batch_size=1)
            bar = {"loss": logs_["search/loss_weight"]}
            if "search/macs_ratio" in logs_:
                bar["macs"] = logs_["search/macs_ratio"]
            self.log_dict(bar, on_step=True, on_epoch=False, batch_size=1, prog_bar=True, logger=False)
        return out

    def summary_scalars(self) -> dict[str, float]:
        """Expected MACs and the alpha entropy of every component (for the logger)."""
        with torch.no_grad():
            probs = self.probs()
            out: dict[str, float] = {}
            if self.costs.available:
                exp = float(expected_macs(probs, self.costs.macs))
                out["search/macs_expected"] = exp
                out["search/macs_ratio"] = exp / self.reference_macs
            for c, comp in self.components.items():
                ent = [float(entropy(probs[label])) for label in comp.labels]
                out[f"entropy/{c}"] = sum(ent) / len(ent)
                out[f"num_ops/{c}"] = float(comp.presence(self.active()).any(0).sum())
        return out

    # -- optimisers ---------------------------------------------------------------------------

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
        lr = s.arc_learning_rate
        self.arch_steps_planned = self.planned_arch_steps()
        if s.arch_travel is not None and self.arch_steps_planned:
            lr = s.arch_travel / self.arch_steps_planned
        self.arc_lr_used = lr
        return torch.optim.Adam(params, lr, betas=tuple(s.arc_betas), weight_decay=s.arc_weight_decay)

    def on_train_epoch_start(self) -> None:
        self.prepare()
        self._score_sums, self._score_steps = {}, 0
        # NNI's warm-up toggles requires_grad on the alphas; ours is done per step instead.
        return self.training_module.on_train_epoch_start()

    # -- screening ----------------------------------------------------------------------------

    def scores(self) -> dict[str, dict[str, float]]:
        """Column score of every op still searched, per component, now (a snapshot)."""
        return self._named(self._score_tensors())

    def _score_tensors(self) -> dict[str, torch.Tensor]:
        """Per component, the score of each of its columns (-inf for removed ops), on α's device."""
        with torch.no_grad():
            probs, active = self.probs(), self.active()
            out = {}
            for c, comp in self.components.items():
                mat = comp.matrix(probs).detach().double()
                out[c] = column_scores(mat, comp.presence(active).to(mat.device))
            return out

    def _named(self, tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
        out = {}
        for c, sc in tensors.items():
            values = sc.double().cpu().tolist()
            out[c] = {col: v for col, v in zip(self.components[c].columns, values, strict=True) if v != float("-inf")}
        return out

    def _accumulate_scores(self) -> None:
        """Add this architecture step's column scores to the epoch's sums (``scoring="epoch_mean"``).

        Kept on α's device (no host sync per step); the set of ops is fixed within an epoch.
        """
        if not self.settings.screening or self.settings.scoring != "epoch_mean":
            return
        for c, sc in self._score_tensors().items():
            self._score_sums[c] = self._score_sums[c] + sc if c in self._score_sums else sc.clone()
        self._score_steps += 1

    def epoch_scores(self) -> dict[str, dict[str, float]]:
        """The scores screening ranks on: this epoch's mean over its architecture steps, or a snapshot.

        Each architecture step moves α by a noisy minibatch gradient, so the end-of-epoch
        snapshot carries the last few batches' noise; the mean over the epoch does not.
        """
        now = self._score_tensors()
        if self.settings.scoring != "epoch_mean" or self._score_steps == 0:
            return self._named(now)
        # ops removed since (at this epoch's end) are -inf now, and stay out
        mean = {c: torch.where(torch.isinf(now[c]), now[c], total / self._score_steps)
                for c, total in self._score_sums.items()}
        return self._named(mean)

    def drop_op(self, component: str, op: str, score: float) -> bool:
        """Remove ``op`` from every layer of ``component``; free it in the weight optimiser too."""
        comp = self.components[component]
        freed: list[nn.Parameter] = []
        for label in comp.labels:
            group = self.layers[label]
            name = next((n for n in group[0].active_names() if str(n) == op), None)
            if name is None:
                continue
            if len(group[0].active_names()) <= 1:
                warnings.warn(f"{label!r}: {op!r} is its last op; kept there", stacklevel=2)
                continue
            for layer in group:
                freed += layer.drop(name)
        self._forget_parameters(freed)
        epoch = int(self.trainer.current_epoch) if self._trainer is not None else -1
        step = int(self.trainer.global_step) if self._trainer is not None else -1
        event = RemovalEvent(component, op, score, epoch, step)
        self.events.append(event)
        _logger.info("screening: removed %s from %s (score %.4g, epoch %d)", op, component, score, epoch)
        if self._trainer is not None:
            logs.log_event(self.logger, event, len(self.events))
        return True

    def _forget_parameters(self, params: list[nn.Parameter]) -> None:
        if not params:
            return
        ids = {id(p) for p in params}
        if self._trainer is not None:
            for opt in self.trainer.optimizers:
                for group in opt.param_groups:
                    group["params"] = [p for p in group["params"] if id(p) not in ids]
                for p in params:
                    opt.state.pop(p, None)
        self._weight_params = None

    def screen(self, final: bool = False) -> None:
        """Remove ops down to the schedule's count for this epoch (``final``: down to exactly N)."""
        epochs = self.trainer.max_epochs if self._trainer is not None else None
        epochs = epochs if epochs is not None and epochs > 0 else None
        epoch = int(self.trainer.current_epoch) if self._trainer is not None else 0
        scores = self.epoch_scores()
        for c in self._screened():
            n0 = len(self.initial_columns[c])
            target = (
                self.settings.num_ops
                if final
                else kept_after_epoch(n0, self.settings.num_ops, epoch, self.settings.arch_start_epoch, epochs)
            )
            target = min(target, n0)
            ranked = sorted(scores[c].items(), key=lambda kv: (kv[1], kv[0]))
            excess = len(ranked) - target
            for op, score in ranked[: max(excess, 0)]:
                self.drop_op(c, op, score)

    # -- several processes --------------------------------------------------------------------

    def architecture_state(self) -> torch.Tensor:
        """α and the removed-op masks of every label, flattened in label order (float64)."""
        parts = []
        for g in self.layers.values():
            alpha, active = g[0]._arch_alpha.detach().flatten(), g[0].active_mask
            parts += [alpha.to("cpu", torch.float64), active.to("cpu", torch.float64)]
        return torch.cat(parts)

    def check_ranks_agree(self) -> None:
        """Stop if α or the removed ops differ between processes (DDP).

        They never should: DDP all-reduces the α gradients, so every rank takes the same Adam
        step and the same screening decisions. A difference means the runs would export
        different architectures; failing loudly beats picking rank 0's silently.
        """
        if self._trainer is None or self.trainer.world_size <= 1:
            return
        local = self.architecture_state()
        gathered = self.all_gather(local.to(self.device)).to("cpu").reshape(self.trainer.world_size, -1)
        where = rank_disagreement(gathered, {label: g[0].names for label, g in self.layers.items()})
        if where is not None:
            raise RuntimeError(
                f"architecture state differs between DDP ranks after epoch {self.trainer.current_epoch}: {where}"
            )

    def on_train_epoch_end(self) -> None:
        self.check_ranks_agree()  # before screening, which acts on α
        self.history.append(
            {"epoch": int(self.trainer.current_epoch), "step": int(self.trainer.global_step),
             "scores": self.epoch_scores()}
        )
        if self.settings.screening and self._arch_on():
            removed_before = len(self.events)
            self.screen()
            if len(self.events) > removed_before and self._trainer is not None:
                rewrap_ddp(self.trainer)  # so that DDP's reducer lets the removed ops' weights go
            if self._trainer is not None and self.events:  # the counts after this epoch's removals
                active = self.active()
                self.log_dict({f"num_ops/{c}": float(comp.presence(active).any(0).sum())
                               for c, comp in self.components.items()}, on_step=False, on_epoch=True)
        if self.settings.log_heatmaps:
            logs.log_heatmaps(
                self.logger, self.components, self.probs(), self.active(), self.trainer.current_epoch,
                self.initial_columns, self.events,
            )
        return super().on_train_epoch_end()

    def on_train_end(self) -> None:
        if self.settings.screening:
            self.screen(final=True)
        return super().on_train_end()

    # -- checkpoints --------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save what the state dict does not hold: the removed ops, the events, the cost table."""
        self.prepare()
        checkpoint[CHECKPOINT_KEY] = {
            "active": {label: g[0].active_mask.tolist() for label, g in self.layers.items()},
            "events": [vars(e) for e in self.events],
            "history": self.history,
            "initial_columns": self.initial_columns,
            "costs": {
                "source": self.costs.source,
                "macs": {k: v.tolist() for k, v in self.costs.macs.items()},
                "reference": self.reference_macs,
            },
        }
        self.training_module.on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume a screening: remove the ops the checkpoint had removed before weights load.

        Lightning calls this before it loads the state dict and before it builds the
        optimisers, so both see exactly the supernet that was saved.
        """
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is not None:
            self.prepare()
            for label, mask in state["active"].items():
                for layer in self.layers.get(label, []):
                    for name, keep in zip(layer.names, mask, strict=True):
                        if not keep and name in layer.active_names():
                            layer.drop(name)
            self._weight_params = None
            self.events = [RemovalEvent(**e) for e in state["events"]]
            self.history = list(state.get("history", []))
            self.initial_columns = {c: list(v) for c, v in state["initial_columns"].items()}
            costs = state["costs"]
            if costs["source"] != "unavailable" or self._recorder is None:
                if self._recorder is not None:
                    self._recorder.remove()
                    self._recorder = None
                macs = {k: torch.tensor(v, dtype=torch.float64) for k, v in costs["macs"].items()}
                self.costs = CostTable(macs, costs["source"])
                self._macs_on = {}
                self.reference_macs = float(costs["reference"])
        self.training_module.on_load_checkpoint(checkpoint)

    def sub_spaces(self) -> SubSpaces:
        """The screening result (kept ops by score, highest first; removal order)."""
        scores = self.epoch_scores()
        kept = {c: [op for op, _ in sorted(s.items(), key=lambda kv: -kv[1])] for c, s in scores.items()}
        if self.settings.screen_components is not None:  # not screened: every op stays available
            kept.update({c: list(self.initial_columns[c]) for c in kept if c not in self.settings.screen_components})
        all_scores: dict[str, dict[str, float]] = {c: dict(s) for c, s in scores.items()}
        removed: dict[str, list[RemovalEvent]] = {c: [] for c in kept}
        for e in self.events:
            removed.setdefault(e.component, []).append(e)
            all_scores.setdefault(e.component, {})[e.op] = e.score
        return SubSpaces(kept, all_scores, removed, self.settings.to_dict())


def rank_disagreement(gathered: torch.Tensor, names: dict[str, list[Any]]) -> str | None:
    """Where rows of ``gathered`` (one :meth:`architecture_state` per rank) differ, or None.

    ``names``: the candidate names of every label, in the order the state was flattened.
    """
    offset = 0
    for label, ops in names.items():
        for part, size in (("alpha", len(ops)), ("removed ops", len(ops))):
            block = gathered[:, offset : offset + size]
            for rank in range(1, gathered.shape[0]):
                if not torch.equal(block[rank], block[0]):
                    return f"{label} {part}: rank 0 has {block[0].tolist()}, rank {rank} has {block[rank].tolist()}"
            offset += size
    return None


def _loss(out: Any) -> torch.Tensor:
    if isinstance(out, dict):
        out = out["loss"]
    if not isinstance(out, torch.Tensor) or out.dim() != 0:
        raise TypeError(f"training_step must return a scalar loss tensor (or a dict with 'loss'), got {type(out)}")
    return out
