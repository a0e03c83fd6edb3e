"""The mixed layer of the HitDet supernet: NNI's DARTS layer with ops that can be removed.

A removed op gets probability 0 (its logit is masked to -inf before the softmax, so it
receives no gradient either), is skipped in the forward pass and its module is deleted
from the supernet, so that its compute and its memory are freed. The ``names`` list and the
architecture parameter keep their length, so indices stay stable for checkpoints.

How the candidates are combined is the layer's ``mixed_op`` (a strategy setting): ``"full"``, the
DARTS weighted sum under autograd (every candidate's activations kept for the backward pass);
``"recompute"``, the same sum and gradients with one candidate's activations alive at a time
(:mod:`strategies.recompute`; a layer called with anything but one tensor, or without grad, sums as
``"full"``); ``"sample"``, ``sample_k`` candidates drawn per training step (:mod:`strategies.sampling`;
in eval mode the layer sums all of them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from nni.nas.nn.pytorch import LayerChoice
from nni.nas.oneshot.pytorch.supermodule._expression_utils import weighted_sum
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer
from torch import nn

from strategies.recompute import recomputed_sum
from strategies.sampling import sample_ops
from strategies.settings import MIXED_OPS

DEFAULT_COMPONENT = "default"


def component_of(label: str) -> str:
    """Component of a label: its prefix before the first ``/`` (``backbone/s1_b0`` -> ``backbone``).

    Labels without a prefix all fall into one group, :data:`DEFAULT_COMPONENT`.

    Args:
        label: a ``LayerChoice`` label.

    Returns:
        The component the strategy groups the label's α into.
    """
    return label.split("/", 1)[0] if "/" in label else DEFAULT_COMPONENT


class HitDetMixedLayer(DifferentiableMixedLayer):
    """Weighted sum of the *active* candidates, softmax over the active logits (paper Eq. 5).

    ``active`` is a bool mask of the candidates still searched. Layers that share a label (one
    decision) each hold a mask; the strategy drops an op from all of them together.
    """

    def __init__(
        self,
        paths: list[nn.Module] | dict[str, nn.Module],
        alpha: torch.Tensor,
        softmax: nn.Module,
        label: str,
        active: torch.Tensor | None = None,
    ) -> None:
        super().__init__(paths, alpha, softmax, label)
        if active is None:
            active = torch.ones(len(self.names), dtype=torch.bool)
        self.register_buffer("_active", active, persistent=False)
        self._all_active = bool(active.all())
        self._active_idx = [i for i, a in enumerate(active.tolist()) if a]  # Python copy: no device sync
        self.mixed_op = "full"
        self.sample_k = 2

    def set_mixed_op(self, mixed_op: str, sample_k: int = 2) -> None:
        """How the candidates are combined (module docstring); a setting, not state."""
        if mixed_op not in MIXED_OPS:
            raise ValueError(f"mixed_op must be one of {MIXED_OPS}, got {mixed_op!r}")
        if sample_k < 1:
            raise ValueError(f"sample_k must be at least 1, got {sample_k}")
        self.mixed_op, self.sample_k = mixed_op, int(sample_k)

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
        if type(module) is LayerChoice:  # exactly LayerChoice, as NNI's hook
            if module.label not in memo:
                raise KeyError(f"LayerChoice {module.label} not found in memo.")
            softmax = mutate_kwargs.get("softmax", nn.Softmax(-1))
            return cls(module.candidates, memo[module.label], softmax, module.label)
        return None

    # -- active set ---------------------------------------------------------------------------

    @property
    def active_mask(self) -> torch.Tensor:
        return self._active

    def active_names(self) -> list[Any]:
        return [n for n, a in zip(self.names, self._active.tolist(), strict=True) if a]

    def refresh(self) -> None:
        """Delete the modules of masked-out ops (after the mask was changed or loaded)."""
        self._all_active = bool(self._active.all())
        self._active_idx = [i for i, a in enumerate(self._active.tolist()) if a]
        for n, a in zip(self.names, self._active.tolist(), strict=True):
            if not a and str(n) in self._modules:
                del self._modules[str(n)]

    def drop(self, name: Any) -> list[nn.Parameter]:
        """Remove candidate ``name``: masked out, never run again, module deleted.

        Returns the parameters of the removed module, so that the caller can take them out
        of the weight optimiser (which would otherwise keep them, and their momentum, alive).
        """
        idx = self.names.index(name)
        if int(self._active.sum()) <= 1 and bool(self._active[idx]):
            raise ValueError(f"cannot remove the last op of {self.label!r}")
        self._active[idx] = False
        params: list[nn.Parameter] = []
        if str(name) in self._modules:
            params = list(self._modules[str(name)].parameters())
        self.refresh()
        return params

    def set_masked(self, index: int, masked: bool) -> None:
        """Mask candidate ``index`` out of the forward pass and the softmax, or back in; its module stays.

        A temporary removal (:meth:`strategies.supernet.Supernet.without`); :meth:`drop` is the lasting one.
        """
        if not masked and str(self.names[index]) not in self._modules:
            raise ValueError(f"op {self.names[index]!r} of {self.label!r} was removed; it cannot be unmasked")
        self._active[index] = not masked
        self._all_active = bool(self._active.all())
        self._active_idx = [i for i, a in enumerate(self._active.tolist()) if a]

    def candidate_modules(self) -> Iterator[tuple[Any, nn.Module]]:
        """``(name, module)`` of the active candidates."""
        for n, a in zip(self.names, self._active.tolist(), strict=True):
            if a:
                yield n, self._modules[str(n)]

    # -- forward / probabilities --------------------------------------------------------------

    def probs(self) -> torch.Tensor:
        """Softmax over the active logits; removed ops get exactly 0 (and no gradient)."""
        alpha = self._arch_alpha
        if not self._all_active:
            alpha = alpha.masked_fill(~self._active, float("-inf"))
        return self._softmax(alpha)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        weights = self.probs()
        if self.mixed_op == "sample" and self.training:
            idx, weights = sample_ops(weights, self.sample_k)
        else:
            idx = self._active_idx
        modules = [self._modules[str(self.names[i])] for i in idx]
        one_tensor = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
        if self.mixed_op == "recompute" and one_tensor and torch.is_grad_enabled():
            return recomputed_sum(idx, modules, args[0], weights)
        return weighted_sum([m(*args, **kwargs) for m in modules], [weights[i] for i in idx])

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        """Argmax over the active ops (paper: decode by the highest score per layer)."""
        if self.label in memo:
            return {}
        return {self.label: self.names[int(torch.argmax(self.probs().detach()).item())]}

    def export_probs(self, memo: dict[str, Any]) -> dict[str, Any]:
        if self.label in memo:
            return {}
        weights = self.probs().detach().cpu().tolist()
        return {self.label: dict(zip(self.names, weights, strict=True))}

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return self[sample[self.label]]

    def __getitem__(self, idx: int | str) -> nn.Module:
        if idx not in self.names:
            raise KeyError(f"{idx!r} is not found in {self.names!r}.")
        if str(idx) not in self._modules:
            raise KeyError(f"op {idx!r} of {self.label!r} was removed by screening")
        return self._modules[str(idx)]

    def __iter__(self) -> Iterator[nn.Module]:
        return (m for _, m in self.candidate_modules())
