"""The two terms the architecture step adds to the detection loss.

* :func:`flops_penalty` (paper Eq. 6-7): the expected MACs of the supernet,
  ``sum_layers sum_ops softmax(alpha) * MACs(op, layer)``, in percent of the expected MACs at
  uniform probabilities over the same candidates: 100 at the start of the search whatever
  the input size, RoI count or width (every MAC count scales with them alike), so a given
  lambda means the same at 128 px and at 800 px, for a tiny test network and for the full
  detector. Percent, not a ratio, so that the paper's lambda = 0.01 gives a penalty of 1 at
  the start, the order of the detection loss, as the paper's FLOPs in G (about 270 for its
  detector) did; as a plain ratio the penalty's gradient on the backbone's alpha was 3e-5 of
  the detection loss's, and lambda = 0.01 moved nothing. :func:`target_penalty` is the
  budget form: the distance to a MACs target, in percent of the target.
* :func:`column_regulariser` (paper Eq. 4): a norm over the columns (ops) of a component's
  matrix of op probabilities (rows = layers), in one of three readings.

Why probabilities and not raw logits: with a softmax, adding a constant to a row of alpha
changes nothing in the network but changes any norm of alpha, so a norm of the logits is
not a property of the architecture. The paper calls ``alpha_{l,i}`` the *score* of op i at
layer l (non-negative, higher is kept); the softmax probability is that score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from strategies.mixed import component_of
from strategies.settings import REGULARISERS

PERCENT = 100.0


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
    """The FLOPs penalty C of paper Eq. 6-7: expected MACs in percent of ``reference``, 100 at the start.

    Args:
        probs: ``{label: op probabilities}`` of every searched position (differentiable in α).
        macs: ``{label: MACs of each candidate}``, aligned with ``probs[label]``.
        reference: the expected MACs at uniform probabilities over the same candidates.

    Returns:
        A scalar tensor, ``100 * sum_l sum_o p(o, l) * MACs(o, l) / reference``, differentiable in ``probs``.
    """
    return PERCENT * expected_macs(probs, macs) / max(reference, 1e-12)


def target_penalty(probs: dict[str, torch.Tensor], macs: dict[str, torch.Tensor], target: float) -> torch.Tensor:
    """``|E[MACs] - target|`` in percent of the target: pulls the expected MACs to the budget from either side."""
    return PERCENT * (expected_macs(probs, macs) - target).abs() / max(target, 1e-12)


def column_norms(matrix: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2 norm of each column, smooth at 0."""
    return torch.sqrt((matrix * matrix).sum(0) + eps)


def uniform_matrix(presence: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The probability matrix at uniform α: ``1 / n_l`` where op i is a candidate of layer l."""
    pres = presence.to(dtype)
    return pres / pres.sum(1, keepdim=True).clamp(min=1)


def column_regulariser(
    matrix: torch.Tensor,
    columns_active: torch.Tensor,
    reading: str = "min",
    *,
    presence: torch.Tensor | None = None,
    temperature: float = 0.1,
    p: float = 0.5,
) -> torch.Tensor:
    """Eq. 4's term over one component's probability matrix (removed columns excluded).

    ``"min"``: ``min_i ||P[:, i]||_2``, Eq. 4 as printed. Its gradient reaches only the column
    with the smallest norm; at the start of a search that is the op whose α happened to start
    lowest, so it pushes out an op chosen by initialisation noise (measured: the op ranked
    last was the one with the smallest initial norm in 4 of 6 toy screens).

    The two smooth readings work on the column norms relative to uniform,
    ``s_i = ||P[:, i]|| / ||U[:, i]||`` (1 for every op at uniform α, whatever the number of
    layers and ops; ``presence``, layers x ops, says where each op is a candidate, default
    everywhere), and are 1 at uniform:

    ``"softmin"``: ``-τ log mean_i exp(-s_i / τ)``, a smooth minimum: every column gets a share
    of the gradient, ``softmax(-s / τ)``, the weakest the most; as τ -> 0 it becomes ``min``.
    ``"group"``: ``mean_i s_i^p`` with ``0 < p < 1``, the L2,p group norm, concave in the
    column norms: with rows that sum to 1 it is smallest when the probability mass sits in
    few columns, so it sparsifies. (At p = 1 it is the group lasso, which on such rows only
    pulls the layers to one shared distribution and leaves the ops' spread as it was: its
    gradient measured 1e-9 to 1e-5.)

    Args:
        matrix: the component's probability matrix P, layers x ops.
        columns_active: a boolean mask of the ops still searched (removed columns excluded).
        reading: ``"min"``, ``"softmin"`` or ``"group"``.
        presence: layers x ops, where each op is a candidate (default everywhere); smooth readings only.
        temperature: τ of ``"softmin"``.
        p: the exponent of ``"group"``, ``0 < p < 1``.

    Returns:
        A scalar tensor, differentiable in ``matrix``.

    Raises:
        ValueError: an unknown reading.
    """
    if reading not in REGULARISERS:
        raise ValueError(f"unknown regulariser reading {reading!r}; choose one of {REGULARISERS}")
    norms = column_norms(matrix)
    if not bool(columns_active.any()):
        return matrix.sum() * 0
    if reading == "min":
        return norms[columns_active].min()
    if presence is None:
        presence = torch.ones(matrix.shape, dtype=torch.bool, device=matrix.device)
    ref = column_norms(uniform_matrix(presence.to(matrix.device), matrix.dtype))
    s = (norms / ref)[columns_active]
    if reading == "softmin":
        n = torch.tensor(float(s.numel()), dtype=s.dtype, device=s.device)
        return -temperature * (torch.logsumexp(-s / temperature, 0) - torch.log(n))
    return (s**p).mean()


def column_scores(matrix: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
    """Score of each op column: its mean probability over the layers where it is a candidate.

    Removed ops (present nowhere) score -inf, so they never rank above a kept op.

    Args:
        matrix: the component's probability matrix, layers x ops.
        presence: layers x ops, 1 where the op is (still) a candidate of the layer.

    Returns:
        One score per op column.
    """
    counts = presence.sum(0)
    sums = (matrix * presence).sum(0)
    scores = sums / counts.clamp(min=1)
    return torch.where(counts > 0, scores, torch.full_like(scores, float("-inf")))


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of one probability vector; 0 * log 0 = 0."""
    return -(p * torch.log(p.clamp(min=1e-30))).sum()
