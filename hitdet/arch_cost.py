"""An architecture's parameters and MACs at its own input size: what ``hitdet info`` and ``hitdet compare`` print.

Unless told otherwise, an architecture is priced at the largest input its detector settings let
through (``min_size`` x ``max_size``, each padded to ``size_divisible``) and with the RoI count
its test-time RPN keeps (``rpn_post_nms_top_n_test``), so that a small synthetic-data run is not
priced at COCO's 800x1216.
"""

from __future__ import annotations

from hitdet.architecture import Architecture
from search_spaces.costs import detector_cost
from search_spaces.ops import Cost


def architecture_cost(
    arch: Architecture, input_size: tuple[int, int] | None = None, num_rois: int | None = None
) -> tuple[dict[str, Cost], tuple[int, int], int]:
    """(cost per component and ``total``, the input size used, the RoI count used)."""
    size = input_size or arch.settings.padded_size()
    rois = arch.settings.priced_rois() if num_rois is None else num_rois
    cost = detector_cost(arch.structure, arch.sample(), arch.settings.num_classes, size, rois, arch.detector_type)
    return cost, size, rois
