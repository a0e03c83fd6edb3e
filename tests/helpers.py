"""Small architectures shared by tests: the preset scaled down to tiny widths and images."""

from __future__ import annotations

from dataclasses import replace

from hitdet.architecture import Architecture, load_architecture


def tiny_arch(width: float = 0.125, num_classes: int = 4, size: int = 64) -> Architecture:
    """The released Hit-Detector at ``width`` x its channels, for ``size``-pixel images."""
    arch = load_architecture("hit-detector")
    settings = replace(
        arch.settings,
        num_classes=num_classes,
        min_size=size,
        max_size=size * 2,
        rpn_pre_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=50,
        rpn_post_nms_top_n_train=50,
        rpn_post_nms_top_n_test=20,
        box_batch_size_per_image=32,
    )
    return replace(arch, structure=arch.structure.scaled(width), settings=settings, name="tiny")
