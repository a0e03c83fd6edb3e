"""The NNI side of the search spaces: a block factory that puts a ``LayerChoice`` at each position.

Importing this module imports NNI, with the harmless RuntimeWarnings that NNI 3.0 prints on
this torch version (``Buffer`` / ``LinearCrossEntropyOptions`` "is found to be not a
nn.Module") filtered out, so that users of the spaces do not see them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from search_spaces.quiet import quiet_nni_import

with quiet_nni_import():
    import nni  # noqa: F401
    from nni.mutable.utils import label as nni_label
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace
    from nni.nas.space import current_model

from search_spaces.components import BlockFactory
from search_spaces.ops import build_op
from search_spaces.positions import SpaceError

__all__ = ["LayerChoice", "ModelSpace", "SpaceError", "layer_choice_factory", "nni_label", "component_of"]


def component_of(label: str) -> str:
    """``"backbone/s2_b3"`` -> ``"backbone"``."""
    return label.split("/", 1)[0]


def layer_choice_factory(ops: Mapping[str, Sequence[str]]) -> BlockFactory:
    """A block factory that builds ``LayerChoice({op: build_op(op, ...)}, label=label)``.

    ``ops`` maps a component ("backbone", "neck", "head") to its candidate list. Labels keep
    their slash (``backbone/s2_b3``) as one NNI label. Inside ``nni.nas.space.model_context``
    (a fixed architecture) only the chosen op is built, as ``LayerChoice`` itself would
    return, without building the other candidates first.
    """

    def make_block(label: str, cin: int, cout: int, stride: int) -> nn.Module:
        candidates = ops[component_of(label)]
        sample = current_model()
        if sample is not None:
            if label not in sample:
                raise SpaceError(f"the sample has no op for searched position {label!r}")
            op = sample[label]
            if op not in candidates:
                raise SpaceError(f"{label}: op {op!r} is not a candidate here; candidates: {', '.join(candidates)}")
            return build_op(op, cin, cout, stride)
        return LayerChoice(
            {op: build_op(op, cin, cout, stride) for op in candidates}, label=nni_label(label.split("/"))
        )

    return make_block
