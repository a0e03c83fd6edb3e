"""Would a training-free pre-screen rank ops better than screening? Zero-cost proxies on the screening toy.

On the toy of ``tests/screening_toy.py`` (six ops whose stand-alone quality is measured first, two
teachers: ``deep`` where larger ops are better alone, ``linear`` where ``skip`` is best alone), score
every op without training, from the network with that op at every position, at initialisation:

* **synflow** (Tanaka et al. 2020): the sum of |θ · ∂R/∂θ| for R the output sum of the network with
  |θ| on an all-ones input (data-free);
* **NASWOT** (Mellor et al. 2021): log |det K| of the kernel of the ReLU activation patterns of one
  batch (a network without ReLUs scores -inf);
* **grad-norm**: the norm of the loss gradient on one batch.

Each proxy's ranking is compared with the stand-alone ranking (Spearman's rho, mean over init seeds)
and timed, next to what screening reaches (benchmarks/screening_readings.py; docs/evidence.md).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/zero_cost_screen.py [--seeds 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ["HOME"] = tempfile.mkdtemp(prefix="hitdet-zc-home-")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")

import screening_toy as toy  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


def synflow(net: nn.Module, shape: tuple[int, ...]) -> float:
    net = net.double().eval()
    signs = {}
    with torch.no_grad():
        for name, p in net.state_dict().items():
            signs[name] = torch.sign(p)
            p.abs_()
    net.zero_grad()
    net(torch.ones(1, *shape, dtype=torch.float64)).sum().backward()
    score = sum(float((p * p.grad).abs().sum()) for p in net.parameters() if p.grad is not None)
    return score


def naswot(net: nn.Module, x: torch.Tensor) -> float:
    codes: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        codes.append((out.detach().flatten(1) > 0).float())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    if not codes:
        return float("-inf")
    c = torch.cat(codes, 1)
    k = c @ c.t() + (1 - c) @ (1 - c).t()  # N_A - Hamming distance
    return float(torch.slogdet(k.double())[1])


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.zero_grad()
    F.mse_loss(net(x), y).backward()
    return float(torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters() if p.grad is not None)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="initialisation seeds per proxy (default 5)")
    args = ap.parse_args()
    print("| teacher | proxy | Spearman vs stand-alone (mean over seeds) | best alone in its top 3 | s per op |")
    print("|---|---|---:|---|---:|")
    for teacher in toy.TEACHERS:
        train, test = toy.split(teacher)
        standalone = toy.standalone_losses(train, test)
        alone = toy.ranks(standalone, higher_is_better=False)
        best = min(standalone, key=standalone.get)
        x, y = train.tensors[0][:64], train.tensors[1][:64]
        proxies = {"synflow": lambda net, x=x: synflow(net, tuple(x.shape[1:])),
                   "naswot": lambda net, x=x: naswot(net, x),
                   "grad-norm": lambda net, x=x, y=y: grad_norm(net, x, y)}
        for name, fn in proxies.items():
            rhos, tops, secs = [], 0, []
            for seed in range(args.seeds):
                scores = {}
                for op in toy.TOY_OPS:
                    torch.manual_seed(seed)
                    t = time.perf_counter()
                    scores[op] = fn(toy.ToyNet([op] * toy.DEPTH))
                    secs.append(time.perf_counter() - t)
                ranked = toy.ranks(scores, higher_is_better=True)
                rhos.append(toy.spearman(ranked, alone))
                tops += ranked[best] <= 3
            print(f"| {teacher} | {name} | {statistics.mean(rhos):+.2f} | {tops}/{args.seeds} "
                  f"| {statistics.mean(secs):.3f} |", flush=True)


if __name__ == "__main__":
    main()
