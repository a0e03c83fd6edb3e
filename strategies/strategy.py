"""``HitDetStrategy``: the Hit-Detector search as an NNI one-shot strategy.

Use it like any NNI one-shot strategy::

    strategy = HitDetStrategy()                       # end-to-end search, paper defaults
    NasExperiment(space, evaluator, strategy).run()
    result = strategy.export_result()                 # .sample, .metadata, .sub_spaces

It works on any ``ModelSpace`` made of ``LayerChoice``s: choices are grouped into components
by label prefix (``backbone/``, ``neck/``, ``head/``; one group without a prefix).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nni.nas.evaluator.pytorch import Lightning
from nni.nas.oneshot.pytorch.strategy import DARTS, MutationHook
from nni.nas.oneshot.pytorch.supermodule.differentiable import (
    DifferentiableMixedCell,
    DifferentiableMixedInput,
    DifferentiableMixedRepeat,
)
from nni.nas.oneshot.pytorch.supermodule.operation import NATIVE_MIXED_OPERATIONS
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, Subset

from strategies.export import SearchResult, export_result
from strategies.guards import apply_guards
from strategies.mixed import HitDetMixedLayer, component_of
from strategies.module import HitDetLightningModule
from strategies.screening import SubSpaces, load_subspaces
from strategies.settings import SearchSettings
from strategies.terms import ArchitectureTerm, terms_from_settings


class HitDetStrategy(DARTS):
    """Hit-Detector search (paper Sec. 3.2-3.4) as an NNI one-shot strategy.

    Every setting is a field of :class:`~strategies.settings.SearchSettings` (the paper's values, or
    our evidence's where the paper is silent, as defaults; see its docstring). After the run,
    :meth:`export_result` gives the chosen sample and its metadata (and, when screening, the sub spaces).

    Args:
        mode: ``"search"`` (default): end-to-end search with the FLOPs penalty (Eq. 6-7);
            ``"screen"``: column-sparse screening (Eq. 4) down to ``num_ops`` ops per component.
        settings: a whole :class:`~strategies.settings.SearchSettings`; ``overrides`` replace its fields.
        sub_spaces: restrict the space before searching: ``{component: [ops]}``, a :class:`SubSpaces`
            or the path of a screening JSON. Ops outside are removed from the supernet.
        extra_terms: architecture loss terms added after the strategy's own (:mod:`strategies.terms`:
            objects with a ``name`` and ``term(probs, context) -> tensor or None``), logged as
            ``search/<name>``.
        **overrides: fields of ``SearchSettings``; the main ones:

            - ``arc_learning_rate``, ``arch_travel``: Adam lr of the alphas (paper 4e-4), or the travel that
              sets it from the number of architecture steps.
            - ``arch_start_epoch``: weight-only epochs before the architecture steps start (6 of 12: α
              moves from epoch 7, counting epochs from 1).
            - ``penalty_lambda``, ``target_macs``: weight of the FLOPs penalty (None = 0.01 when searching,
              0 when screening), and an optional MACs budget to search towards.
            - ``mu``, ``regulariser``, ``num_ops``, ``screen_components``: screening: weight and reading of
              the regulariser, ops kept per component, and the components screened (None = all at once;
              the others' alphas then stay fixed).
            - ``data_split``: ``"half"``: weights and alphas train on two fixed halves of the training
              loader's dataset (even / odd indices); ``"train_val"``: NNI's way, alphas on the val loader.
            - ``mixed_op``, ``sample_k``: how each searched layer combines its candidates: ``"full"``
              (DARTS's weighted sum), ``"recompute"`` (the same sum and gradients, one candidate's
              activations alive at a time, each candidate run twice) or ``"sample"`` (``sample_k``
              candidates drawn per step; :mod:`strategies.sampling` documents the estimator and its bias).
            - ``scoring``, ``decision``: the screening's ranking rule
              (:data:`strategies.screener.RANKING_RULES`) and the export's decision rule
              (:data:`strategies.decision.DECISIONS`), by registered name.

            Other keyword arguments go to NNI's ``DARTS``.

    Raises:
        ValueError: ``penalty=`` (NNI's penalty; use ``penalty_lambda``), or a setting out of range.
    """

    def __init__(
        self,
        mode: str | None = None,
        *,
        settings: SearchSettings | None = None,
        sub_spaces: Mapping[str, Sequence[str]] | SubSpaces | str | os.PathLike[str] | None = None,
        extra_terms: Sequence[ArchitectureTerm] = (),
        **overrides: Any,
    ) -> None:
        if overrides.get("penalty") is not None:
            raise ValueError("HitDetStrategy has its own FLOPs penalty: use penalty_lambda, not penalty=")
        overrides.pop("penalty", None)
        fields = set(SearchSettings.__dataclass_fields__) - {"sub_spaces"}
        values = {k: overrides.pop(k) for k in list(overrides) if k in fields}
        if mode is not None:
            values["mode"] = mode
        base = settings.to_dict(resolved=False) if settings is not None else {}  # None stays "the mode's default"
        base.pop("sub_spaces", None)
        subs = settings.sub_spaces if settings is not None else None
        if sub_spaces is not None:
            subs = _normalise_subspaces(sub_spaces)
        self.settings = SearchSettings(**{**base, **values, "sub_spaces": subs})
        self.extra_terms = list(extra_terms)
        s = self.settings
        super().__init__(
            arc_learning_rate=s.arc_learning_rate,
            gradient_clip_val=s.gradient_clip_val,
            warmup_epochs=s.arch_start_epoch,
            **overrides,
        )

    @classmethod
    def from_settings(cls, settings: SearchSettings | Mapping[str, Any], **overrides: Any) -> HitDetStrategy:
        """Build from a :class:`SearchSettings` or a plain dict (a config file's ``search:`` section).

        Args:
            settings: the settings, or a dict of ``SearchSettings`` fields.
            **overrides: fields that replace those of ``settings``.

        Returns:
            The strategy.

        Raises:
            TypeError: an unknown key (named), so that a typo in a config is not ignored.
        """
        data = settings.to_dict(resolved=False) if isinstance(settings, SearchSettings) else dict(settings)
        data.update(overrides)
        known = set(SearchSettings.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise TypeError(f"unknown search setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    # -- supernet -----------------------------------------------------------------------------

    def default_mutation_hooks(self) -> list[MutationHook]:
        from nni.nas.oneshot.pytorch.strategy import no_default_hook

        hooks: list[MutationHook] = [
            HitDetMixedLayer.mutate,
            DifferentiableMixedInput.mutate,
            DifferentiableMixedCell.mutate,
            DifferentiableMixedRepeat.mutate,
        ]
        hooks += [operation.mutate for operation in NATIVE_MIXED_OPERATIONS]
        hooks.append(no_default_hook)
        return hooks

    def mutate_model(self, model: Any) -> Any:
        """Build the supernet in place, then remove the ops outside ``sub_spaces``."""
        model = super().mutate_model(model)
        for m in model.modules():
            if isinstance(m, HitDetMixedLayer):
                m.set_mixed_op(self.settings.mixed_op, self.settings.sample_k)
        subs = self.settings.sub_spaces
        if subs:
            layers = [m for m in model.modules() if isinstance(m, HitDetMixedLayer)]
            comps = {component_of(m.label) for m in layers}
            unknown = set(subs) - comps
            if unknown:
                raise ValueError(f"sub_spaces names components {sorted(unknown)}; the space has {sorted(comps)}")
            for m in layers:
                keep = subs.get(component_of(m.label))
                if keep is None:
                    continue
                if not any(str(n) in keep for n in m.names):
                    raise ValueError(f"sub space of {component_of(m.label)!r} has none of {m.label!r}'s ops")
                for n in list(m.active_names()):
                    if str(n) not in keep:
                        m.drop(n)
        s = self.settings
        if s.screening and s.screen_components is not None:
            self._fix_unscreened(model)
        if not s.bn_affine or s.skip_drop > 0:
            apply_guards((m for m in model.modules() if isinstance(m, HitDetMixedLayer)), s.bn_affine, s.skip_drop)
        return model

    def _fix_unscreened(self, model: Any) -> None:
        """Components not being screened run one op: the others are removed (memory freed), α stays fixed."""
        s = self.settings
        screened = set(s.screen_components or ())
        for m in model.modules():
            if not isinstance(m, HitDetMixedLayer) or component_of(m.label) in screened:
                continue
            active = [str(n) for n in m.active_names()]
            wanted = s.fixed_op(component_of(m.label))
            keep = wanted if wanted in active else active[0]
            for n in list(m.active_names()):
                if str(n) != keep:
                    m.drop(n)

    def configure_oneshot_module(self, training_module: Any) -> HitDetLightningModule:
        terms = [*terms_from_settings(self.settings), *self.extra_terms]
        return HitDetLightningModule(training_module, self.settings, terms=terms)

    # -- data ---------------------------------------------------------------------------------

    def mutate_evaluator(self, evaluator: Lightning) -> Lightning:
        """As NNI's, except that the half split needs no validation loader."""
        if self.settings.data_split == "train_val":
            return super().mutate_evaluator(evaluator)
        if not isinstance(evaluator, Lightning):
            raise TypeError("Evaluator needs to be a lightning evaluator to make one-shot strategy work.")
        if evaluator.datamodule is not None:
            return super().mutate_evaluator(evaluator)
        if evaluator.train_dataloaders is None:
            raise ValueError("HitDetStrategy needs train_dataloaders in the evaluator")
        module = self.configure_oneshot_module(evaluator.module)
        return Lightning(
            module,
            evaluator.trainer,
            train_dataloaders=self.train_dataloader(
                lambda: evaluator.train_dataloaders, lambda: evaluator.val_dataloaders
            ),
            val_dataloaders=None,
            fit_kwargs=evaluator.fit_kwargs,
        )

    def train_dataloader(self, train_dataloader_fn: Callable[[], Any], val_dataloader_fn: Callable[[], Any]) -> Any:
        if self.settings.data_split == "train_val":
            return super().train_dataloader(train_dataloader_fn, val_dataloader_fn)
        weights, arch = split_loader(train_dataloader_fn())
        return {"train": weights, "val": arch}

    # -- results ------------------------------------------------------------------------------

    def export_result(self) -> SearchResult:
        """The result of the run, after ``experiment.run()``.

        Returns:
            A :class:`SearchResult`: ``sample`` (``{label: op}``, the decision rule's choice), ``metadata``
            (α probabilities, sub spaces, MACs, settings, screening events and score history) and, in
            screen mode, ``sub_spaces``.
        """
        return export_result(self.oneshot_module)  # type: ignore[arg-type]

    def export_sample(self) -> dict[str, Any]:
        return self.export_result().sample


def split_loader(loader: Any) -> tuple[DataLoader, DataLoader]:
    """Two loaders over the even and the odd indices of ``loader``'s dataset (the 50/50 split).

    Deterministic and independent of the seed; both keep the loader's batch size, collate
    function, workers and shuffling (shuffled loaders draw their order from torch's seed).

    Args:
        loader: a map-style ``DataLoader`` with a ``batch_size`` and at least 2 samples.

    Returns:
        ``(weights_loader, arch_loader)``: the even indices train the weights, the odd ones α.

    Raises:
        TypeError: not a ``DataLoader``, an ``IterableDataset``, or a custom batch sampler.
        ValueError: fewer than 2 samples.
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"data_split='half' needs a torch DataLoader as the training loader, got {type(loader).__name__}; "
            "pass data_split='train_val' to use the validation loader for the architecture"
        )
    ds = loader.dataset
    if isinstance(ds, IterableDataset):
        raise TypeError("data_split='half' cannot split an IterableDataset; use data_split='train_val'")
    if loader.batch_size is None:
        raise TypeError("data_split='half' needs a loader with batch_size (no custom batch_sampler)")
    n = len(ds)  # type: ignore[arg-type]
    if n < 2:
        raise ValueError(f"data_split='half' needs at least 2 training samples, got {n}")
    shuffle = isinstance(loader.sampler, RandomSampler)
    kw = dict(
        batch_size=loader.batch_size,
        shuffle=shuffle,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )
    halves = (Subset(ds, range(0, n, 2)), Subset(ds, range(1, n, 2)))
    return DataLoader(halves[0], **kw), DataLoader(halves[1], **kw)  # type: ignore[arg-type]


def _normalise_subspaces(
    sub: Mapping[str, Sequence[str]] | SubSpaces | str | os.PathLike[str] | None,
) -> dict[str, list[str]] | None:
    if sub is None:
        return None
    if isinstance(sub, (str, os.PathLike)):
        sub = load_subspaces(sub)
    if isinstance(sub, SubSpaces):
        return {c: list(ops) for c, ops in sub.kept.items()}
    out = {str(c): [str(o) for o in ops] for c, ops in sub.items()}
    for c, ops in out.items():
        if not ops:
            raise ValueError(f"sub space of {c!r} is empty")
        if len(ops) < 2:
            warnings.warn(f"sub space of {c!r} has one op: nothing to search there", stacklevel=3)
    return out
