"""All knobs of the HitDet strategy in one dataclass, with the paper's values as defaults.

Where the paper is silent (the FLOPs unit, how screening ranks, how far α may travel), the
defaults are the readings our evidence favours; ``README.md`` ("What makes the search search")
gives the measurements behind each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("search", "screen")
MIXED_OPS = ("full", "recompute", "sample")  # strategies.mixed: how a layer combines its candidates
DATA_SPLITS = ("half", "train_val")
REGULARISERS = ("min", "softmin", "group")
SCORINGS = ("epoch_mean", "snapshot")
# What a component runs while another one is screened (screen_components): the paper's baselines.
FIXED_OPS: dict[str, str] = {"backbone": "ir_k3_e3", "neck": "conv_k3", "head": "conv_k3"}


@dataclass
class SearchSettings:
    """Settings of one run; written into the exported metadata as they were used.

    ``penalty_lambda=None`` means the paper's choice for the mode: 0.01 when searching,
    0 when screening (no resource constraint at that stage, paper Sec. 4.2).

    The FLOPs penalty is ``λ · 100 · E[MACs] / MACs_uniform``: the expected MACs of the
    searched positions in *percent* of their expected MACs at uniform α. It is 100·λ (1.0 at
    the paper's λ = 0.01) at the start of every search, at any input size and width, the same
    order as the detection loss, as the paper's FLOPs in G were at its scale (about 270 G).
    With ``target_macs`` the penalty is ``λ · 100 · |E[MACs] − T| / T`` instead and the export
    is decoded within ``target_tolerance`` of T (see :mod:`strategies.budget`).

    ``arch_travel``: when set, the α learning rate is ``arch_travel / (number of architecture
    steps)``, so that Adam can move an α by about ``arch_travel`` logits over the search
    whatever its length. The paper's Adam lr 4e-4 over about 11k COCO architecture steps
    (6 epochs of 59k images at 32 per step) is a travel of about 4.4.

    Screening (Eq. 4): ``regulariser`` is the reading of the column-sparse term, applied to
    the matrix of op probabilities P (layers x ops):

    * ``"min"``: ``min_i ||P[:, i]||``, Eq. 4 as printed. Its gradient reaches one column only.
    * ``"softmin"``: ``-τ log Σ_i exp(-s_i / τ)`` of the columns' norms relative to uniform
      (``s_i = ||P[:, i]|| / ||1/n||``), a smooth min whose gradient reaches every column,
      the weaker ones most (``softmin_temperature`` τ).
    * ``"group"``: ``Σ_i (||P[:, i]|| / ||1/n||)^p`` with ``group_p`` < 1, the L2,p group norm
      on probabilities: concave in the column norms, so it is smallest when few columns
      carry the mass (p = 1 would be the group lasso, which on rows summing to 1 only
      aligns the layers and cannot sparsify).

    The regulariser starts ``reg_burn_in`` architecture epochs after ``arch_start_epoch``, so
    that the detection loss, not initialisation noise, sets the first differences; screening
    ranks ops on their scores averaged over every architecture step of the epoch
    (``scoring="epoch_mean"``) rather than on the end-of-epoch snapshot.

    ``screen_components`` screens some components only (the paper screened one at a time, for
    memory); the others then run one fixed op each (``fixed_ops``, default :data:`FIXED_OPS`:
    the paper's hand-made baselines, a MobileNetV2 block in the backbone and 3x3 convolutions in
    the neck and the 4-conv head; a layer without that op runs its first candidate), so that
    their mixed layers hold and run a single candidate.

    Known DARTS failure modes: ``bn_affine=False`` makes the BatchNorms inside candidate ops
    non-affine during the search (as DARTS does; retraining always uses affine BN), and
    ``skip_drop_prob`` drops the ``skip`` candidate's output per sample with that probability
    during the search (drop-path against skip taking over; None = 0.3 when screening, 0 when
    searching, see :attr:`skip_drop`).
    """

    mode: str = "search"
    arc_learning_rate: float = 4e-4
    arc_betas: tuple[float, float] = (0.5, 0.999)
    arc_weight_decay: float = 1e-3
    arch_start_epoch: int = 6
    arch_travel: float | None = None
    penalty_lambda: float | None = None
    target_macs: float | None = None
    target_tolerance: float = 0.05
    mu: float = 0.1
    regulariser: str = "min"
    softmin_temperature: float = 0.1
    group_p: float = 0.5
    reg_burn_in: float = 0.5
    scoring: str = "epoch_mean"
    num_ops: int = 8
    screen_components: Sequence[str] | None = None
    fixed_ops: dict[str, str] | None = None
    bn_affine: bool = True
    skip_drop_prob: float | None = None
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
        if self.regulariser not in REGULARISERS:
            raise ValueError(f"regulariser must be one of {REGULARISERS}, got {self.regulariser!r}")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if self.data_split not in DATA_SPLITS:
            raise ValueError(f"data_split must be one of {DATA_SPLITS}, got {self.data_split!r}")
        if self.num_ops < 1:
            raise ValueError(f"num_ops must be at least 1, got {self.num_ops}")
        if self.arch_start_epoch < 0:
            raise ValueError(f"arch_start_epoch must be >= 0, got {self.arch_start_epoch}")
        _positive(self, "arc_learning_rate")
        _positive(self, "softmin_temperature")
        _positive(self, "arch_travel", optional=True)
        _positive(self, "target_macs", optional=True)
        _non_negative(self, "penalty_lambda", optional=True)
        _non_negative(self, "mu")
        _non_negative(self, "reg_burn_in")
        _non_negative(self, "arc_weight_decay")
        if not (isinstance(self.group_p, (int, float)) and 0 < self.group_p <= 1):
            raise ValueError(f"group_p must be in (0, 1], got {self.group_p!r}")
        if not (isinstance(self.target_tolerance, (int, float)) and 0 < self.target_tolerance < 1):
            raise ValueError(f"target_tolerance must be in (0, 1), got {self.target_tolerance!r}")
        p = self.skip_drop_prob
        if p is not None and not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1):
            raise ValueError(f"skip_drop_prob must be in [0, 1), got {p!r}")
        betas = tuple(self.arc_betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"arc_betas must be two numbers in [0, 1), got {self.arc_betas!r}")
        self.arc_betas = (float(betas[0]), float(betas[1]))
        if self.mixed_op not in MIXED_OPS:
            raise ValueError(f"mixed_op must be one of {MIXED_OPS}, got {self.mixed_op!r}")
        if isinstance(self.sample_k, bool) or not isinstance(self.sample_k, int) or self.sample_k < 1:
            raise ValueError(f"sample_k must be at least 1, got {self.sample_k!r}")
        if self.screen_components is not None:
            self.screen_components = tuple(self.screen_components)

    @property
    def lam(self) -> float:
        """The FLOPs-penalty weight actually used."""
        if self.penalty_lambda is not None:
            return float(self.penalty_lambda)
        return 0.01 if self.mode == "search" else 0.0

    @property
    def skip_drop(self) -> float:
        """The drop-path probability of ``skip`` actually used: None means 0.3 when screening, 0 when searching.

        Screening decides which ops exist at all, and there a ``skip`` that wins on training
        speed crowded out better ops (toy screen, README); in the search a cheap ``skip`` is a
        legitimate answer to the FLOPs penalty, so it is not handicapped there by default.
        """
        if self.skip_drop_prob is not None:
            return float(self.skip_drop_prob)
        return 0.3 if self.mode == "screen" else 0.0

    def fixed_op(self, component: str) -> str | None:
        """The op a component runs while it is not screened (None: its first candidate)."""
        return (self.fixed_ops or {}).get(component, FIXED_OPS.get(component))

    @property
    def screening(self) -> bool:
        return self.mode == "screen"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["penalty_lambda"] = self.lam
        d["skip_drop_prob"] = self.skip_drop
        d["arc_betas"] = list(self.arc_betas)
        d["screen_components"] = list(self.screen_components) if self.screen_components is not None else None
        return d


def _positive(s: SearchSettings, name: str, optional: bool = False) -> None:
    value = getattr(s, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _non_negative(s: SearchSettings, name: str, optional: bool = False) -> None:
    value = getattr(s, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
