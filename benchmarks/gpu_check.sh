#!/usr/bin/env bash
# GPU check of the memory modes of the supernet, on one GPU, in under 5 minutes:
#   1. benchmarks/supernet_memory.py on cuda (torch.cuda.max_memory_allocated): every mixed-op mode at
#      1/8 width and 192 px (the CPU table's setting), then the fixed detector and the recomputing
#      supernets at full width and the paper's input size (800x1333);
#   2. `hitdet screen` (32 ops, half depth) and `hitdet search` on its sub spaces at the paper's input
#      size and full width on generated data (`hitdet data synth`), a few steps each, with the peak
#      GPU memory and the wall time of each.
#
# For a machine that has python with torch + torchvision (CUDA) but no NNI, Lightning or pycocotools
# and no package index. Prepare the git-ignored folder .devdeps/ beforehand, on a machine with an
# index and the same Python version (X.Y) as the GPU machine, in the repository root:
#
#   pip install --target .devdeps --no-deps --python-version X.Y --only-binary=:all: \
#       nni==3.0 "pytorch-lightning>=2.0,<2.7" lightning-utilities torchmetrics tqdm pyyaml packaging \
#       colorama cloudpickle json_tricks typeguard psutil requests urllib3 idna certifi charset_normalizer \
#       schema websockets pycocotools tensorboardX protobuf
#   rm -rf .devdeps/nni_node .devdeps/bin      # NNI's web UI (190 MB) and console scripts: not needed
#
# That is about 46 MB. scipy is left out (143 MB; NNI and torchmetrics only import it): the stub in
# benchmarks/devdeps_stubs/ stands in for it; a real scipy in .devdeps or on the machine wins.
# The script puts the repository, .devdeps and the stubs on PYTHONPATH; nothing is installed.
#
# Expected time on one H100/H200: about 5 minutes (estimated, not yet run on a GPU); every variant of the
# memory benchmark is a fresh process (imports, CUDA start-up, supernet construction).
#
# Usage:  bash benchmarks/gpu_check.sh                 # cuda, the figures above
#         bash benchmarks/gpu_check.sh --device cpu    # the same flow, tiny, on CPU (checks the script)
# Options: --steps N (training steps per benchmark variant and per screen/search epoch, default 3),
#          --python PY (default: python3), --out DIR (results; default $OUT/gpu_check or a temp dir).
set -euo pipefail

DEVICE=cuda
STEPS=3
PY=python3
WORK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --python) PY="$2"; shift 2 ;;
        --out) WORK="$2"; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "gpu_check.sh: --device must be cpu or cuda, got $DEVICE" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -z "$WORK" ]; then
    if [ -n "${OUT:-}" ]; then WORK="$OUT/gpu_check"; else WORK="$(mktemp -d -t hitdet-gpu-check-XXXXXX)"; fi
fi
mkdir -p "$WORK"
RUNS="$(mktemp -d -t hitdet-gpu-runs-XXXXXX)"  # data and runs (full-width checkpoints: GBs) stay out of WORK
trap 'rm -rf "$RUNS"' EXIT
export PYTHONPATH="$ROOT:$ROOT/.devdeps:$ROOT/benchmarks/devdeps_stubs${PYTHONPATH:+:$PYTHONPATH}"
export HOME="$WORK/home"          # NNI writes ~/nni-experiments
mkdir -p "$HOME"
export PYTHONWARNINGS=ignore
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

stamp "environment"
"$PY" - "$DEVICE" <<'EOF'
import sys
import torch, torchvision
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}")
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("gpu_check.sh: --device cuda but torch sees no GPU (use --device cpu)")
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.1f} GiB")
import nni, pytorch_lightning, scipy
print(f"nni {nni.__version__}, pytorch_lightning {pytorch_lightning.__version__}, scipy from {scipy.__file__}")
EOF

if [ "$DEVICE" = cuda ]; then
    ONLY="8 ops full full,8 ops full recompute,8 ops full sample,32 ops half full,32 ops half recompute"
    ONLY+=",32 ops half sample,32 ops full full,32 ops full recompute"
    SMALL=(--device cuda --steps "$STEPS" --keep-going --only "$ONLY")
    PAPER=(--device cuda --steps 2 --width 1.0 --size 800x1333 --only "fixed,32 ops half recompute" --keep-going)
    ACCEL=gpu
    SIZE=(--set train.detector.min_size=800 --set train.detector.max_size=1333)
    WIDTH=1.0
    SYNTH=(--train 16 --val 4)
else  # the same flow, small enough for a CPU in a few minutes
    SMALL=(--device cpu --steps 2 --size 96 --only "8 ops half full,8 ops half recompute,8 ops half sample")
    PAPER=(--device cpu --steps 2 --size 96x160 --modes recompute --only "fixed,8 ops half recompute" --keep-going)
    ACCEL=cpu
    SIZE=(--set train.detector.min_size=96 --set train.detector.max_size=160)
    WIDTH=0.125
    SYNTH=(--train 8 --val 4)
fi

stamp "memory benchmark, 1/8 width (the README table's setting; on cpu: tiny)"
"$PY" benchmarks/supernet_memory.py "${SMALL[@]}" --json "$WORK/memory_small.json"

stamp "memory benchmark, full width, the paper's input size (on cpu: tiny)"
"$PY" benchmarks/supernet_memory.py "${PAPER[@]}" --json "$WORK/memory_paper.json"

# hitdet screen / search, printing the peak memory and the time of each
hitdet() {
    "$PY" - "$DEVICE" "$@" <<'EOF'
import runpy, sys, time
import torch
device, args = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
sys.argv = ["hitdet", *args]
try:
    runpy.run_module("hitdet", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
finally:
    if device == "cuda":
        peak = f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    else:
        import resource
        peak = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"
    print(f"hitdet {args[0]}: {time.perf_counter() - t0:.0f} s, {peak}", flush=True)
EOF
}

COMMON=(--accelerator "$ACCEL" --epochs 1 --no-progress --set "steps_per_epoch=$STEPS" --set "train.width=$WIDTH"
        --set train.batch_size=2 --set strategy.arch_start_epoch=0 --set strategy.mixed_op=recompute
        --set strategy.log_heatmaps=false "${SIZE[@]}")

stamp "hitdet data synth"
"$PY" -m hitdet data synth --out "$RUNS/data" "${SYNTH[@]}" --force

stamp "hitdet screen: 32 ops, half depth, recompute"
hitdet screen --data "$RUNS/data" --out "$RUNS/screen" --force "${COMMON[@]}"
cp "$RUNS/screen/subspaces.json" "$WORK/"

stamp "hitdet search: the screened 8-op sub spaces, full depth, recompute"
hitdet search --data "$RUNS/data" --out "$RUNS/search" --force --sub-spaces "$RUNS/screen/subspaces.json" "${COMMON[@]}"
cp "$RUNS/search/architecture.json" "$WORK/"

stamp "done; benchmark JSONs, subspaces.json and architecture.json in $WORK"
