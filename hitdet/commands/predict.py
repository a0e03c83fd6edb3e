"""``hitdet predict ARCH --weights W IMAGE|FOLDER --out DIR``: detections on image files."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="detect objects in images with trained weights (COCO results JSON, drawings)")
    p.add_argument("arch", help="architecture JSON the weights were trained with (RUN/architecture.json)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE|FOLDER",
                   help="image files and/or folders (a folder's image files, not recursive)")
    p.add_argument("--weights", help="weights: RUN/best.pt, RUN/last.pt or a Lightning .ckpt (required)")
    p.add_argument("--out", help="output folder: detections.json, images.json, drawn/ (required)")
    p.add_argument("--draw", action="store_true", help="also write each image with labelled boxes to OUT/drawn/")
    p.add_argument("--score-thresh", type=float, default=0.3,
                   help="keep (write and draw) detections scoring at least this (default 0.3)")
    p.add_argument("--accelerator", default="auto", help="auto (CUDA if available, default), cpu or gpu")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from hitdet.architecture import load_architecture
    from hitdet.builder import build_detector
    from hitdet.errors import UserError
    from hitdet.predicting import detector_categories, find_images, read_images, resolve_device, write_predictions
    from hitdet.runs import Run
    from hitdet.weights.detector import load_weights

    if not args.weights:
        raise UserError("--weights: required (the trained weights, e.g. RUN/best.pt)")
    if not args.out:
        raise UserError("--out: required (the folder to write detections to)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size: must be positive, got {args.batch_size}")
    if not 0.0 <= args.score_thresh <= 1.0:
        raise UserError(f"--score-thresh: must be in [0, 1], got {args.score_thresh}")
    device = resolve_device(args.accelerator)
    arch = load_architecture(args.arch)
    categories = detector_categories(arch)
    out = Path(args.out)
    # written under a temporary name, renamed at the end; a run of another command gets them in its sub-folder
    results = Run(out, force=args.force, staged=True, command="predict", subfolder="predict",
                  inputs={"ARCH": args.arch, "--weights": args.weights, "IMAGE|FOLDER": list(args.inputs)})
    out = results.out
    records = read_images(find_images(args.inputs))
    model = load_weights(build_detector(arch), args.weights).eval()
    with results, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's meshgrid/indexing notices
        detections = write_predictions(
            model, records, categories, out, device, score_thresh=args.score_thresh, draw=args.draw,
            batch_size=args.batch_size, progress=len(records) > 1 and not args.no_progress,
            info={"architecture": str(args.arch), "weights": str(args.weights), "device": str(device)},
        )
    print(f"{len(detections)} detections (score >= {args.score_thresh}) in {len(records)} images on {device}")
    drawn = f" and {out / 'drawn'}/" if args.draw else ""
    print(f"wrote {out / 'detections.json'} and {out / 'images.json'}{drawn}")
    return 0
