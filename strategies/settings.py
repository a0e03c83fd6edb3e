"""All knobs of the HitDet strategy in one dataclass, with the paper's values as defaults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("search", "screen")
MIXED_OPS = ("full", "recompute", "sample")  # strategies.mixed: how a layer combines its candidates
DATA_SPLITS = ("half", "train_val")


@dataclass
class SearchSettings:
    """Settings of one run; written into the exported metadata as they were used.

    ``penalty_lambda=None`` means the paper's choice for the mode: 0.01 when searching,
    0 when screening (no resource constraint at that stage, paper Sec. 4.2).
    """

    mode: str = "search"
    arc_learning_rate: float = 4e-4
    arc_betas: tuple[float, float] = (0.5, 0.999)
    arc_weight_decay: float = 1e-3
    arch_start_epoch: int = 6
    penalty_lambda: float | None = None
    mu: float = 0.1
    regulariser: str = "min"
    num_ops: int = 8
    screen_components: Sequence[str] | None = None
    data_split: str = "half"
    gradient_clip_val: float | None = None
    freeze_weights_in_arch_step: bool = True
    log_heatmaps: bool = True
    sub_spaces: dict[str, list[str]] | None = field(default=None)
    mixed_op: str = "full"
    sample_k: int = 2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.regulariser not in ("min", "group"):
            raise ValueError(f"regulariser must be 'min' or 'group', got {self.regulariser!r}")
        if self.data_split not in DATA_SPLITS:
            raise ValueError(f"data_split must be one of {DATA_SPLITS}, got {self.data_split!r}")
        if self.num_ops < 1:
            raise ValueError(f"num_ops must be at least 1, got {self.num_ops}")
        if self.arch_start_epoch < 0:
            raise ValueError(f"arch_start_epoch must be >= 0, got {self.arch_start_epoch}")
        if self.penalty_lambda is not None and self.penalty_lambda < 0:
            raise ValueError(f"penalty_lambda must be >= 0, got {self.penalty_lambda}")
        if self.mu < 0:
            raise ValueError(f"mu must be >= 0, got {self.mu}")
        if self.mixed_op not in MIXED_OPS:
            raise ValueError(f"mixed_op must be one of {MIXED_OPS}, got {self.mixed_op!r}")
        if self.sample_k < 1:
            raise ValueError(f"sample_k must be at least 1, got {self.sample_k}")
        if self.screen_components is not None:
            self.screen_components = tuple(self.screen_components)

    @property
    def lam(self) -> float:
        """The FLOPs-penalty weight actually used."""
        if self.penalty_lambda is not None:
            return float(self.penalty_lambda)
        return 0.01 if self.mode == "search" else 0.0

    @property
    def screening(self) -> bool:
        return self.mode == "screen"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["penalty_lambda"] = self.lam
        d["arc_betas"] = list(self.arc_betas)
        d["screen_components"] = list(self.screen_components) if self.screen_components is not None else None
        return d
