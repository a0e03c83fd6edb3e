"""Guards against two known failure modes of DARTS-style search, applied to the supernet only.

* **Affine BatchNorm inside candidates.** With learnable BN scales, a candidate can shrink or
  grow its output by its BN weight, and α and those scales trade off against each other
  (Liu et al., DARTS, use non-affine BN in the search for this reason). :func:`make_non_affine`
  turns the BatchNorms inside the searched candidates into non-affine ones. Only the search
  is affected: the exported architecture is retrained with the pool's ops as they are.
* **``skip`` taking over.** A parameter-free ``skip`` trains fastest, so its α grows early and
  the search collapses to skips (Chen et al., P-DARTS; Zela et al., RobustDARTS).
  :class:`SkipDropPath` drops the ``skip`` candidate's output per sample with probability p
  during training (rescaled by 1/(1-p), as in dropout), so it cannot win on speed alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

SKIP = "skip"


def make_non_affine(module: nn.Module) -> int:
    """Make every BatchNorm inside ``module`` non-affine (in place); returns the affine params removed.

    The running statistics are kept; the weight and bias parameters are removed, so they
    never enter the weight optimiser.
    """
    removed = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            removed += sum(p.numel() for p in (m.weight, m.bias) if p is not None)
            m.affine = False
            m._hitdet_non_affine = True  # the retrained op has these parameters: costs count them
            m.register_parameter("weight", None)
            m.register_parameter("bias", None)
    return removed


class SkipDropPath(nn.Module):
    """Wraps the ``skip`` candidate: in training, each sample's output is zeroed with probability ``p``.

    Kept samples are scaled by ``1 / (1 - p)`` so that the expected output is unchanged. In
    eval mode (and with p = 0) it is the wrapped module. Draws from torch's RNG, whose state
    the checkpoints save, so a resumed search draws the same masks.
    """

    def __init__(self, inner: nn.Module, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"drop probability must be in [0, 1), got {p}")
        self.inner = inner
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if not self.training or self.p == 0:
            return out
        keep = torch.rand((out.shape[0],) + (1,) * (out.dim() - 1), device=out.device) >= self.p
        return out * keep.to(out.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def apply_guards(layers: Iterable[nn.Module], bn_affine: bool, skip_drop_prob: float) -> int:
    """Apply both guards to the candidates of every mixed layer; returns the BN params removed."""
    removed = 0
    for layer in layers:
        for name, module in list(layer.candidate_modules()):
            if not bn_affine:
                removed += make_non_affine(module)
            if skip_drop_prob > 0 and str(name) == SKIP and not isinstance(module, SkipDropPath):
                layer._modules[str(name)] = SkipDropPath(module, skip_drop_prob)
    return removed
