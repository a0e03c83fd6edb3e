"""The recomputing mixed op: DARTS's weighted sum with one candidate's activations alive at a time.

The plain mixed op (``sum_i w_i * op_i(x)`` under autograd) keeps the activations of every
candidate until the backward pass: a supernet step needs about as much memory as all its
candidates together. :func:`recomputed_sum` gives the same value and the same gradients but
keeps only the layer's input ``x`` and the op weights ``w``:

* forward, under ``no_grad``: ``out = sum_i w_i * op_i(x)``, each candidate's activations freed
  as soon as its output is added;
* backward: each candidate again, one at a time, with grad enabled; the gradient of its output
  is ``w_i * grad_out``, which gives the gradients of ``x`` and of the candidate's weights, and
  ``d loss / d w_i = <grad_out, op_i(x)>``. So a layer's peak memory is one candidate's graph plus
  its input, output and their gradients, at the price of a second forward pass of every candidate.

The recompute must be the same computation as the forward:

* **BatchNorm** in training mode normalises with the batch statistics of ``x`` (the same ``x``,
  so the same statistics) but would update its running statistics a second time: every buffer
  of the candidate (running mean and variance, ``num_batches_tracked``) is saved before the
  recompute and put back after it.
* **Random ops** (dropout, drop-path) must draw the same numbers: the CPU RNG state and the CUDA
  RNG state of ``x``'s device are saved before the forward, restored for the recompute (which
  runs the candidates in the same order), and the RNG state of the backward pass is left as it
  was, as ``torch.utils.checkpoint`` does.
* **Autocast**: the recompute runs under the autocast state of the forward.

Candidates' parameters are inputs of the autograd function, so their gradients flow back the
normal way (accumulated by autograd, seen by DDP's hooks); only the parameters that require a
gradient get one (the architecture step freezes the weights: then only ``x`` and ``w``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import get_device_states, set_device_states


class _Plan:
    """What the autograd function needs besides tensors: the candidates and their parameters."""

    def __init__(self, indices: Sequence[int], modules: Sequence[nn.Module]) -> None:
        self.indices = list(indices)
        self.modules = list(modules)
        self.params: list[list[nn.Parameter]] = [list(m.parameters()) for m in self.modules]


@contextlib.contextmanager
def frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Put every buffer of ``module`` back as it was on exit (BatchNorm's running statistics)."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype | None]:
    if not torch.is_autocast_enabled(device_type):
        return False, None
    return True, torch.get_autocast_dtype(device_type)


class _RecomputedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, plan: _Plan, x: torch.Tensor, weights: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.plan = plan
        ctx.device_type = x.device.type
        ctx.autocast = _autocast_state(ctx.device_type)
        ctx.cpu_rng = torch.get_rng_state()
        ctx.cuda_devices, ctx.cuda_rng = get_device_states(x) if x.is_cuda else ([], [])
        out: torch.Tensor | None = None
        for i, m in zip(plan.indices, plan.modules, strict=True):
            y = m(x) * weights[i]  # a new tensor even where op_i is the identity
            out = y if out is None else out.add_(y)
            del y
        assert out is not None
        ctx.save_for_backward(x, weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> Any:
        x, weights = ctx.saved_tensors
        plan: _Plan = ctx.plan
        need_x, need_w = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        need_p = ctx.needs_input_grad[3:]
        grad_x: torch.Tensor | None = None
        grad_w = torch.zeros_like(weights) if need_w else None
        grad_p: list[torch.Tensor | None] = [None] * len(need_p)
        enabled, dtype = ctx.autocast
        with torch.random.fork_rng(devices=ctx.cuda_devices):
            torch.set_rng_state(ctx.cpu_rng)
            if ctx.cuda_devices:
                set_device_states(ctx.cuda_devices, ctx.cuda_rng)
            offset = 0
            for i, m, params in zip(plan.indices, plan.modules, plan.params, strict=True):
                wanted = [j for j in range(offset, offset + len(params)) if need_p[j]]
                pick = [params[j - offset] for j in wanted]
                offset += len(params)
                # the buffers go back after the gradient: BatchNorm's backward checks their version
                with frozen_buffers(m):
                    with torch.autocast(ctx.device_type, dtype=dtype, enabled=enabled):
                        if need_x or pick:
                            with torch.enable_grad():
                                xi = x.detach().requires_grad_(need_x)
                                y = m(xi)
                        else:
                            with torch.no_grad():
                                y = m(x)
                    if grad_w is not None:
                        grad_w[i] = (grad_out * y.detach()).sum().to(grad_w.dtype)
                    if (need_x or pick) and y.requires_grad:
                        inputs = ([xi] if need_x else []) + pick
                        grads = torch.autograd.grad(y, inputs, grad_outputs=grad_out * weights[i], allow_unused=True)
                        if need_x:
                            gx, grads = grads[0], grads[1:]
                            if gx is not None:
                                grad_x = gx if grad_x is None else grad_x.add_(gx)
                        for j, g in zip(wanted, grads, strict=True):
                            grad_p[j] = g
                del y
        if need_x and grad_x is None:
            grad_x = torch.zeros_like(x)
        return (None, grad_x, grad_w, *grad_p)


def recomputed_sum(
    indices: Sequence[int], modules: Sequence[nn.Module], x: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``sum_k weights[indices[k]] * modules[k](x)``, recomputing each candidate in the backward pass.

    ``weights`` is the full probability vector of the layer (removed ops' entries are never
    read and get a zero gradient); ``modules[k]`` is the candidate of index ``indices[k]``.
    """
    plan = _Plan(indices, modules)
    flat = [p for ps in plan.params for p in ps]
    return _RecomputedSum.apply(plan, x, weights, *flat)
