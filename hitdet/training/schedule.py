"""Learning-rate schedules: linear warm-up, then steps (retraining) or a cosine (the search)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def warmup_step_factor(
    steps_per_epoch: int,
    milestones: Sequence[int] = (8, 11),
    gamma: float = 0.1,
    warmup_iters: int = 500,
    warmup_ratio: float = 1.0 / 3,
) -> Callable[[int], float]:
    """The lr multiplier at optimiser step ``step`` (0-based), for ``torch.optim.lr_scheduler.LambdaLR``.

    Warm-up (mmdetection's "linear"): the factor rises linearly from ``warmup_ratio`` at step 0
    to 1 at step ``warmup_iters``; after epoch ``m`` of ``milestones`` (i.e. from step
    ``m * steps_per_epoch``) it is multiplied by ``gamma``. Both combine when they overlap.
    """
    steps_per_epoch = max(1, int(steps_per_epoch))
    bounds = [int(m) * steps_per_epoch for m in milestones]

    def factor(step: int) -> float:
        f = gamma ** sum(step >= b for b in bounds)
        if warmup_iters > 0 and step < warmup_iters:
            f *= warmup_ratio + (1.0 - warmup_ratio) * step / warmup_iters
        return f

    return factor


def warmup_cosine_factor(
    total_steps: int, warmup_iters: int = 0, warmup_ratio: float = 1.0 / 3
) -> Callable[[int], float]:
    """Linear warm-up, then a cosine from 1 down to 0 at ``total_steps`` (the search's weight schedule)."""
    total_steps = max(1, int(total_steps))

    def factor(step: int) -> float:
        f = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        if warmup_iters > 0 and step < warmup_iters:
            f *= warmup_ratio + (1.0 - warmup_ratio) * step / warmup_iters
        return f

    return factor
