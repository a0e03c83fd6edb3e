"""Export a search space as an NNI HPO search-space JSON, for ``nnictl`` experiments.

``nnictl`` cannot run NAS-type experiments with NNI 3.0 (they start only from Python),
so architecture search under nnictl is an HPO experiment whose search space has one
``{"_type": "choice", "_value": [ops]}`` per searched label; the trial script reads the sample
with ``nni.get_next_parameter()`` and builds the fixed detector from it. No NNI import here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search_spaces.positions import COMPONENTS, OpsArg, detector_choices
from search_spaces.structure import DetectorStructure

__all__ = ["hpo_search_space", "detector_hpo_search_space", "write_hpo_search_space", "sample_from_hpo"]


def hpo_search_space(choices: Mapping[str, Sequence[str]] | Any) -> dict[str, dict[str, Any]]:
    """``{label: {"_type": "choice", "_value": [ops]}}`` from ``{label: [ops]}`` or a space.

    A space is anything with ``search_space_choices()`` (the Hit-Detector spaces), or an NNI
    model space (its ``simplify()`` gives the labelled choices). Entries that already are HPO
    specs are kept, so exporting an export changes nothing.

    Args:
        choices: ``{label: [ops]}`` (e.g. :func:`search_spaces.detector_choices`), a HitDet space, or an
            NNI model space.

    Returns:
        The NNI HPO search space: one ``choice`` of ops per label.
    """
    if hasattr(choices, "search_space_choices"):
        choices = choices.search_space_choices()
    elif hasattr(choices, "simplify"):
        choices = {label: list(m.values) for label, m in choices.simplify().items()}
    return {
        label: dict(ops) if isinstance(ops, Mapping) and "_type" in ops else {"_type": "choice", "_value": list(ops)}
        for label, ops in choices.items()
    }


def detector_hpo_search_space(structure: DetectorStructure | None = None, ops: OpsArg = None) -> dict[str, Any]:
    """The HPO search space of the two-stage trinity space, without building it.

    Args:
        structure: the detector's structure; default the released one.
        ops: ``None`` (all 32 ops), one list for every component, or one list per component.

    Returns:
        ``{label: {"_type": "choice", "_value": [ops]}}`` for every searched position.
    """
    return hpo_search_space(detector_choices(structure, ops))


def write_hpo_search_space(path: str | os.PathLike[str], space: Mapping[str, Sequence[str]] | Any) -> Path:
    """Write :func:`hpo_search_space` of ``space`` as JSON (the file ``nnictl``'s config points to).

    Args:
        path: the JSON file to write (its folder is created).
        space: what :func:`hpo_search_space` takes.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(hpo_search_space(space), indent=2) + "\n")
    return path


def sample_from_hpo(parameters: Mapping[str, Any]) -> dict[str, str]:
    """The NNI sample ``{label: op}`` from what ``nni.get_next_parameter()`` returns.

    The tuner may return plain values or, for nested spaces, ``{"_name": value}``; extra keys
    that are not labels (``label/...``) are dropped.

    Args:
        parameters: a trial's parameters, ``nni.get_next_parameter()``.

    Returns:
        The sample ``{label: op}``, ready for ``Architecture.from_sample`` or ``model_context``.
    """
    sample = {}
    for label, value in parameters.items():
        if "/" not in label:
            continue
        if isinstance(value, Mapping) and "_name" in value:
            value = value["_name"]
        sample[label] = str(value)
    return sample


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m search_spaces.hpo OUT.json [--half-depth] [--ops a,b] [--neck-ops a,b] ...``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m search_spaces.hpo", description="Write the trinity space as an NNI HPO search space."
    )
    parser.add_argument("out", help="the JSON file to write (searchSpaceFile of the nnictl config)")
    parser.add_argument("--half-depth", action="store_true", help="the 2+2+4+2 screening backbone")
    parser.add_argument("--ops", help="comma-separated ops for every component (default: all 32)")
    for comp in COMPONENTS:
        parser.add_argument(f"--{comp}-ops", help=f"comma-separated ops for the {comp} only")
    args = parser.parse_args(argv)

    def split(text: str | None) -> list[str] | None:
        return [op.strip() for op in text.split(",") if op.strip()] if text else None

    shared = split(args.ops)
    ops = {c: split(getattr(args, f"{c}_ops")) or shared for c in COMPONENTS}
    structure = DetectorStructure()
    structure = structure.half_depth() if args.half_depth else structure
    try:
        space = detector_hpo_search_space(structure, {c: v for c, v in ops.items() if v is not None})
    except ValueError as exc:
        parser.error(str(exc))
    path = write_hpo_search_space(args.out, space)
    print(f"wrote {path}: {len(space)} searched positions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
