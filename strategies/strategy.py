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
from strategies.mixed import HitDetMixedLayer, component_of
from strategies.module import HitDetLightningModule
from strategies.screening import SubSpaces, load_subspaces
from strategies.settings import SearchSettings


class HitDetStrategy(DARTS):
    """Hit-Detector search (paper Sec. 3.2-3.4) as an NNI one-shot strategy.

    Parameters (paper values as defaults)
    ----------
    mode
        ``"search"``: end-to-end search with the FLOPs penalty (Eq. 6-7).
        ``"screen"``: column-sparse screening (Eq. 4) down to ``num_ops`` ops per component.
    arc_learning_rate, arc_betas, arc_weight_decay
        Adam for the alphas (lr 4e-4; betas and weight decay as in DARTS).
    arch_start_epoch
        First epoch (0-based) with architecture steps; before it only weights train (6 of 12).
    penalty_lambda
        Weight of the normalised FLOPs penalty; None = 0.01 in search mode, 0 when screening.
    mu, regulariser
        Weight and reading (``"min"``, the printed Eq. 4, or ``"group"``) of the regulariser.
    num_ops
        Ops kept per component by screening (8).
    screen_components
        Components screened (None = all at once; e.g. ``["backbone"]`` for one at a time;
        the other components' alphas then stay fixed).
    sub_spaces
        Restrict the space before searching: ``{component: [ops]}``, a :class:`SubSpaces`
        or the path of a screening JSON. Ops outside are removed from the supernet.
    data_split
        ``"half"``: weights and alphas train on two fixed halves of the training loader's
        dataset (even / odd indices); ``"train_val"``: NNI's way, alphas on the val loader.
    freeze_weights_in_arch_step
        Skip the weight gradients during the architecture step (they are discarded anyway).
    mixed_op, sample_k
        How each searched layer combines its candidates: ``"full"`` (DARTS's weighted sum),
        ``"recompute"`` (the same sum and gradients, one candidate's activations alive at a
        time, each candidate run twice) or ``"sample"`` (``sample_k`` candidates drawn per step;
        :mod:`strategies.sampling` documents the estimator and its bias).
    """

    def __init__(
        self,
        mode: str = "search",
        *,
        arc_learning_rate: float = 4e-4,
        arc_betas: tuple[float, float] = (0.5, 0.999),
        arc_weight_decay: float = 1e-3,
        arch_start_epoch: int = 6,
        penalty_lambda: float | None = None,
        mu: float = 0.1,
        regulariser: str = "min",
        num_ops: int = 8,
        screen_components: Sequence[str] | None = None,
        sub_spaces: Mapping[str, Sequence[str]] | SubSpaces | str | os.PathLike[str] | None = None,
        data_split: str = "half",
        gradient_clip_val: float | None = None,
        freeze_weights_in_arch_step: bool = True,
        log_heatmaps: bool = True,
        mixed_op: str = "full",
        sample_k: int = 2,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("penalty") is not None:
            raise ValueError("HitDetStrategy has its own FLOPs penalty: use penalty_lambda, not penalty=")
        kwargs.pop("penalty", None)
        super().__init__(
            arc_learning_rate=arc_learning_rate,
            gradient_clip_val=gradient_clip_val,
            warmup_epochs=arch_start_epoch,
            **kwargs,
        )
        self.settings = SearchSettings(
            mode=mode,
            arc_learning_rate=arc_learning_rate,
            arc_betas=tuple(arc_betas),  # type: ignore[arg-type]
            arc_weight_decay=arc_weight_decay,
            arch_start_epoch=arch_start_epoch,
            penalty_lambda=penalty_lambda,
            mu=mu,
            regulariser=regulariser,
            num_ops=num_ops,
            screen_components=screen_components,
            data_split=data_split,
            gradient_clip_val=gradient_clip_val,
            freeze_weights_in_arch_step=freeze_weights_in_arch_step,
            log_heatmaps=log_heatmaps,
            sub_spaces=_normalise_subspaces(sub_spaces),
            mixed_op=mixed_op,
            sample_k=sample_k,
        )

    @classmethod
    def from_settings(cls, settings: SearchSettings | Mapping[str, Any], **overrides: Any) -> HitDetStrategy:
        """Build from a :class:`SearchSettings` or a plain dict (a config file's ``search:`` section).

        Unknown keys raise ``TypeError`` naming them, so that a typo in a config is not ignored.
        """
        data = settings.to_dict() if isinstance(settings, SearchSettings) else dict(settings)
        data.update(overrides)
        if data.get("penalty_lambda") is None:
            data.pop("penalty_lambda", None)
        known = set(SearchSettings.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise TypeError(f"unknown search setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        mode = data.pop("mode", "search")
        return cls(mode, **data)

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
        return model

    def configure_oneshot_module(self, training_module: Any) -> HitDetLightningModule:
        return HitDetLightningModule(training_module, self.settings)

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
        """The exported sample, its metadata and (screen mode) the sub spaces, after ``run()``."""
        return export_result(self.oneshot_module)  # type: ignore[arg-type]

    def export_sample(self) -> dict[str, Any]:
        return self.export_result().sample


def split_loader(loader: Any) -> tuple[DataLoader, DataLoader]:
    """Two loaders over the even and the odd indices of ``loader``'s dataset (the 50/50 split).

    Deterministic and independent of the seed; both keep the loader's batch size, collate
    function, workers and shuffling (shuffled loaders draw their order from torch's seed).
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
