"""``hitdet convert-weights FILE --out backbone.pt``: the authors' ImageNet-pretrained backbone as a HitDet file."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-weights",
        help="convert the authors' ImageNet-pretrained backbone (fbhit_7747.pth) for --backbone-weights",
        description=(
            "Read a backbone checkpoint in the layout of the authors' HitDet.pytorch code (FBNet 'fbnet_hit': "
            "layers.N.conv1.conv.weight ..., optionally prefixed module.; their released fbhit_7747.pth) and "
            "write it under HitDet's names as a backbone weights file for `hitdet train ARCH --backbone-weights "
            "OUT`. Every tensor must fit the architecture's backbone; tensors outside the backbone (an "
            "ImageNet classifier) are left out."
        ),
    )
    p.add_argument("checkpoint", help="the authors' checkpoint (e.g. fbhit_7747.pth)")
    p.add_argument("--arch", default="hit-detector",
                   help="architecture JSON or preset whose backbone receives the weights (default hit-detector)")
    p.add_argument("--out", help="backbone weights file to write, e.g. fbhit.pt (required)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hitdet.architecture import load_architecture
    from hitdet.errors import UserError
    from hitdet.io import check_creatable
    from hitdet.pretrain.model import architecture_target
    from hitdet.runs import check_inputs
    from hitdet.weights.authors import LAYOUT, architecture_ops, convert_authors_backbone, read_authors_state_dict
    from hitdet.weights.backbone import save_backbone_weights

    if not args.out:
        raise UserError("--out: required (the backbone weights file to write)")
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"{out}: is a folder (--out names the file to write)")
    check_inputs(out, {"CHECKPOINT": args.checkpoint, "--arch": args.arch})  # --force never replaces an input
    if out.exists() and not args.force:
        raise UserError(f"{out}: file exists (use --force to replace it)")
    check_creatable(out)
    arch = load_architecture(args.arch)
    target = architecture_target(arch)
    backbone = target.build_backbone()
    state = read_authors_state_dict(args.checkpoint)
    conversion = convert_authors_backbone(state, backbone, architecture_ops(arch), path=str(args.checkpoint))
    backbone.load_state_dict(conversion.state_dict, strict=True)  # every tensor of the backbone, checked
    meta = {**target.describe(), "source": {"arch": str(args.arch), "converted_from": str(args.checkpoint),
                                            "layout": LAYOUT, "left_out": conversion.left_out}}
    save_backbone_weights(out, backbone, meta)
    print(f"{args.checkpoint}: {conversion.summary()}")
    if conversion.other_ops:
        print(f"note: the shapes fit, but the architecture's ops differ from the authors' fbnet_hit at "
              f"{len(conversion.other_ops)} position(s) (first: {conversion.other_ops[0]}); a dilation does not "
              "show in the shapes")
    print(f"wrote {out}: use it with `hitdet train {args.arch} --backbone-weights {out}`")
    return 0
