"""Hand picks: detectors of a search space that anyone could pick without searching.

Why: they cost nothing to find, so a search that does not beat them at no more MACs has found
nothing (``hitdet pipeline --baseline`` trains one next to the searched detector; the evidence
harness, ``python -m benchmarks.evidence``, trains them all). Each is a sample of the space's own
structure, so it is built, priced and trained exactly as a searched architecture is.
"""

from __future__ import annotations

from collections.abc import Callable

from search_spaces.structure import DetectorStructure

# The released Hit-Detector's op at each position (docs/hit-detector.md), by label.
RELEASED_OPS: dict[str, str] = {
    **{f"backbone/s1_b{i}": op for i, op in enumerate(["ir_k3_e3", "ir_k3_e3", "ir_k3_e3_d2", "ir_k3_e3"])},
    **{f"backbone/s2_b{i}": op for i, op in enumerate(["ir_k5_e6", "ir_k5_e6", "ir_k3_e3", "ir_k3_e3"])},
    **{f"backbone/s3_b{i}": op for i, op in enumerate(["ir_k7_e6", "ir_k5_e6", "ir_k5_e6_d2", "ir_k5_e3",
                                                       "ir_k5_e6", "ir_k5_e6_d2", "ir_k5_e6", "ir_k5_e6_d2"])},
    **{f"backbone/s4_b{i}": op for i, op in enumerate(["ir_k7_e6", "ir_k5_e6", "ir_k5_e6_d2", "ir_k5_e6"])},
    **{f"neck/lateral{i + 1}": op for i, op in enumerate(["sep_k5_d3", "sep_k5_d3", "sep_k5_d2", "sep_k3_d3"])},
    **{f"neck/out{i + 1}": op for i, op in enumerate(["sep_k3_d3", "sep_k5_d3", "sep_k5_d3", "sep_k3_d3"])},
    **{f"head/b{i}": op for i, op in enumerate(["ir_k5_e6", "ir_k3_e6", "ir_k5_e6", "ir_k5_e6"])},
}


def _pick(structure: DetectorStructure, backbone_first: str, backbone_rest: str, neck: str,
          head: str) -> dict[str, str]:
    out = {}
    for label in structure.labels():
        if label.startswith("backbone/"):
            out[label] = backbone_first if label.endswith("_b0") else backbone_rest
        else:
            out[label] = neck if label.startswith("neck/") else head
    return out


def _released(structure: DetectorStructure) -> dict[str, str]:
    """The released ops where the structure has the released position, ``ir_k3_e3`` elsewhere (half depth)."""
    return {label: RELEASED_OPS.get(label, "ir_k3_e3") for label in structure.labels()}


# name -> (what it is, how it is made from a structure)
HAND_PICKS: dict[str, tuple[str, Callable[[DetectorStructure], dict[str, str]]]] = {
    "stage-ir": ("one ir_k3_e3 per backbone stage (its first, strided block), skip at every other position "
                 "(neck and head included: a 1-fc box head)",
                 lambda st: _pick(st, "ir_k3_e3", "skip", "skip", "skip")),
    "stage-ir+conv-neck": ("one ir_k3_e3 per backbone stage, conv_k3 at every neck position (an FPN with 3x3 "
                           "convolutions), skip in the head",
                           lambda st: _pick(st, "ir_k3_e3", "skip", "conv_k3", "skip")),
    "backbone-ir": ("ir_k3_e3 at every backbone position (a MobileNetV2-like backbone), skip in the neck and head",
                    lambda st: _pick(st, "ir_k3_e3", "ir_k3_e3", "skip", "skip")),
    "all-ir": ("ir_k3_e3 at every position, neck and RoI head included",
               lambda st: _pick(st, "ir_k3_e3", "ir_k3_e3", "ir_k3_e3", "ir_k3_e3")),
    "released": ("the released Hit-Detector's ops at this structure's widths", _released),
}


def hand_pick(name: str, structure: DetectorStructure) -> dict[str, str]:
    """A detector anyone could pick without searching, as a sample of ``structure``.

    Args:
        name: a hand pick of :data:`HAND_PICKS`: ``"stage-ir"``, ``"stage-ir+conv-neck"``, ``"backbone-ir"``,
            ``"all-ir"`` or ``"released"``.
        structure: the search space's structure (``space.structure``).

    Returns:
        The sample ``{label: op}`` for every searched position of ``structure``
        (``Architecture.from_sample`` turns it into an architecture).

    Raises:
        KeyError: an unknown hand pick.
    """
    return HAND_PICKS[name][1](structure)
