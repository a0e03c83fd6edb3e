"""The search under DDP: every rank must hold the same architecture, and screening re-wraps the supernet.

:func:`check_ranks_agree` stops the run if α or the removed ops differ between processes.
They never should: DDP all-reduces the α gradients, so every rank takes the same Adam step
and the same screening decisions. A difference means the runs would export different
architectures; failing loudly beats picking rank 0's silently.

:func:`rewrap_ddp`: re-wrapping the supernet in DistributedDataParallel after screening removed ops.

DDP's reducer takes the module's parameters once, when it is built: its gradient buckets hold
a copy-sized buffer for every parameter and its parameter list keeps every tensor alive. A
screening epoch deletes candidate modules, but without a new wrapper the reducer would keep
their weights (and bucket memory) on every rank and keep all-reducing their zero gradients.
Building a new wrapper over the pruned module is what frees them.

Every rank removes the same ops at the same epoch end (the α gradients are all-reduced, and
``check_ranks_agree`` verifies it), so every rank re-wraps at the same point; DDP's
constructor is a collective (it checks the parameter shapes across ranks and broadcasts rank
0's states), which must be entered by all ranks together.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from strategies.supernet import Supernet


def architecture_state(net: Supernet) -> torch.Tensor:
    """α and the removed-op masks of every label, flattened in label order (float64)."""
    parts = []
    for g in net.layers.values():
        alpha, active = g[0]._arch_alpha.detach().flatten(), g[0].active_mask
        parts += [alpha.to("cpu", torch.float64), active.to("cpu", torch.float64)]
    return torch.cat(parts)


def check_ranks_agree(module: Any, net: Supernet) -> None:
    """Raise ``RuntimeError`` naming the label if α or the removed ops differ between ranks (module docstring).

    Args:
        module: the LightningModule (its ``all_gather`` and trainer); nothing happens in one process.
        net: its searched layers.
    """
    trainer = module._trainer
    if trainer is None or trainer.world_size <= 1:
        return
    local = architecture_state(net)
    gathered = module.all_gather(local.to(module.device)).to("cpu").reshape(trainer.world_size, -1)
    where = rank_disagreement(gathered, net.names())
    if where is not None:
        raise RuntimeError(f"architecture state differs between DDP ranks after epoch {trainer.current_epoch}: {where}")


def rank_disagreement(gathered: torch.Tensor, names: dict[str, list[Any]]) -> str | None:
    """Where rows of ``gathered`` (one :func:`architecture_state` per rank) differ, or None.

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


def rewrap_ddp(trainer: Any) -> bool:
    """Rebuild ``trainer.strategy``'s DDP wrapper around the same LightningModule.

    Returns whether there was one to rebuild (single-process runs have none). Uses the
    strategy's own ``_setup_model`` and ``_register_ddp_hooks``, so that the new wrapper gets
    the same device ids, DDP arguments (``find_unused_parameters``) and communication hooks as
    the one Lightning built at set-up.
    """
    strategy = trainer.strategy
    old = getattr(strategy, "model", None)
    if not isinstance(old, DistributedDataParallel):
        return False
    module = old.module
    strategy.model = None  # drop the last reference to the old reducer before building the new one
    del old
    gc.collect()
    strategy.model = strategy._setup_model(module)
    strategy._register_ddp_hooks()
    return True
