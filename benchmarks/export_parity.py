"""Exported vs eager detector: largest output differences and time per image, on CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/export_parity.py RUN/architecture.json \
        --weights RUN/best.pt --coco DATA --size 120x160 --count 32

Exports the detector with ``hitdet export``'s own functions (TorchScript, torch.export's
ExportedProgram, and ONNX run by onnxruntime when installed), runs the eager model and the exports
on the same images (each resized to ``--size``, the fixed input of the ExportedProgram and the ONNX
file), and prints, per format: the number of
images whose detections differ in count or labels, the largest absolute difference of box
coordinates (pixels) and of scores over all matched detections, and the median time per
image; with ``--coco``, also the COCO AP of each format's detections on those images. Not a
test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from hitdet.architecture import load_architecture
from hitdet.builder import build_detector
from hitdet.commands.info import parse_size
from hitdet.data import load_split
from hitdet.data.coco import image_tensor, load_rgb
from hitdet.evaluation import coco_evaluate, to_coco_results
from hitdet.exporting import (
    export_exported_program,
    export_onnx,
    export_torchscript,
    load_exported_program,
    load_torchscript,
    onnx_detections,
    onnx_session,
)
from hitdet.predicting import find_images
from hitdet.training.runner import architecture_categories
from hitdet.training.weights import load_weights


def compare(name: str, run, model, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Print how ``run`` differs from the eager ``model`` on ``images``; return its outputs."""
    mismatched, box_diff, score_diff, times, count, outputs = 0, 0.0, 0.0, [], 0, []
    for image in images:
        with torch.no_grad():
            want = model([image])[0]
            start = time.perf_counter()
            got = run(image)
            times.append(time.perf_counter() - start)
        outputs.append(got)
        if got["boxes"].shape != want["boxes"].shape or not torch.equal(got["labels"].long(), want["labels"]):
            mismatched += 1
            continue
        count += len(want["boxes"])
        if len(want["boxes"]):
            box_diff = max(box_diff, (got["boxes"].float() - want["boxes"]).abs().max().item())
            score_diff = max(score_diff, (got["scores"].float() - want["scores"]).abs().max().item())
    print(f"{name:<12} images differing {mismatched}/{len(images)}, detections compared {count}, "
          f"max |box diff| {box_diff:.3g} px, max |score diff| {score_diff:.3g}, "
          f"median {1000 * statistics.median(times):.1f} ms/image")
    return outputs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arch", help="architecture JSON or preset")
    parser.add_argument("--weights", help="trained weights (default: random weights)")
    parser.add_argument("--images", help="folder of images, each resized to --size (default: random images)")
    parser.add_argument("--coco", help="dataset folder (COCO layout): its val images of exactly --size, scored "
                                       "with COCO AP per format (instead of --images)")
    parser.add_argument("--size", type=parse_size, default=(128, 160), metavar="HxW",
                        help="image size (default 128x160)")
    parser.add_argument("--count", type=int, default=20, help="images to compare (default 20)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    arch = load_architecture(args.arch)
    model = build_detector(arch)
    if args.weights:
        load_weights(model, args.weights)
    model.eval()
    h, w = args.size
    dataset, ids = None, []
    if args.coco:
        dataset = load_split(Path(args.coco), "val", categories=architecture_categories(arch))
        picked = [i for i in range(len(dataset)) if dataset.image_size(dataset.ids[i]) == (w, h)][: args.count]
        images = [dataset[i][0] for i in picked]
        ids = [dataset.ids[i] for i in picked]
    elif args.images:
        paths = find_images([args.images])[: args.count]
        images = [image_tensor(load_rgb(p, "image").resize((w, h), Image.BILINEAR)) for p in paths]
    else:
        gen = torch.Generator().manual_seed(0)
        images = [torch.rand(3, h, w, generator=gen) for _ in range(args.count)]
    print(f"{arch.name or args.arch}: {len(images)} images at {h}x{w}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    results = {}
    with torch.no_grad():
        results["eager"] = compare("eager", lambda im: model([im])[0], model, images)
    with tempfile.TemporaryDirectory() as tmp:
        scripted, _ = load_torchscript(export_torchscript(model, Path(tmp) / "d.pt", arch))
        results["torchscript"] = compare("torchscript", lambda im: scripted([im])[1][0], model, images)
        program, _, _ = load_exported_program(export_exported_program(model, Path(tmp) / "d.pt2", (h, w), arch))
        exported = program.module()
        results["exported"] = compare("exported", lambda im: exported([im])[0], model, images)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("onnx: skipped (onnxruntime not installed)")
        else:
            session = onnx_session(export_onnx(model, Path(tmp) / "d.onnx", (h, w), arch))
            results["onnxruntime"] = compare("onnxruntime", lambda im: onnx_detections(session, im), model, images)
    if dataset is not None:
        for name, outputs in results.items():
            outputs = [{k: v.to(torch.int64) if k == "labels" else v for k, v in o.items()} for o in outputs]
            metrics = coco_evaluate(dataset.coco, to_coco_results(outputs, ids, dataset.label_to_cat_id), ids)
            print(f"{name:<12} AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f} on these {len(ids)} images")


if __name__ == "__main__":
    sys.exit(main())
