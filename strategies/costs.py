"""Per-candidate MACs and parameters of every searched position: the FLOPs penalty's table.

Three sources, in order:

1. the space's own analytic table, ``space.candidate_macs() -> {label: {op: MACs}}`` (our
   Hit-Detector spaces compute it from :func:`search_spaces.ops.op_cost` at the configured
   input size and RoI count, so head costs scale with the RoIs);
2. otherwise a measurement: the input of every mixed layer is captured by a forward pre-hook
   on the first batch, and each candidate is run once on a zero tensor of that shape under
   :class:`torch.utils.flop_counter.FlopCounterMode` (which counts 2 FLOPs per MAC);
3. where neither works, no table: the penalty is switched off with a warning.

Parameters always come from the candidate modules themselves.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from strategies.mixed import HitDetMixedLayer
from strategies.penalty import uniform_macs

_logger = logging.getLogger(__name__)


@dataclass
class CostTable:
    """MACs per candidate, as one float tensor per label (index = position in ``layer.names``).

    ``source`` is ``"space"``, ``"measured"`` or ``"unavailable"``.
    """

    macs: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = "unavailable"

    @property
    def available(self) -> bool:
        return self.source != "unavailable"


def retrained_params(module: nn.Module) -> int:
    """Parameters of a candidate as the retrained op has them (BatchNorms the search made non-affine count)."""
    n = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if getattr(m, "_hitdet_non_affine", False):
            n += 2 * m.num_features
    return n


def candidate_params(layers: dict[str, list[HitDetMixedLayer]]) -> dict[str, torch.Tensor]:
    """Parameter count of every candidate (removed ones count 0), per label."""
    out: dict[str, torch.Tensor] = {}
    for label, group in layers.items():
        counts = torch.zeros(len(group[0].names), dtype=torch.float64)
        for layer in group:
            for i, name in enumerate(layer.names):
                if str(name) in layer._modules:
                    counts[i] += retrained_params(layer._modules[str(name)])
        out[label] = counts
    return out


def table_from_space(space: nn.Module, layers: dict[str, list[HitDetMixedLayer]]) -> CostTable | None:
    """The space's analytic table, if it has one covering every label and candidate."""
    fn = getattr(space, "candidate_macs", None)
    if not callable(fn):
        return None
    try:
        table = fn()
    except Exception as exc:  # a broken table must not stop the search: fall back to measuring
        warnings.warn(f"space.candidate_macs() failed ({exc!r}); measuring the candidates instead", stacklevel=2)
        return None
    out: dict[str, torch.Tensor] = {}
    for label, group in layers.items():
        row = table.get(label)
        if row is None:
            warnings.warn(f"space.candidate_macs() has no entry for {label!r}; measuring instead", stacklevel=2)
            return None
        by_str = {str(k): float(v) for k, v in row.items()}
        names = group[0].names
        missing = [n for n in names if str(n) not in by_str]
        if missing:
            warnings.warn(f"space.candidate_macs()[{label!r}] lacks {missing}; measuring instead", stacklevel=2)
            return None
        # The table gives the label's total (a label shared by several positions included).
        out[label] = torch.tensor([by_str[str(n)] for n in names], dtype=torch.float64)
    return CostTable(out, "space")


class InputRecorder:
    """Records the input of every mixed layer on its first call (a forward pre-hook each)."""

    def __init__(self, layers: Iterable[HitDetMixedLayer]) -> None:
        self.inputs: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._handles = [layer.register_forward_pre_hook(self._hook, with_kwargs=True) for layer in layers]

    def _hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if id(module) not in self.inputs:
            self.inputs[id(module)] = (
                tuple(_describe(a) for a in args),
                {k: _describe(v) for k, v in kwargs.items()},
            )

    def complete(self, layers: Iterable[HitDetMixedLayer]) -> bool:
        return all(id(layer) in self.inputs for layer in layers)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@dataclass(frozen=True)
class _TensorSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return _TensorSpec(tuple(value.shape), value.dtype, value.device)
    if isinstance(value, (list, tuple)):
        return type(value)(_describe(v) for v in value)
    return value


def _materialise(value: Any) -> Any:
    if isinstance(value, _TensorSpec):
        return torch.zeros(value.shape, dtype=value.dtype, device=value.device)
    if isinstance(value, (list, tuple)):
        return type(value)(_materialise(v) for v in value)
    return value


def measure_macs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """MACs of one forward of ``module`` on zero inputs of the recorded shapes.

    Runs in eval mode under ``no_grad`` so that batch-norm statistics are left untouched.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*_materialise(args), **_materialise(kwargs))
    finally:
        module.train(was_training)
    return int(counter.get_total_flops()) // 2


def table_from_measurement(layers: dict[str, list[HitDetMixedLayer]], recorder: InputRecorder) -> CostTable:
    """Measure every active candidate at its position's recorded input (removed ones cost 0)."""
    out: dict[str, torch.Tensor] = {}
    try:
        for label, group in layers.items():
            total = torch.zeros(len(group[0].names), dtype=torch.float64)
            for layer in group:
                if id(layer) not in recorder.inputs:
                    raise RuntimeError(f"no input was recorded for {label!r}")
                args, kwargs = recorder.inputs[id(layer)]
                for name, module in layer.candidate_modules():
                    total[layer.names.index(name)] += measure_macs(module, args, kwargs)
            out[label] = total
    except Exception as exc:  # never crash for want of a cost table
        warnings.warn(f"could not measure candidate MACs ({exc!r}): the FLOPs penalty is off", stacklevel=2)
        return CostTable({}, "unavailable")
    _logger.info("measured the MACs of %d searched positions", len(out))
    return CostTable(out, "measured")


class CostModel:
    """The cost table of a search, its uniform-α reference and (until it is measured) the recorder.

    ``reference`` is the expected MACs at uniform probabilities over the active candidates, the
    FLOPs penalty's 100 %. Owns the checkpoint's ``costs`` entry (:meth:`state`, :meth:`load_state`).
    """

    def __init__(self) -> None:
        self.table = CostTable()
        self.reference = 0.0
        self.recorder: InputRecorder | None = None
        self._on: dict[tuple[Any, Any], dict[str, torch.Tensor]] = {}

    @property
    def macs(self) -> dict[str, torch.Tensor]:
        return self.table.macs

    @property
    def source(self) -> str:
        return self.table.source

    @property
    def available(self) -> bool:
        return self.table.available

    def setup(self, space: nn.Module, layers: dict[str, list[HitDetMixedLayer]], active: dict[str, Any]) -> None:
        """The space's analytic table, or a recorder that measures the candidates on the first batch."""
        table = table_from_space(space, layers)
        if table is not None:
            self.set_table(table, active)
        else:
            self.recorder = InputRecorder(m for g in layers.values() for m in g)

    def set_table(self, table: CostTable, active: dict[str, Any]) -> None:
        self.table, self._on = table, {}
        if table.available:
            self.reference = uniform_macs(table.macs, active)
            if self.reference <= 0:
                warnings.warn("every candidate costs 0 MACs: the FLOPs penalty is off", stacklevel=3)
                self.table = CostTable({}, "unavailable")

    def maybe_measure(self, layers: dict[str, list[HitDetMixedLayer]], active: dict[str, Any]) -> None:
        """Measure the table once every layer's input has been recorded (after a forward pass)."""
        if self.recorder is None:
            return
        if not self.recorder.complete([m for g in layers.values() for m in g]):
            return
        self.recorder.remove()
        self.set_table(table_from_measurement(layers, self.recorder), active)
        self.recorder = None

    def on(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The MACs table on the alphas' device and dtype (copied once, not every step)."""
        key = (device, dtype)
        if key not in self._on:
            self._on[key] = {k: v.to(device=device, dtype=dtype) for k, v in self.table.macs.items()}
        return self._on[key]

    def state(self) -> dict[str, Any]:
        return {"source": self.source, "macs": {k: v.tolist() for k, v in self.macs.items()},
                "reference": self.reference}

    def load_state(self, state: dict[str, Any]) -> None:
        """A checkpoint's table replaces ours, unless it had none and ours is still to be measured."""
        if state["source"] == "unavailable" and self.recorder is not None:
            return
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder = None
        macs = {k: torch.tensor(v, dtype=torch.float64) for k, v in state["macs"].items()}
        self.table, self._on = CostTable(macs, state["source"]), {}
        self.reference = float(state["reference"])

