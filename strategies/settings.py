"""All knobs of the HitDet strategy in one dataclass, with the paper's values as defaults.

Where the paper is silent (the FLOPs unit, how screening ranks, how far α may travel), the
defaults are the readings our evidence favours; ``docs/measurements.md`` ("What makes the search search")
gives the measurements behind each.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("search", "screen")
MIXED_OPS = ("full", "recompute", "sample")  # strategies.mixed: how a layer combines its candidates
DATA_SPLITS = ("half", "train_val")
REGULARISERS = ("min", "softmin", "group")
# ``scoring`` and ``decision`` name rules of the registries strategies.screener.RANKING_RULES and
# strategies.decision.DECISIONS (checked against them, so that a registered rule is a valid setting).
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
    (``scoring="epoch_mean"``) rather than on the end-of-epoch snapshot. ``scoring`` names a
    ranking rule of :data:`strategies.screener.RANKING_RULES` (a registry: a new rule is one
    class and one registration).

    ``decision`` names the rule that picks one op per position at export, from
    :data:`strategies.decision.DECISIONS`: ``"argmax"`` (the paper's highest score per layer) or
    ``"budget"`` (argmax, then the fewest switches into the MACs budget; needs ``target_macs``).
    None means ``"budget"`` when ``target_macs`` is set, else ``"argmax"`` (:attr:`decision_rule`).

    ``screen_components`` screens some components only (the paper screened one at a time, for
    memory); the others then run one fixed op each (``fixed_ops``, default :data:`FIXED_OPS`:
    the paper's hand-made baselines, a MobileNetV2 block in the backbone and 3x3 convolutions in
    the neck and the 4-conv head; a layer without that op runs its first candidate), so that
    their mixed layers hold and run a single candidate.

    ``arch_loss_weight`` weighs the detection loss in the architecture step: 1 is the paper's
    search; 0 is the *penalty-only control*, a run in which the loss's gradient never reaches α,
    so whatever it exports the FLOPs penalty and the screening regulariser chose alone (the
    architecture step then skips the detection forward pass). ``screen_keep`` lists ops that
    screening never removes, so that the search can always choose them where they exist (e.g.
    ``skip``: a block that is not there). Default ``("skip",)``: whatever screening ranks, the search
    can always leave a block out, so the FLOPs penalty can reach a shallow detector.

    Known DARTS failure modes: ``bn_affine=False`` makes the BatchNorms inside candidate ops
    non-affine during the search (as DARTS does; retraining always uses affine BN), and
    ``skip_drop_prob`` drops the ``skip`` candidate's output per sample with that probability
    (drop-path against skip taking over). Off by default (None = 0 in both modes, see
    :attr:`skip_drop`): on a toy where ``skip`` is the best op alone, drop-path 0.3 made screening
    remove it in every seed, and at CPU training budgets shallow detectors train best (docs/evidence.md).
    The ``paper`` and ``paper-cpu`` recipes pin 0.3 while screening, the earlier reading.
    """

    # set by the run (the command's mode, the search's sub spaces), never by a config file
    __config_hidden__ = ("mode", "sub_spaces")

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
    decision: str | None = None
    arch_loss_weight: float = 1.0
    screen_keep: Sequence[str] = ("skip",)

    def __post_init__(self) -> None:
        """Check every range here, once: errors read ``field: why, got value`` (the config names the source)."""
        from strategies.decision import DECISIONS as decisions  # registries: rules register themselves there
        from strategies.screener import RANKING_RULES

        for name, allowed in (("mode", MODES), ("regulariser", REGULARISERS), ("scoring", tuple(RANKING_RULES)),
                              ("data_split", DATA_SPLITS), ("mixed_op", MIXED_OPS),
                              ("decision", (None, *decisions))):
            if getattr(self, name) not in allowed:
                shown = ", ".join(str(a) for a in allowed if a is not None)
                raise ValueError(f"{name}: must be one of {shown}, got {getattr(self, name)!r}")
        if self.decision == "budget" and self.target_macs is None:
            raise ValueError("decision: 'budget' decodes within target_macs, which is not set")
        for name in ("num_ops", "sample_k"):
            _check(self, name, "must be an integer >= 1", lambda v: _is_int(v) and v >= 1)
        _check(self, "arch_start_epoch", "must be an integer >= 0", lambda v: _is_int(v) and v >= 0)
        for name, optional in (("arc_learning_rate", False), ("softmin_temperature", False), ("arch_travel", True),
                               ("target_macs", True)):
            _check(self, name, "must be a positive number", lambda v: _is_real(v) and v > 0, optional)
        for name, optional in (("penalty_lambda", True), ("mu", False), ("reg_burn_in", False),
                               ("arc_weight_decay", False), ("gradient_clip_val", True), ("arch_loss_weight", False)):
            _check(self, name, "must be >= 0", lambda v: _is_real(v) and v >= 0, optional)
        _check(self, "group_p", "must be in (0, 1]", lambda v: _is_real(v) and 0 < v <= 1)
        _check(self, "target_tolerance", "must be in (0, 1)", lambda v: _is_real(v) and 0 < v < 1)
        _check(self, "skip_drop_prob", "must be in [0, 1)", lambda v: _is_real(v) and 0 <= v < 1, optional=True)
        betas = self.arc_betas
        two = isinstance(betas, (list, tuple)) and len(betas) == 2
        if not (two and all(_is_real(b) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"arc_betas: must be two numbers in [0, 1), e.g. [0.5, 0.999], got {betas!r}")
        self.arc_betas = (float(betas[0]), float(betas[1]))
        if self.screen_components is not None:
            comps = self.screen_components
            if isinstance(comps, str) or not isinstance(comps, (list, tuple)) or \
                    not all(isinstance(c, str) for c in comps):
                raise ValueError(f"screen_components: must be a list of component names, e.g. [backbone, neck], "
                                 f"got {comps!r}")
            self.screen_components = tuple(comps)
        if isinstance(self.screen_keep, str) or not all(isinstance(op, str) for op in self.screen_keep):
            raise ValueError(f"screen_keep: must be a list of op names, got {self.screen_keep!r}")
        self.screen_keep = tuple(self.screen_keep)

    @property
    def lam(self) -> float:
        """The FLOPs-penalty weight actually used."""
        if self.penalty_lambda is not None:
            return float(self.penalty_lambda)
        return 0.01 if self.mode == "search" else 0.0

    @property
    def skip_drop(self) -> float:
        """The drop-path probability of ``skip`` actually used: None means 0 (off) in both modes.

        Why off: it was meant against a ``skip`` that wins screening on training speed alone, but
        measured on a toy where ``skip`` is the best op alone it removed ``skip`` in every seed, and
        without it screening still kept the best op alone on the toy where large ops are better
        (docs/evidence.md, "Screening"). The ``paper`` recipes pin the earlier 0.3 while screening.
        """
        return float(self.skip_drop_prob) if self.skip_drop_prob is not None else 0.0

    def fixed_op(self, component: str) -> str | None:
        """The op a component runs while it is not screened (None: its first candidate)."""
        return (self.fixed_ops or {}).get(component, FIXED_OPS.get(component))

    @property
    def decision_rule(self) -> str:
        """The export's decision rule actually used: None means ``"budget"`` with a ``target_macs``, else argmax."""
        if self.decision is not None:
            return self.decision
        return "budget" if self.target_macs is not None else "argmax"

    def arch_lr(self, planned_steps: int | None) -> float:
        """The α learning rate used: ``arch_travel / planned_steps`` when both are known, else ``arc_learning_rate``."""
        if self.arch_travel is not None and planned_steps:
            return self.arch_travel / planned_steps
        return self.arc_learning_rate

    def check_epochs(self, max_epochs: int | None) -> None:
        """Warn when training stops before ``arch_start_epoch``: the alphas would never move."""
        if max_epochs is not None and 0 < max_epochs <= self.arch_start_epoch:
            warnings.warn(
                f"architecture updates start after {self.arch_start_epoch} weight-only epoch(s) (arch_start_epoch), "
                f"but training stops after {max_epochs} epoch(s): the alphas will not be trained",
                stacklevel=3,
            )

    @property
    def screening(self) -> bool:
        return self.mode == "screen"

    def screened(self, components: Sequence[str]) -> list[str]:
        """The components screening acts on, of the space's ``components`` (none when searching)."""
        if not self.screening:
            return []
        return list(components) if self.screen_components is None else list(self.screen_components)

    def to_dict(self, resolved: bool = True) -> dict[str, Any]:
        """The settings as plain JSON/YAML values.

        Args:
            resolved: True (default): *as used*, the mode's defaults filled in (``penalty_lambda``,
                ``skip_drop_prob``, ``decision``), as the exported metadata records them. False:
                *as set*, None staying None ("the mode's default"), as a config file or a copy of
                these settings for another mode needs them.

        Returns:
            One entry per field; tuples as lists.
        """
        d = asdict(self)
        if resolved:
            d.update(penalty_lambda=self.lam, skip_drop_prob=self.skip_drop, decision=self.decision_rule)
        d["arc_betas"] = list(self.arc_betas)
        d["screen_components"] = list(self.screen_components) if self.screen_components is not None else None
        d["screen_keep"] = list(self.screen_keep)
        return d


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(s: SearchSettings, name: str, why: str, ok: Any, optional: bool = False) -> None:
    value = getattr(s, name)
    if value is None and optional:
        return
    if not ok(value):
        raise ValueError(f"{name}: {why}, got {value!r}")
