"""``hitdet eval ARCH --weights W --data DIR``: COCO box metrics of a trained detector, overall and per category."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="COCO box mAP of trained weights on a dataset split")
    p.add_argument("arch", help="architecture JSON the weights were trained with (RUN/architecture.json)")
    p.add_argument("--weights", help="weights: RUN/best.pt, RUN/last.pt or a Lightning .ckpt (required)")
    p.add_argument("--data", help="dataset folder in COCO layout (default: the run's own, else the built-in one)")
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--out", help="folder for metrics.json and detections.json (default: WEIGHTS_FOLDER/eval-WEIGHTS, "
                   "one folder per weights file, e.g. RUN/eval-best)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--backend", default="pycocotools", choices=["pycocotools", "faster-coco-eval"],
                   help="COCOeval implementation (default pycocotools)")
    p.add_argument("--batch-size", type=int,
                   help="images per forward pass (default: the run's eval_batch_size, as in its validation; else 4)")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"],
                   help="where the model runs: auto (default: a GPU if there is one), cpu, gpu")
    p.add_argument("--detections", help="score this COCO results file instead of running a model (no weights read)")
    p.add_argument("--force", action="store_true", help="replace the results in a non-empty --out folder")
    p.set_defaults(func=run)


def _run_eval_batch_size(run_dir: Path, default: int = 4) -> int:
    """The validation batch size of the run an architecture JSON belongs to (padding depends on it)."""
    from hitdet.runs import read_config

    value = (read_config(run_dir) or {}).get("eval_batch_size")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def run(args: argparse.Namespace) -> int:
    import torch

    from hitdet.architecture import architecture_categories, load_architecture
    from hitdet.builder import build_detector
    from hitdet.data import dataset_folder, load_split
    from hitdet.errors import UserError
    from hitdet.evaluation import coco_evaluate, format_per_class, format_table, load_detections, predict
    from hitdet.io import write_json_atomic
    from hitdet.runs import Run, recorded_data
    from hitdet.weights.detector import load_weights

    if not args.weights and not args.detections:
        raise UserError("--weights: required (the trained weights, e.g. RUN/best.pt)")
    if args.batch_size is None:
        args.batch_size = _run_eval_batch_size(Path(args.arch).parent)
    if args.batch_size < 1:
        raise UserError(f"--batch-size: must be positive, got {args.batch_size}")
    arch = load_architecture(args.arch)
    data_dir = dataset_folder(args.data, recorded_data(Path(args.arch).parent))
    cats = architecture_categories(arch)
    ds = load_split(data_dir, args.split, categories=cats)
    if arch.settings.num_classes != ds.num_classes + 1:
        raise UserError(f"{args.arch}: detector.num_classes is {arch.settings.num_classes}, but {ds.ann_file} has "
                        f"{ds.num_classes} categories (+ background = {ds.num_classes + 1})")
    source = Path(args.weights or args.detections).resolve()
    default_out = source.parent / f"eval-{source.stem}"  # best.pt and last.pt each get their own results
    out = Path(args.out) if args.out else default_out
    # checked now; locked (and replaced) once the metrics are in. An eval's own results are replaced without
    # --force (a re-run recomputes them); a run of another command (a train run) gets them in its sub-folder.
    results = Run(out, force=args.force, command="eval", subfolder=default_out.name, replace_own=True,
                  inputs={"ARCH": args.arch, "--weights": args.weights, "--data": data_dir,
                          "--detections": args.detections})
    out = results.out
    if args.detections:
        detections = load_detections(args.detections)
    else:
        model = load_weights(build_detector(arch), args.weights)
        ds.verify_images()
        if args.accelerator == "gpu" and not torch.cuda.is_available():
            raise UserError("--accelerator gpu: no GPU is available")
        device = torch.device("cuda" if args.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
        detections = predict(model, ds, batch_size=args.batch_size, device=device, progress=not args.no_progress)
    per_class: list[dict] = []
    metrics = coco_evaluate(ds.coco, detections, backend=args.backend, source=args.detections, per_class=per_class)
    with results:  # another eval into the same folder is refused (exit 2 naming it)
        write_json_atomic(out / "detections.json", detections)
        write_json_atomic(out / "metrics.json", {
            "metrics": metrics, "weights": str(args.weights), "architecture": str(args.arch),
            "annotations": str(ds.ann_file), "images": len(ds), "detections": len(detections),
            "backend": args.backend, "per_class": per_class,
        })
    print(format_table(metrics, f"COCO box metrics: {ds.ann_file} ({len(ds)} images, {len(detections)} detections)"))
    print()
    print(format_per_class(per_class))
    print(f"wrote {out / 'metrics.json'} and {out / 'detections.json'}")
    return 0
