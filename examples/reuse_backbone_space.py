"""Search the Hit-Detector backbone inside your own detector: torchvision FCOS + FPN + HitDetStrategy.

Why: the component spaces are plain NNI model spaces, so the backbone (or neck) search of the
paper works for any torchvision-style detector, not only our Faster R-CNN. This example is the
pattern to copy:

1. ``MyFCOSSpace``, a ``ModelSpace`` of your own: our :class:`search_spaces.BackboneSpace`
   (one ``LayerChoice`` per block, labels ``backbone/s1_b0`` ...) feeding *your* neck, here
   torchvision's ``FeaturePyramidNetwork``, feeding torchvision's ``FCOS``. ``--search-neck``
   swaps in our :class:`search_spaces.NeckSpace` (labels ``neck/lateral1`` ...) as well.
2. ``SumOfLosses``, an NNI ``LightningModule`` whose loss is the sum of the detector's loss dict.
3. ``NasExperiment(space, Lightning(...), HitDetStrategy(...)).run()``, ``experiment.stop()``,
   then ``strategy.export_result()``: the sample ``{label: op}`` (written to ``OUT/sample.json``,
   with the strategy's metadata in ``OUT/metadata.json``) and the fixed detector it selects,
   ``space.freeze(sample)``. The FLOPs penalty uses the backbone's analytic MAC table
   (``candidate_macs`` below); without one the strategy measures the candidates itself.

Run::

    python examples/reuse_backbone_space.py --smoke --out /tmp/reuse      # synthetic, CPU, < 40 s
    python examples/reuse_backbone_space.py --data /data/coco --out runs/fcos-search \\
        --epochs 12 --arch-start-epoch 6 --min-size 800 --max-size 1333 --width 1.0 \\
        --accelerator gpu --devices 1

``--data`` is a COCO-layout folder (``annotations/instances_train2017.json`` + ``train2017/``,
or hitdet's ``instances_train.json`` + ``train/``); without it the built-in synthetic dataset
is written into ``OUT/synth``. Nothing is downloaded. Multi-GPU: ``--devices 8 --strategy ddp``
are passed to Lightning's Trainer as they are.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces.quiet import quiet_nni_import

BACKBONE_OPS = ["ir_k3_e3", "ir_k5_e6", "sep_k3", "skip"]  # any names of search_spaces.ops.OPS
NECK_OPS = ["sep_k3", "conv_k1", "sep_k5_d3"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder (sample.json, metadata.json, ...)")
    p.add_argument("--data", type=Path, help="COCO-layout dataset folder (default: synthetic, in OUT/synth)")
    p.add_argument("--smoke", action="store_true", help="tiny settings: 2 epochs of 2 steps on 8 synthetic images")
    p.add_argument("--search-neck", action="store_true", help="search our NeckSpace too instead of a fixed FPN")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--arch-start-epoch", type=int, default=6, help="first epoch with architecture steps")
    p.add_argument("--steps-per-epoch", type=int, help="cap on batches per epoch")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01, help="SGD lr of the weights (cosine)")
    p.add_argument("--arc-lr", type=float, default=4e-4, help="Adam lr of the alphas (paper 4e-4)")
    p.add_argument("--penalty-lambda", type=float, default=0.01, help="FLOPs penalty weight (paper 0.01)")
    p.add_argument("--width", type=float, default=0.25, help="channel multiplier of the backbone")
    p.add_argument("--fpn-channels", type=int, default=64)
    p.add_argument("--min-size", type=int, default=128)
    p.add_argument("--max-size", type=int, default=160)
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--devices", default="1")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--seed", type=int, default=0)
    return p


class ListToDict(nn.Module):
    """BackboneSpace returns ``[C1..C4]``; torchvision's FPN takes an ordered dict."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(i), f) for i, f in enumerate(self.body(x)))


def make_space_class() -> type:
    """The user's space class (defined here so that NNI is imported only when the example runs)."""
    from nni.nas.nn.pytorch import ModelSpace
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

    from search_spaces import BackboneSpace, DetectorStructure, NeckSpace
    from search_spaces.components import BackboneWithNeck

    class MyFCOSSpace(ModelSpace):
        """FCOS on a searched Hit-Detector backbone, with a fixed FPN or our searched neck."""

        def __init__(self, num_classes: int, width: float, fpn_channels: int, min_size: int, max_size: int,
                     search_neck: bool = False) -> None:
            super().__init__()
            structure = DetectorStructure().half_depth().scaled(width)
            pad = -(-max_size // 32) * 32
            # Each module is registered once (inside the detector): NNI mutates every LayerChoice
            # it meets, and a second path to the same LayerChoice would be met after mutation.
            body = BackboneSpace(structure, {"backbone": BACKBONE_OPS}, input_size=(pad, pad))
            backbone: nn.Module
            searched: list[nn.Module] = [body]
            if search_neck:
                neck = NeckSpace(structure, {"neck": NECK_OPS}, in_channels=body.out_channels,
                                 channels=fpn_channels, input_size=(pad, pad))
                backbone = BackboneWithNeck(body, neck)
                searched.append(neck)
            else:
                fpn = FeaturePyramidNetwork(list(body.out_channels), fpn_channels, LastLevelMaxPool())
                backbone = nn.Sequential(ListToDict(body), fpn)
                backbone.out_channels = fpn_channels  # type: ignore[assignment]
            self.searched = searched  # a plain list: not registered a second time
            levels = len(body.out_channels) + 1  # + the max-pooled level
            anchors = AnchorGenerator(tuple((8 * 2**i,) for i in range(levels)), ((1.0,),) * levels)
            self.detector = FCOS(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size,
                                 anchor_generator=anchors)

        def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]] | None = None) -> Any:
            return self.detector(images, targets)

        def candidate_macs(self) -> dict[str, dict[str, float]]:
            """The FLOPs penalty's table: our components price their candidates analytically."""
            table: dict[str, dict[str, float]] = {}
            for part in self.searched:
                table.update(part.candidate_macs())
            return table

    return MyFCOSSpace


def make_module_class() -> type:
    from nni.nas.evaluator.pytorch import LightningModule

    class SumOfLosses(LightningModule):
        """The evaluator's module: train on the sum of torchvision's loss dict (SGD, cosine)."""

        def __init__(self, lr: float, epochs: int) -> None:
            super().__init__()
            self.lr, self.epochs = lr, epochs

        def training_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int) -> Any:
            images, targets = batch
            losses = self.model(images, targets)
            loss = sum(losses.values())
            self.log("train/loss", loss, batch_size=len(images))
            return loss

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=1e-4)
            return [opt], [torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(self.epochs, 1))]

    return SumOfLosses


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Search, export and check the sample; returns what was written to ``OUT/summary.json``."""
    with quiet_nni_import():
        import pytorch_lightning as pl
        from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
        from nni.nas.experiment import NasExperiment

        from hitdet.data import SynthSpec, collate, load_split, write_synthetic
        from strategies import HitDetStrategy

    if args.smoke:
        args.epochs, args.arch_start_epoch, args.steps_per_epoch, args.width = 2, 1, 2, 0.125
        args.arc_lr, args.fpn_channels = 0.05, 32
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = write_synthetic(out / "synth", SynthSpec(num_train=8 if args.smoke else 320, num_val=4), force=True)
    train_ds = load_split(data, "train", train=True)

    pl.seed_everything(args.seed, verbose=False)
    # labels are 1..K (hitdet maps category ids so), hence K + 1 outputs
    space = make_space_class()(train_ds.num_classes + 1, args.width, args.fpn_channels, args.min_size,
                               args.max_size, args.search_neck)
    labels = list(space.simplify())
    trainer = Trainer(
        max_epochs=args.epochs, accelerator=args.accelerator,
        devices=int(args.devices) if str(args.devices).isdigit() else args.devices, strategy=args.strategy,
        limit_train_batches=args.steps_per_epoch or 1.0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        default_root_dir=str(out),
    )
    loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, collate_fn=collate)
    evaluator = Lightning(make_module_class()(args.lr, args.epochs), trainer, train_dataloaders=loader)
    strategy = HitDetStrategy(arch_start_epoch=args.arch_start_epoch, arc_learning_rate=args.arc_lr,
                              penalty_lambda=args.penalty_lambda, log_heatmaps=False)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str((out / "nni").resolve())
    logging.getLogger("nni").setLevel(logging.ERROR)
    start = time.perf_counter()
    try:
        experiment.run()
    finally:
        experiment.stop()
    result = strategy.export_result()
    sample = {k: str(v) for k, v in result.sample.items()}
    if sorted(sample) != sorted(labels):
        raise SystemExit(f"exported labels {sorted(sample)} differ from the space's {sorted(labels)}")
    fixed = space.freeze(sample)  # the detector the search chose: a plain FCOS
    summary = {
        "sample": sample,
        "labels": labels,
        "candidates": {label: [str(v) for v in choice.values] for label, choice in space.simplify().items()},
        "fixed_params": sum(p.numel() for p in fixed.parameters()),
        "search_seconds": round(time.perf_counter() - start, 2),
        "data": str(data),
    }
    (out / "sample.json").write_text(json.dumps(sample, indent=2))
    (out / "metadata.json").write_text(json.dumps(result.metadata, indent=2, default=str))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for label, op in sample.items():
        print(f"{label:<16} {op}")
    print(f"fixed FCOS: {summary['fixed_params'] / 1e6:.3f} M parameters; sample: {out / 'sample.json'}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
