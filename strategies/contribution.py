"""What each op contributes to the supernet's loss: the first-order effect of removing it.

Why: α's magnitude does not say how much an op contributes to the supernet (Wang et al., ICLR
2021, "Rethinking architecture selection in differentiable NAS"): α follows Adam's normalised,
noisy steps from the first, untrained epochs on, and an op can hold a large α while the network
routes around it. Their perturbation-based selection asks instead how much the supernet's loss
rises when an op is taken out. That question has a first-order answer that costs nothing: at a
mixed layer ``y = Σ_k p_k o_k``, taking op ``j`` out (the others renormalised) moves the output by
``-p_j (o_j - y) / (1 - p_j)``, so the loss moves by

    ΔL_j ≈ -p_j (g_j - Σ_k p_k g_k) / (1 - p_j) = -(∂L/∂α_j) / (1 - p_j),      g_k = <∂L/∂y, o_k>,

the gradient of the *detection loss* with respect to α (not the architecture terms'), which every
architecture step computes anyway. :class:`ContributionMeter` averages it over an epoch's
architecture steps (on the architecture half of the data, at the weights of that moment): a
positive value is an op whose removal would raise the loss, i.e. one that helps. Averaging the raw
gradient, rather than following Adam's normalised steps, is what makes it a low-noise reading.

The screening ranking rule ``"contribution"`` (:mod:`strategies.screener`) ranks a component's ops
by their mean over its positions; the decision rule ``"contribution"`` (:mod:`strategies.decision`)
picks, per position, the op whose removal would raise the loss most.
"""

from __future__ import annotations

from typing import Any

import torch

# A removed op has p = 0; an op holding the whole mass (p = 1) cannot be removed: its estimate is undefined.
_EPS = 1e-6


def architecture_backward(module: Any, batch: Any, batch_idx: int) -> tuple[torch.Tensor, Any, dict[str, Any]]:
    """The architecture step's backward: ``w · loss + Σ terms`` into the alphas of ``module`` (a
    :class:`~strategies.module.HitDetLightningModule`), and the ops' removal effects read off it.

    The removal effects need the detection loss's own gradient: the terms' gradient (cheap, no
    network) is taken apart with ``autograd.grad`` and subtracted from the one backward pass, so
    DDP still reduces exactly one backward per step. With ``arch_loss_weight`` w = 0 (the
    penalty-only control) a single process skips the loss's forward pass.

    Returns:
        (the detection loss, the removal effects per label or None, the terms' values by name).
    """
    net, w = module.supernet, module.settings.arch_loss_weight
    skip_loss = w == 0 and (module._trainer is None or module.trainer.world_size == 1)
    arc_loss = (torch.zeros((), device=module.device) if skip_loss
                else scalar_loss(module.training_module.training_step(batch, 2 * batch_idx)))
    module.costs.maybe_measure(net.layers, net.active())
    probs = module.probs()
    terms = module.arch_terms(probs)
    total = w * arc_loss + sum(terms.values()) if terms else w * arc_loss
    alphas = {label: g[0]._arch_alpha for label, g in net.layers.items()}
    term_grads: dict[str, Any] = {}
    if w > 0 and terms:
        found = torch.autograd.grad(sum(terms.values()), list(alphas.values()), retain_graph=True, allow_unused=True)
        term_grads = dict(zip(alphas, found, strict=True))
    if total.requires_grad:
        module.manual_backward(total)
    if w == 0:
        return arc_loss, None, terms
    loss_grads = {}
    for label, a in alphas.items():
        if a.grad is not None:
            g = a.grad.detach()
            if term_grads.get(label) is not None:
                g = g - term_grads[label]
            loss_grads[label] = g / w
    effects = removal_effects({k: v.detach() for k, v in probs.items()}, loss_grads, net.active())
    module.contributions.observe(effects)
    return arc_loss, effects, terms


def scalar_loss(out: Any) -> torch.Tensor:
    """The loss tensor of a ``training_step``'s output (a scalar, or a dict with ``loss``)."""
    if isinstance(out, dict):
        out = out["loss"]
    if not isinstance(out, torch.Tensor) or out.dim() != 0:
        raise TypeError(f"training_step must return a scalar loss tensor (or a dict with 'loss'), got {type(out)}")
    return out


def removal_effects(probs: dict[str, torch.Tensor], loss_grads: dict[str, torch.Tensor],
                    active: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per label, the first-order loss increase of removing each op (module docstring); 0 for removed ops.

    Args:
        probs: the op probabilities per label (detached).
        loss_grads: the detection loss's gradient with respect to each label's α.
        active: each label's mask of the ops still searched.

    Returns:
        One float64 tensor per label, on α's device.
    """
    out = {}
    for label, grad in loss_grads.items():
        p = probs[label].detach().double()
        effect = -grad.detach().double() / (1 - p).clamp(min=_EPS)
        out[label] = torch.where(active[label].to(effect.device), effect, torch.zeros_like(effect))
    return out


class ContributionMeter:
    """The epoch's mean of :func:`removal_effects` per label (kept on α's device: no host sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.last: dict[str, torch.Tensor] = {}  # the previous epoch's means (what an export reads)
        self.last_steps = 0

    def start_epoch(self) -> None:
        if self.steps:
            self.last, self.last_steps = self.means(), self.steps
        self.sums, self.steps = {}, 0

    def observe(self, effects: dict[str, torch.Tensor]) -> None:
        for label, e in effects.items():
            self.sums[label] = self.sums[label] + e if label in self.sums else e.clone()
        self.steps += 1

    def means(self) -> dict[str, torch.Tensor]:
        """This epoch's means so far, or the last epoch's when this one has no step yet."""
        if not self.steps:
            return dict(self.last)
        return {label: s / self.steps for label, s in self.sums.items()}

    def per_component(self, net: Any) -> dict[str, dict[str, float]]:
        """``{component: {op: mean effect over the component's positions where the op is still searched}}``."""
        means, active = self.means(), net.active()
        out: dict[str, dict[str, float]] = {}
        for c, comp in net.components.items():
            totals: dict[str, list[float]] = {}
            for label in comp.labels:
                if label not in means:
                    continue
                values = means[label].cpu().tolist()
                for name, keep, v in zip(net.layers[label][0].names, active[label].tolist(), values, strict=True):
                    if keep:
                        totals.setdefault(str(name), []).append(v)
            out[c] = {op: sum(v) / len(v) for op, v in totals.items()}
        return out

    def state(self) -> dict[str, Any]:
        return {"contribution": {"last": {k: v.cpu().tolist() for k, v in self.means().items()},
                                 "steps": self.steps or self.last_steps}}

    def load_state(self, state: dict[str, Any]) -> None:
        saved = state.get("contribution")
        if saved:
            self.last = {k: torch.tensor(v, dtype=torch.float64) for k, v in saved["last"].items()}
            self.last_steps = int(saved["steps"])
