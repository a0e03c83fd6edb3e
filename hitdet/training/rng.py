"""The random number generators' states in a checkpoint, so that a resumed run draws what an uninterrupted one would.

Lightning restores weights, optimisers and loops but not these, and training draws from them
after every checkpoint (flips, RoI sampling, data shuffling). With DDP every rank draws its own
numbers: the hooks gather all ranks' states (Lightning calls ``on_save_checkpoint`` on every
rank, rank 0 writes the file) and each rank restores its own.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

RNG_KEY = "hitdet_rng"  # the states of the process that wrote the checkpoint
RNG_RANKS_KEY = "hitdet_rng_ranks"  # with DDP: every rank's states, by rank


def rng_state() -> dict[str, Any]:
    """torch, numpy, python (and CUDA) generator states; tensors, lists and numbers only (weights_only loads)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _world() -> tuple[int, int] | None:
    """(rank, world size) of a multi-process run, None in a single process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return None


def save_rng_states(checkpoint: dict[str, Any]) -> None:
    """For ``on_save_checkpoint``: a collective under DDP, so every rank must call it."""
    state = rng_state()
    checkpoint[RNG_KEY] = state
    world = _world()
    if world is not None:
        states: list[Any] = [None] * world[1]
        torch.distributed.all_gather_object(states, state)
        checkpoint[RNG_RANKS_KEY] = states


def load_rng_states(checkpoint: dict[str, Any]) -> None:
    """For ``on_load_checkpoint``: this rank's states, or the writer's when the process count changed."""
    states, world = checkpoint.get(RNG_RANKS_KEY), _world()
    if world is not None and states is not None and len(states) == world[1]:
        set_rng_state(states[world[0]])
    elif RNG_KEY in checkpoint:
        set_rng_state(checkpoint[RNG_KEY])
