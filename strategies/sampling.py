"""Path sampling for the mixed op: run k candidates per step instead of all of them.

Estimator (Monte-Carlo DARTS with a straight-through weight, as in ProxylessNAS and GDAS): draw k
ops i.i.d. from the layer's op probabilities ``p = softmax(alpha)`` (removed ops have p = 0 and
are never drawn); an op drawn ``c_i`` times gets the weight

    h_i = (c_i / k) * p_i / stopgrad(p_i)        (= c_i / k in the forward pass)

and the layer outputs ``sum_i h_i * op_i(x)`` over the distinct ops drawn (at most k run).

* Forward: ``E[sum_i (c_i / k) op_i(x)] = sum_i p_i op_i(x)``, the DARTS output: the sampled output
  is an unbiased estimate of it, exact as k grows.
* Gradient of alpha: ``sum_i (c_i / k) <g, op_i(x)> grad log p_i`` with ``g`` the gradient of the loss
  at the layer's output. For a fixed ``g`` its expectation is ``sum_i <g, op_i(x)> grad p_i``, the
  DARTS gradient; every alpha of the layer gets a gradient (through the softmax), not only those drawn.
* Weights: an op's weights get ``c_i / k`` times the gradient of its output (expected: ``p_i``, as
  in DARTS); ops not drawn get none this step.

Bias: ``g`` is taken at the *sampled* output, not at the DARTS output, so the alpha gradient is
biased wherever the loss is not linear in the layer's output (the bias shrinks as k grows and
vanishes for k -> inf); the score-function term of the sampling distribution is dropped (the
straight-through choice of ProxylessNAS/GDAS). The variance is higher than DARTS's, most for
ops with small probabilities (their rare draws are weighted by ``1 / p_i`` in the gradient).

Draws use torch's global CPU RNG (seeded runs repeat; DDP ranks seeded alike draw alike).
Ops not drawn leave parameters without a gradient: DDP needs ``find_unused_parameters=True``.
"""

from __future__ import annotations

from collections import Counter

import torch


def sample_ops(probs: torch.Tensor, k: int) -> tuple[list[int], torch.Tensor]:
    """Draw ``k`` ops i.i.d. from ``probs``; return the distinct indices drawn and their weights ``h``.

    ``h`` has the length of ``probs``: ``(c_i / k) * p_i / stopgrad(p_i)`` for the ops drawn, 0 elsewhere
    (differentiable in ``probs``).
    """
    if k < 1:
        raise ValueError(f"sample_k must be at least 1, got {k}")
    p = probs.detach().to("cpu", torch.float64)
    draws = torch.multinomial(p, k, replacement=True).tolist()
    counts = Counter(draws)
    idx = sorted(counts)
    scale = torch.zeros_like(probs)
    scale[idx] = torch.tensor([counts[i] / k for i in idx], dtype=probs.dtype).to(probs.device)
    safe = torch.where(scale > 0, probs.detach(), torch.ones_like(probs))
    return idx, scale * probs / safe
