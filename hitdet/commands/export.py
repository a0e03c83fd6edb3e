"""``hitdet export ARCH --weights W --format torchscript|exported-program|onnx --out FILE``: a deployable file."""

from __future__ import annotations

import argparse
from pathlib import Path

from hitdet.commands.info import parse_size


def register(sub: argparse._SubParsersAction) -> None:
    from hitdet.exporting import FORMATS, ONNX_OPSET

    p = sub.add_parser("export", help="write a trained detector as TorchScript, a torch.export program or ONNX")
    p.add_argument("arch", help="architecture JSON the weights were trained with (RUN/architecture.json)")
    p.add_argument("--weights", help="weights: RUN/best.pt, RUN/last.pt or a Lightning .ckpt (required)")
    p.add_argument("--format", default="torchscript", choices=FORMATS, help="torchscript (default), exported-program "
                   "(torch.export, a .pt2 file) or onnx")
    p.add_argument("--out", help="file to write, e.g. detector.pt, detector.pt2 or detector.onnx (required)")
    p.add_argument("--input-size", type=parse_size, metavar="HxW",
                   help="exported-program and onnx: the fixed image size the file takes (default MIN_SIZExMIN_SIZE "
                   "of the architecture)")
    p.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"onnx: opset version (default {ONNX_OPSET})")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hitdet.architecture import load_architecture
    from hitdet.builder import build_detector
    from hitdet.errors import UserError
    from hitdet.exporting import MIN_ONNX_OPSET, export_exported_program, export_onnx, export_torchscript
    from hitdet.io import check_creatable
    from hitdet.runs import check_inputs
    from hitdet.weights.detector import load_weights

    if not args.weights:
        raise UserError("--weights: required (the trained weights, e.g. RUN/best.pt)")
    if not args.out:
        raise UserError("--out: required (the file to write)")
    if args.format == "onnx" and args.opset < MIN_ONNX_OPSET:
        raise UserError(f"--opset: torchvision detectors need ONNX opset {MIN_ONNX_OPSET} or later, got {args.opset}")
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"{out}: is a folder (--out names the file to write)")
    check_inputs(out, {"ARCH": args.arch, "--weights": args.weights})  # --force never replaces an input
    if out.exists() and not args.force:
        raise UserError(f"{out}: file exists (use --force to replace it)")
    check_creatable(out)  # before the conversion, not after it
    arch = load_architecture(args.arch)
    model = load_weights(build_detector(arch), args.weights).eval()
    if args.format == "torchscript":
        export_torchscript(model, out, arch)
        print(f"wrote {out}: TorchScript; takes a list of float 3xHxW images in [0, 1], "
              "returns (losses, detections)")
    elif args.format == "exported-program":
        size = args.input_size or (arch.settings.min_size, arch.settings.min_size)
        export_exported_program(model, out, size, arch)
        print(f"wrote {out}: torch.export ExportedProgram; takes a list of one float 3x{size[0]}x{size[1]} image "
              "in [0, 1] (fixed size), returns a list of one {boxes, labels, scores}")
    else:
        size = args.input_size or (arch.settings.min_size, arch.settings.min_size)
        export_onnx(model, out, size, arch, opset=args.opset)
        print(f"wrote {out}: ONNX opset {args.opset}; input 'image' float 3x{size[0]}x{size[1]} in [0, 1] (fixed), "
              "outputs boxes, labels, scores")
    return 0
