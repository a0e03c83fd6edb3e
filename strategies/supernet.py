"""The searched part of a supernet: its mixed layers grouped into components, and the ops removed.

Every collaborator of the search (the loss terms, the screener, the decision rules, the DDP
check, the export) reads the supernet through this view: the layers per label (layers sharing
a label are one decision), the components (labels grouped by prefix, ops as columns), the op
probabilities and the active masks. Removing an op goes through :meth:`Supernet.drop`, so
that all layers of a component lose it together.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from strategies.costs import candidate_params
from strategies.mixed import HitDetMixedLayer
from strategies.penalty import Component, group_components
from strategies.settings import SearchSettings


@contextmanager
def frozen(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """``requires_grad`` off for ``params`` within the block, on again after (the other half's step)."""
    params = list(params)
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def arch_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """The architecture parameters of ``modules``, each once, in module order.

    NNI's ``arch_parameters`` returns ``list(set(...))``, an order that follows memory
    addresses: the Adam state one process saves then lands on the wrong alphas in another (a
    resumed run, the other DDP ranks). Module order is the same in every process.
    """
    found: dict[int, nn.Parameter] = {}
    for m in modules:
        if hasattr(m, "arch_parameters"):
            for p in m.arch_parameters():
                found.setdefault(id(p), p)
    return list(found.values())


class Supernet:
    """The mixed layers of ``modules`` (module order), their components and parameter table.

    Args:
        modules: the supernet's modules (``module.supernet_modules()``); the
            :class:`~strategies.mixed.HitDetMixedLayer` among them are the searched layers.
        settings: the run's settings (which components are screened, their fixed ops).
        total_params: parameters of the whole supernet, to count the fixed (unsearched) ones.
        arch_params: the architecture parameters (counted neither as searched nor as fixed).
    """

    def __init__(self, modules: Iterable[nn.Module], settings: SearchSettings, total_params: int = 0,
                 arch_params: int = 0) -> None:
        self.layers: dict[str, list[HitDetMixedLayer]] = {}
        for m in modules:
            if isinstance(m, HitDetMixedLayer):
                self.layers.setdefault(str(m.label), []).append(m)  # plain str, not NNI's label
        if not self.layers:
            raise ValueError("the space has no LayerChoice: nothing for the HitDet strategy to search")
        self.components: dict[str, Component] = group_components({k: g[0].names for k, g in self.layers.items()})
        # the columns each component started with (screening's schedule counts from these)
        self.initial_columns = self.searched_columns()
        if settings.screening and settings.screen_components is not None:
            # components fixed to one op while others are screened still offer every op they had
            subs = settings.sub_spaces or {}
            for c, comp in self.components.items():
                if c not in settings.screen_components:
                    self.initial_columns[c] = [col for col in comp.columns if col in subs.get(c, comp.columns)]
        self.params_table = candidate_params(self.layers)
        searched = sum(float(t.sum()) for t in self.params_table.values())
        self.fixed_params = int(total_params - searched - arch_params)
        if settings.screen_components is not None:
            unknown = set(settings.screen_components) - set(self.components)
            if unknown:
                raise ValueError(
                    f"screen_components {sorted(unknown)} not in the space's components {sorted(self.components)}"
                )

    # -- views --------------------------------------------------------------------------------

    def modules(self) -> list[HitDetMixedLayer]:
        return [m for g in self.layers.values() for m in g]

    def names(self) -> dict[str, list[Any]]:
        """The candidate names of every label (indices of α, the masks and the cost table)."""
        return {label: g[0].names for label, g in self.layers.items()}

    def active(self) -> dict[str, torch.Tensor]:
        return {label: g[0].active_mask for label, g in self.layers.items()}

    def probs(self) -> dict[str, torch.Tensor]:
        """Op probabilities per label (differentiable; removed ops are 0)."""
        return {label: g[0].probs() for label, g in self.layers.items()}

    def searched_columns(self) -> dict[str, list[str]]:
        """Per component, the ops still searched in at least one of its layers (column order)."""
        return {c: [col for col in comp.columns if self.column_present(comp, col)]
                for c, comp in self.components.items()}

    def column_present(self, comp: Component, col: str) -> bool:
        return any(str(n) == col for label in comp.labels for n in self.layers[label][0].active_names())

    def num_ops(self) -> dict[str, float]:
        """``num_ops/<component>``: the ops still searched per component (for the logger)."""
        active = self.active()
        return {f"num_ops/{c}": float(comp.presence(active).any(0).sum()) for c, comp in self.components.items()}

    def frozen_alphas(self, settings: SearchSettings) -> list[nn.Parameter]:
        """Alphas that screening one component at a time leaves alone."""
        if not settings.screening or settings.screen_components is None:
            return []
        keep = set(settings.screen_components)
        return [self.layers[label][0]._arch_alpha
                for c, comp in self.components.items() if c not in keep for label in comp.labels]

    # -- removing ops ---------------------------------------------------------------------------

    def drop(self, component: str, op: str) -> list[nn.Parameter]:
        """Remove ``op`` from every layer of ``component`` (never a layer's last op); returns the freed parameters."""
        freed: list[nn.Parameter] = []
        for label in self.components[component].labels:
            group = self.layers[label]
            name = next((n for n in group[0].active_names() if str(n) == op), None)
            if name is None:
                continue
            if len(group[0].active_names()) <= 1:
                warnings.warn(f"{label!r}: {op!r} is its last op; kept there", stacklevel=3)
                continue
            for layer in group:
                freed += layer.drop(name)
        return freed

    @contextmanager
    def without(self, component: str, op: str) -> Iterator[None]:
        """Mask ``op`` out of ``component`` for the block (probability 0, not run), then put it back.

        Nothing is deleted: for rules that measure what an op is worth by the supernet's loss
        without it. A layer whose only op is ``op`` keeps it.
        """
        masked = [(layer, layer.names.index(n)) for label in self.components[component].labels
                  for layer in self.layers[label] for n in layer.active_names()
                  if str(n) == op and len(layer.active_names()) > 1]
        for layer, i in masked:
            layer.set_masked(i, True)
        try:
            yield
        finally:
            for layer, i in masked:
                layer.set_masked(i, False)

    # -- checkpoints ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The checkpoint's ``active`` (removed ops) and ``initial_columns`` entries."""
        return {"active": {label: g[0].active_mask.tolist() for label, g in self.layers.items()},
                "initial_columns": self.initial_columns}

    def load_state(self, state: dict[str, Any]) -> None:
        """Remove the ops a checkpoint had removed (before its weights load) and take its initial columns."""
        for label, mask in state["active"].items():
            for layer in self.layers.get(label, []):
                for name, keep in zip(layer.names, mask, strict=True):
                    if not keep and name in layer.active_names():
                        layer.drop(name)
        self.initial_columns = {c: list(v) for c, v in state["initial_columns"].items()}
