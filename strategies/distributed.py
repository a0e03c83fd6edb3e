"""Re-wrapping the supernet in DistributedDataParallel after screening removed ops.

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

from torch.nn.parallel import DistributedDataParallel


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
