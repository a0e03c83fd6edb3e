"""``hitdet bench ARCH``: latency and throughput of a detector on this machine (batch 1 and a larger batch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hitdet.commands.info import parse_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency and throughput of a detector (batch 1 and --batch), as JSON")
    p.add_argument("arch", help="architecture JSON file or preset name (e.g. hit-detector)")
    p.add_argument("--weights", help="trained weights to time with (RUN/best.pt); default: fresh random weights "
                   "(same convolutions; trained weights make NMS see a deployment's box counts)")
    p.add_argument("--input-size", type=parse_size, metavar="HxW",
                   help="size of the images fed (default MIN_SIZExMAX_SIZE of the architecture, which its "
                   "transform keeps as is; other sizes are resized as in deployment)")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"],
                   help="where the model runs: auto (default: a GPU if there is one), cpu, gpu")
    p.add_argument("--batch", type=int, default=8, help="the larger batch size timed after batch 1 (default 8)")
    p.add_argument("--runs", type=int, default=20, help="timed forward passes per batch size; the median is "
                   "reported (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed forward passes first (default 5)")
    p.add_argument("--precision", default="32-true", choices=["32-true", "16-mixed", "bf16-mixed"],
                   help="32-true (default), or 16-mixed / bf16-mixed: the forward pass under torch.autocast")
    p.add_argument("--threads", type=int, help="CPU threads torch uses (default: torch's own choice)")
    p.add_argument("--out", help="JSON file to write (default: bench.json beside an ARCH file, "
                   "bench-NAME.json here for a preset); a bench file there is replaced")
    p.add_argument("--force", action="store_true", help="replace an --out file that is not a bench result")
    p.set_defaults(func=run)


def default_out(arch_arg: str, name: str) -> Path:
    path = Path(arch_arg)
    return path.parent / "bench.json" if path.is_file() else Path(f"bench-{name}.json")


def _is_bench_file(path: Path) -> bool:
    from hitdet.bench import BENCH_FORMAT
    from hitdet.io import read_json_or_none

    data = read_json_or_none(path)
    return isinstance(data, dict) and data.get("format") == BENCH_FORMAT


def run(args: argparse.Namespace) -> int:
    import torch

    from hitdet.arch_cost import architecture_cost
    from hitdet.architecture import load_architecture
    from hitdet.bench import benchmark, format_bench, resized_size
    from hitdet.builder import build_detector
    from hitdet.errors import UserError
    from hitdet.io import check_creatable, write_json_atomic
    from hitdet.runs import check_inputs
    from hitdet.weights.detector import load_weights

    for flag, value, least in (("--batch", args.batch, 1), ("--runs", args.runs, 1), ("--warmup", args.warmup, 0),
                               ("--threads", args.threads, 1)):
        if value is not None and value < least:
            raise UserError(f"{flag}: must be >= {least}, got {value}")
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        raise UserError("--accelerator gpu: no GPU is available")
    arch = load_architecture(args.arch)
    name = arch.name or arch.preset or Path(args.arch).stem
    out = Path(args.out) if args.out else default_out(args.arch, arch.preset or "arch")
    if out.is_dir():
        raise UserError(f"{out}: is a folder (--out names the JSON file to write)")
    check_inputs(out, {"ARCH": args.arch, "--weights": args.weights})  # --force never replaces an input
    if out.exists() and not args.force and not _is_bench_file(out):
        raise UserError(f"{out}: file exists and is not a bench result (use --force to replace it)")
    check_creatable(out)
    model = build_detector(arch)
    if args.weights:
        load_weights(model, args.weights)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    size = args.input_size or (arch.settings.min_size, arch.settings.max_size)
    net_size = resized_size(arch.settings, size)
    cost, _, rois = architecture_cost(arch, net_size)
    record = benchmark(model, size, (1, args.batch), warmup=args.warmup, runs=args.runs, device=device,
                       precision=args.precision)
    record = {
        **record,
        "architecture": str(args.arch),
        "name": name,
        "detector_type": arch.detector_type,
        "weights": str(args.weights) if args.weights else None,
        "network_input_size": list(net_size),
        "params": cost["total"].params,
        "macs": cost["total"].macs,
        "priced_rois": rois,
    }
    write_json_atomic(out, record)
    h, w = size
    title = (f"{name} ({arch.detector_type}) on {record['device']} ({record['device_name']}, "
             f"{record['cpu_threads']} CPU threads), images {h}x{w} -> network {net_size[0]}x{net_size[1]}, "
             f"{cost['total'].macs / 1e9:.2f} GMACs per image at {rois} RoIs, {args.precision}; "
             f"median of {args.runs} runs after {args.warmup} warm-up")
    print(format_bench(record, title))
    print(f"wrote {out}")
    return 0
