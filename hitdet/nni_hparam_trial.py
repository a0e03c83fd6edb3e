"""The trial of an ``nnictl`` experiment that tunes the search's own hyper-parameters.

Why: the Hit-Detector search has hyper-parameters of its own (μ, the weight of the screening
regulariser; λ, the weight of the FLOPs penalty; the architecture learning rate) whose effect
shows only in the detector the search finds. Each trial::

    python -m hitdet.nni_hparam_trial --config search_config.yml [--set section.key=value ...]

takes ``{"mu": ..., "penalty_lambda": ..., "arc_learning_rate": ...}`` (any field of
:class:`strategies.SearchSettings`) from ``nni.get_next_parameter()`` (or ``--params``), runs a
short screening (where μ acts) and a short search on the screened sub spaces (where λ and the
architecture lr act) with :func:`hitdet.searching.run_search`, retrains the found
architecture briefly, reports its validation mAP per retraining epoch and at the end.
``--no-screen`` skips screening: the search then runs on the config's ``ops`` and μ is unused.

Trial folder (``--out``, default ``$NNI_OUTPUT_DIR/hitdet``)::

    OUT/screen/     the screening run (subspaces.json: the kept ops)
    OUT/search/     the search run (architecture.json: the found detector)
    OUT/retrain/    TensorBoard logs of the retraining
    OUT/metrics.json  retraining metrics per epoch, the search summary and the final metric
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hitdet.architecture import load_architecture
from hitdet.errors import UserError
from hitdet.io import write_json_atomic
from hitdet.nni_trial import (
    add_training_arguments,
    import_nni,
    metric,
    train_and_report,
    trial_inputs,
)
from hitdet.nni_trial import main as _main

PROG = "python -m hitdet.nni_hparam_trial"


def strategy_overrides(parameters: dict[str, Any]) -> list[str]:
    """``--set strategy.<name>=<value>`` overrides from the tuner's parameters (validated by the config).

    A ``{"_name": value}`` (nested choice) gives its value; ``strategy.`` prefixes are allowed.
    """
    overrides = []
    for name, value in parameters.items():
        if isinstance(value, dict) and "_name" in value:
            value = value["_name"]
        key = name.removeprefix("strategy.")
        if not key.isidentifier():
            raise UserError(f"parameters: {name!r} is not a search setting name")
        overrides.append(f"strategy.{key}={json.dumps(value)}")
    return overrides


def _sub_spaces_file(ops: list[str] | dict[str, list[str]], path: Path) -> Path:
    """A sub-spaces JSON (the screening format) holding the config's ``ops``, for ``--no-screen``."""
    from hitdet.io import write_text_atomic
    from search_spaces.positions import COMPONENTS
    from strategies import SubSpaces

    per_component = dict(ops) if isinstance(ops, dict) else {"all": list(ops)}
    default = per_component.pop("all", None)
    kept = {c: list(per_component.get(c) or default or []) for c in COMPONENTS}
    kept = {c: v for c, v in kept.items() if v}  # a component left out keeps all 32 ops
    return SubSpaces(kept=kept).save(path, write_text_atomic)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Screen (μ) -> search (λ, arc lr) -> retrain -> report; returns the final metric."""
    from hitdet.searching import load_search_config, run_search
    from hitdet.training.config import load_config

    limit, out, data, parameters = trial_inputs(args)
    overrides = list(args.overrides) + strategy_overrides(parameters)
    if args.search_epochs is not None:
        overrides.append(f"train.epochs={args.search_epochs}")
    screen_cfg = None if args.no_screen else load_search_config("screen", args.config, overrides)
    search_overrides = [o for o in overrides if not o.startswith("strategy.mu=")] if args.no_screen else overrides
    search_cfg = load_search_config("search", args.config, search_overrides)
    retrain_cfg = load_config(args.retrain_config, args.retrain_overrides, epochs=args.epochs)
    # The found architecture already has the search's depth (and its channels, which a retraining keeps).
    retrain_cfg = dataclasses.replace(retrain_cfg, half_depth=False)
    nni = import_nni()

    out.mkdir(parents=True, exist_ok=True)
    if screen_cfg is not None:
        screened = run_search("screen", out / "screen", screen_cfg, data, force=True, progress=args.progress,
                              accelerator=args.accelerator)
        search_cfg = dataclasses.replace(search_cfg, sub_spaces=screened["sub_spaces"])
    elif search_cfg.sub_spaces == "all" and search_cfg.ops is not None:
        sub_spaces = _sub_spaces_file(search_cfg.ops, out / "subspaces.json")
        search_cfg = dataclasses.replace(search_cfg, sub_spaces=str(sub_spaces))
    searched = run_search("search", out / "search", search_cfg, data, force=True, progress=args.progress,
                          accelerator=args.accelerator)
    arch = load_architecture(searched["architecture"])

    def report(epoch: int, metrics: dict[str, float]) -> None:
        nni.report_intermediate_result(metric(metrics))
        print(f"retrain epoch {epoch}: AP {metrics['AP']:.4f} AP50 {metrics['AP50']:.4f}", flush=True)

    history = train_and_report(arch, retrain_cfg, data, out / "retrain", report, limit, args.progress,
                               args.accelerator)
    final = metric(history[-1])
    macs = searched.get("macs")
    if isinstance(macs, dict):
        final.update({f"macs_{k}": float(v) for k, v in macs.items() if isinstance(v, (int, float))})
    write_json_atomic(out / "metrics.json", {"parameters": parameters, "search": searched, "history": history,
                                             "final": final})
    nni.report_final_result(final)
    print(f"final: AP {final['default']:.4f} ({searched['architecture']})", flush=True)
    return final


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="One trial tuning the search's hyper-parameters.")
    add_training_arguments(parser)
    parser.set_defaults(config="synth-cpu")
    parser.add_argument("--params", help="the hyper-parameters as JSON text or @file.json (instead of NNI's)")
    parser.add_argument("--search-epochs", type=int, help="epochs of the screening and the search (train.epochs)")
    parser.add_argument("--no-screen", action="store_true", help="skip screening: search the config's ops")
    parser.add_argument("--retrain-config", default="synth-cpu", help="training recipe or YAML of the retraining")
    parser.add_argument("--retrain-set", dest="retrain_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a retraining config key")
    for action in parser._actions:  # the shared arguments, worded for this trial
        if action.dest == "config":
            action.help = "search config: recipe or YAML of `hitdet search` (default synth-cpu)"
        elif action.dest == "overrides":
            action.help = "override a search config key, e.g. --set train.batch_size=4 --set strategy.num_ops=3"
        elif action.dest == "epochs":
            action.help = "retraining epochs (overrides the retraining config)"
        elif action.dest == "limit_train_batches":
            action.help = "at most N retraining steps per epoch"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one trial; a UserError prints one line on stderr and exits 2."""
    return _main(argv, build_parser(), run, PROG)


if __name__ == "__main__":
    sys.exit(main())
