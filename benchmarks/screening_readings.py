"""Which reading of Eq. 4 screens by quality? Kept-set agreement across seeds and rank correlations.

On the toy of ``tests/screening_toy.py`` (six ops whose stand-alone quality is measured
first), screen 6 -> 3 ops with each regulariser reading and scoring, for several
initialisation seeds on the same data, and report:

* the mean pairwise Jaccard index of the kept sets across seeds (1 = the same ops every time);
* Spearman's rho between the final op ranking and the stand-alone ranking (1 = screening
  ranks ops exactly by their quality alone);
* Spearman's rho between the final ranking and the *initial* α column norms (near 0 = the
  initialisation does not decide what is removed).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/screening_readings.py [--seeds 5] [--first-seed 0]
[--teacher deep|linear]``. The ``linear`` teacher is the toy where ``skip`` is the best op alone
(op size and op quality disagree). (The toy lives with the tests, which check the default on seeds
that were not used to choose it.)
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

# NNI records every experiment under ~/nni-experiments: give it a throw-away home before it is imported.
os.environ["HOME"] = tempfile.mkdtemp(prefix="hitdet-readings-home-")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")

import screening_toy as toy  # noqa: E402

NO_GUARD = dict(skip_drop_prob=0.0)
VARIANTS = {
    "default (min, epoch mean, burn-in 0.5, no drop-path)": dict(),
    "min (Eq. 4 as printed), snapshot, no burn-in": dict(regulariser="min", scoring="snapshot", reg_burn_in=0.0,
                                                          **NO_GUARD),
    "mu = 0 (no regulariser), epoch mean": dict(mu=0.0, **NO_GUARD),
    "min, epoch mean, burn-in 0.5": dict(regulariser="min", **NO_GUARD),
    "softmin tau=0.1, epoch mean, burn-in 0.5": dict(regulariser="softmin", **NO_GUARD),
    "group L2,p p=0.5, epoch mean, burn-in 0.5": dict(regulariser="group", **NO_GUARD),
    "min, epoch mean, burn-in 0.5, skip drop-path 0.3": dict(regulariser="min", skip_drop_prob=0.3),
    "softmin, epoch mean, burn-in 0.5, skip drop-path 0.3": dict(regulariser="softmin", skip_drop_prob=0.3),
    "softmin, ..., skip drop-path 0.3, non-affine BN": dict(regulariser="softmin", skip_drop_prob=0.3,
                                                            bn_affine=False),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="first initialisation seed (default 0)")
    ap.add_argument("--teacher", choices=toy.TEACHERS, default="deep")
    ap.add_argument("--variants", default="all", help="comma-separated indices into the variant list, or all")
    args = ap.parse_args()
    train, test = toy.split(args.teacher)
    standalone = toy.standalone_losses(train, test)
    alone = toy.ranks(standalone, higher_is_better=False)
    print("stand-alone held-out MSE (lower is better):",
          ", ".join(f"{k} {v:.3f}" for k, v in sorted(standalone.items(), key=lambda kv: kv[1])))
    names = list(VARIANTS)
    chosen = names if args.variants == "all" else [names[int(i)] for i in args.variants.split(",")]
    best = min(standalone, key=standalone.get)
    print(f"\n| reading | kept sets ({args.seeds} seeds) | mean Jaccard | best alone ({best}) kept | "
          "Spearman vs stand-alone (mean, min) | Spearman vs initial norms | s/run |")
    print("|---|---|---|---|---|---|---|")
    for name in chosen:
        kept, rho_q, rho_init, secs = [], [], [], []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            t = time.perf_counter()
            strategy, initial = toy.screen(train, seed=seed, **VARIANTS[name])
            secs.append(time.perf_counter() - t)
            final = toy.final_scores(strategy)
            ranked = toy.ranks(final, higher_is_better=True)
            kept.append(frozenset(strategy.export_result().sub_spaces.kept["backbone"]))
            rho_q.append(toy.spearman(ranked, alone))
            rho_init.append(toy.spearman(ranked, toy.ranks(initial, higher_is_better=True)))
        jac = statistics.mean(toy.jaccard(a, b) for a, b in itertools.combinations(kept, 2))
        sets = "; ".join(sorted({"{" + ", ".join(sorted(k)) + "}" for k in kept}))
        hits = sum(best in k for k in kept)
        print(f"| {name} | {sets} | {jac:.2f} | {hits}/{len(kept)} | {statistics.mean(rho_q):.2f}, {min(rho_q):.2f} "
              f"| {statistics.mean(rho_init):+.2f} | {statistics.mean(secs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
