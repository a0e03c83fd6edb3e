"""The two terms the architecture step adds to the detection loss.

* :func:`flops_penalty` (paper Eq. 6-7): the expected MACs of the supernet,
  ``sum_layers sum_ops softmax(alpha) * MACs(op, layer)``, divided by the expected MACs at
  uniform probabilities over the same candidates. The ratio is 1 at the start of the search
  and does not depend on the input size or RoI count (every MAC count scales with them
  alike), so a given lambda means the same at 320 px and at 800 px, for a tiny test network
  and for the full detector. The gradient reaches alpha through the softmax.
* :func:`column_regulariser` (paper Eq. 4): a norm over the columns (ops) of a component's
  matrix of op probabilities (rows = layers).

Why probabilities and not raw logits: with a softmax, adding a constant to a row of alpha
changes nothing in the network but changes any norm of alpha, so a norm of the logits is
not a property of the architecture. The paper calls ``alpha_{l,i}`` the *score* of op i at
layer l (non-negative, higher is kept); the softmax probability is that score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from strategies.mixed import component_of

REGULARISERS = ("min", "group")


@dataclass
class Component:
    """One component's labels and the column (op) of each of their candidates."""

    name: str
    labels: list[str]
    columns: list[str]  # op names (as str), in order of first appearance
    index: dict[str, torch.Tensor]  # label -> column of each candidate of that label

    def matrix(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Layers x ops probability matrix (an op absent from a layer counts 0)."""
        rows = []
        for label in self.labels:
            p = probs[label]
            rows.append(
                torch.zeros(len(self.columns), dtype=p.dtype, device=p.device).index_add(
                    0, self.index[label].to(p.device), p
                )
            )
        return torch.stack(rows)

    def presence(self, active: dict[str, torch.Tensor]) -> torch.Tensor:
        """Layers x ops: 1 where the op is an active candidate of the layer."""
        return self.matrix({label: active[label].double() for label in self.labels}) > 0


def group_components(names: dict[str, list[object]]) -> dict[str, Component]:
    """Group labels into components by prefix (see :func:`strategies.mixed.component_of`)."""
    comps: dict[str, Component] = {}
    for label, cand in names.items():
        comp = comps.setdefault(component_of(label), Component(component_of(label), [], [], {}))
        comp.labels.append(label)
        cols = []
        for n in cand:
            if str(n) not in comp.columns:
                comp.columns.append(str(n))
            cols.append(comp.columns.index(str(n)))
        comp.index[label] = torch.tensor(cols, dtype=torch.long)
    return comps


def expected_macs(probs: dict[str, torch.Tensor], macs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum_l sum_o p(o, l) * MACs(o, l)``, differentiable in the probabilities."""
    total = None
    for label, cost in macs.items():
        p = probs[label]
        term = (p * cost.to(device=p.device, dtype=p.dtype)).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total


def uniform_macs(macs: dict[str, torch.Tensor], active: dict[str, torch.Tensor]) -> float:
    """Expected MACs at uniform probabilities over the active candidates: the normaliser."""
    total = 0.0
    for label, cost in macs.items():
        mask = active[label].to(cost.device)
        total += float(cost[mask].mean()) if bool(mask.any()) else 0.0
    return total


def flops_penalty(probs: dict[str, torch.Tensor], macs: dict[str, torch.Tensor], reference: float) -> torch.Tensor:
    """Expected MACs over ``reference`` (the uniform-probability MACs): 1.0 at the start."""
    return expected_macs(probs, macs) / max(reference, 1e-12)


def column_norms(matrix: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2 norm of each column, smooth at 0."""
    return torch.sqrt((matrix * matrix).sum(0) + eps)


def column_regulariser(matrix: torch.Tensor, columns_active: torch.Tensor, reading: str = "min") -> torch.Tensor:
    """Eq. 4's term over one component's probability matrix (removed columns excluded).

    ``"min"``: ``min_i ||P[:, i]||_2``, Eq. 4 as printed. Minimising it pushes the weakest
    op's probability towards 0 in every layer at once, so the column scores spread apart
    (the effect of the paper's Fig. 4) and the op that screening removes next is the one
    that was already losing.
    ``"group"``: ``sum_i ||P[:, i]||_2``, the usual group lasso. On rows that each sum to 1
    it is at least sqrt(layers), with equality exactly when every layer has the same
    distribution over ops: it pulls the layers of a component towards one shared ranking
    (column structure) rather than separating ops.
    """
    norms = column_norms(matrix)[columns_active]
    if norms.numel() == 0:
        return matrix.sum() * 0
    if reading == "min":
        return norms.min()
    if reading == "group":
        return norms.sum()
    raise ValueError(f"unknown regulariser reading {reading!r}; choose one of {REGULARISERS}")


def column_scores(matrix: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
    """Score of each op column: its mean probability over the layers where it is a candidate.

    Removed ops (present nowhere) score -inf, so they never rank above a kept op.
    """
    counts = presence.sum(0)
    sums = (matrix * presence).sum(0)
    scores = sums / counts.clamp(min=1)
    return torch.where(counts > 0, scores, torch.full_like(scores, float("-inf")))


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of one probability vector; 0 * log 0 = 0."""
    return -(p * torch.log(p.clamp(min=1e-30))).sum()
