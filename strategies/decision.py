"""The final decision: one op per searched position, at export.

A decision rule is an object with ``decide(module) -> Decision`` that reads the finished (or
running) one-shot module: ``module.supernet`` (layers, probabilities, active masks),
``module.costs``, ``module.settings``, ``module.export()`` (NNI's argmax over every mixed module)
and, for rules that measure, ``module.training_module`` and ``module.trainer``.
``SearchSettings.decision`` names one of :data:`DECISIONS` (None: ``"budget"`` with a
``target_macs``, else ``"argmax"``); a new rule is a class registered there::

    @DECISIONS.register("least_macs")
    class LeastMacs(DecisionRule):
        def decide(self, module):
            macs, names = module.costs.macs, module.supernet.names()
            return Decision({k: names[k][int(macs[k].argmin())] for k in names})

and then ``HitDetStrategy(decision="least_macs")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from strategies.budget import decode_within_budget
from strategies.registry import Registry
from strategies.settings import SearchSettings


@dataclass
class Decision:
    """The chosen sample (label -> candidate name) and what the rule records in the metadata.

    ``budget_decode`` is the metadata's entry of that name (None unless decoded within a budget);
    ``metadata`` holds any further entries a rule adds to the exported metadata.
    """

    sample: dict[str, Any]
    budget_decode: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class DecisionRule:
    """Decides the exported architecture (module docstring)."""

    def __init__(self, settings: SearchSettings | None = None) -> None:
        self.settings = settings

    def decide(self, module: Any) -> Decision:
        raise NotImplementedError


DECISIONS: Registry[DecisionRule] = Registry("decision")


@DECISIONS.register("argmax")
class Argmax(DecisionRule):
    """The op of highest probability per position (paper: decode by the highest score per layer)."""

    def decide(self, module: Any) -> Decision:
        return Decision({str(k): v for k, v in module.export().items()})  # plain str keys (NNI's are a subclass)


@DECISIONS.register("budget")
class WithinBudget(Argmax):
    """Argmax, then the fewest α-cheap switches into ``target_macs (1 ± target_tolerance)`` (:mod:`strategies.budget`).

    Without a cost table (nothing to count MACs with) it is the argmax.
    """

    def decide(self, module: Any) -> Decision:
        s, net = module.settings, module.supernet
        if s.target_macs is None or not module.costs.available:
            return super().decide(module)
        with torch.no_grad():
            found = decode_within_budget(net.probs(), module.costs.macs, net.active(), s.target_macs,
                                         s.target_tolerance)
        names = net.names()
        budget = {
            "target": s.target_macs,
            "tolerance": s.target_tolerance,
            "argmax_macs": found.argmax_macs,
            "decoded_macs": found.macs,
            "within_tolerance": found.within(s.target_macs, s.target_tolerance),
            "switches": [
                {**sw, "from": str(names[str(sw["label"])][int(sw["from"])]),
                 "to": str(names[str(sw["label"])][int(sw["to"])])}
                for sw in found.switches
            ],
        }
        return Decision({label: names[label][i] for label, i in found.choice.items()}, budget)


@DECISIONS.register("contribution")
class LargestRemovalEffect(DecisionRule):
    """Per position, the op whose removal would raise the detection loss most (:mod:`strategies.contribution`),
    read over the last epoch's architecture steps: perturbation-based selection to first order.

    Where nothing was measured (no architecture step, or the penalty-only control) it is the argmax.
    """

    def decide(self, module: Any) -> Decision:
        means = module.contributions.means()
        if not means:
            return Argmax(self.settings).decide(module)
        net = module.supernet
        active, names = net.active(), net.names()
        sample, margins = {}, {}
        for label in names:
            effect = means.get(label)
            if effect is None:
                sample[label] = names[label][int(torch.argmax(net.probs()[label].detach()))]
                continue
            masked = torch.where(active[label].to(effect.device), effect, torch.full_like(effect, float("-inf")))
            top = torch.topk(masked, min(2, int(active[label].sum()))).values
            sample[label] = names[label][int(torch.argmax(masked))]
            margins[label] = float(top[0] - top[1]) if len(top) > 1 else None
        return Decision(sample, metadata={"contribution": {
            "steps": module.contributions.steps or module.contributions.last_steps,
            "effects": {k: [round(float(v), 6) for v in e.cpu().tolist()] for k, e in means.items()},
            "margins": margins}})
