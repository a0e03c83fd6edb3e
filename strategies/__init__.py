"""The Hit-Detector search strategy for NNI: screening and the end-to-end trinity search.

Needs NNI, Lightning and torch (and :mod:`search_spaces.ops` and :mod:`search_spaces.quiet` at most); never ``hitdet``.
"""

from __future__ import annotations

from search_spaces.quiet import quiet_nni_import

with quiet_nni_import():
    # NNI's own import order: nni.nas.strategy must load before nni.nas.oneshot.pytorch.strategy, or
    # nni.nas.strategy.DARTS and friends become placeholders that fail (a circular import inside NNI).
    import nni.nas.strategy  # noqa: F401

from strategies.decision import DECISIONS, Decision, DecisionRule
from strategies.export import SearchResult, export_result
from strategies.mixed import DEFAULT_COMPONENT, HitDetMixedLayer, component_of
from strategies.module import HitDetLightningModule
from strategies.penalty import column_regulariser, column_scores, flops_penalty
from strategies.screener import RANKING_RULES, ArchStep, RankingRule, Screener
from strategies.screening import PAPER_NECK_SUB_SPACE, RemovalEvent, SubSpaces, kept_after_epoch, load_subspaces
from strategies.settings import SearchSettings
from strategies.strategy import HitDetStrategy, split_loader
from strategies.supernet import Supernet
from strategies.terms import ArchitectureTerm, ColumnRegulariser, FlopsPenalty, TargetPenalty, TermContext

__all__ = [
    "HitDetStrategy",
    "SearchSettings",
    "SearchResult",
    "SubSpaces",
    "RemovalEvent",
    "load_subspaces",
    "PAPER_NECK_SUB_SPACE",
    "export_result",
    "kept_after_epoch",
    "split_loader",
    "flops_penalty",
    "column_regulariser",
    "column_scores",
    "component_of",
    "DEFAULT_COMPONENT",
    "HitDetMixedLayer",
    "HitDetLightningModule",
    "Supernet",
    "ArchitectureTerm",
    "TermContext",
    "FlopsPenalty",
    "TargetPenalty",
    "ColumnRegulariser",
    "Screener",
    "RankingRule",
    "ArchStep",
    "RANKING_RULES",
    "DecisionRule",
    "Decision",
    "DECISIONS",
]
