"""``hitdet data synth --out DIR``: write the built-in synthetic dataset; ``hitdet data check DIR``."""

from __future__ import annotations

import argparse

from hitdet.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="datasets: write the built-in synthetic dataset, check a COCO folder")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    dsub.required = True
    s = dsub.add_parser("synth", help="write a synthetic detection dataset (COCO format, train + val)")
    s.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --force)")
    s.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files (default 0)")
    s.add_argument("--train", type=int, default=320, metavar="N", help="training images (default 320)")
    s.add_argument("--val", type=int, default=80, metavar="N", help="validation images (default 80)")
    s.add_argument("--style", default="shapes", choices=["shapes", "glyphs", "photos"],
                   help="shapes (default: 4 classes, colour leans to class), glyphs (7 classes, colour "
                        "independent of class, other backgrounds and sizes) or photos (10 classes of real "
                        "objects on real photographs, from files inside scikit-image and matplotlib)")
    s.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    s.set_defaults(func=run_synth)
    c = dsub.add_parser("check", help="read a COCO-layout dataset folder and report what training will see")
    c.add_argument("data", help="dataset folder (annotations/instances_<split>.json + <split>/)")
    c.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to check (default train val)")
    c.add_argument("--max-problems", type=int, default=20, metavar="N",
                   help="list up to N problems per split before stopping (default 20)")
    c.set_defaults(func=run_check)
    try:  # the classification set for backbone pre-training lives with its command (hitdet.pretrain)
        from hitdet.pretrain.synth import register_synth_cls
    except ImportError:
        return
    register_synth_cls(dsub)


def run_synth(args: argparse.Namespace) -> int:
    from hitdet.data import SynthSpec, write_synthetic
    from hitdet.runs import Run

    if args.train < 1 or args.val < 1:
        raise UserError(f"--train/--val: need at least one image each, got {args.train}/{args.val}")
    spec = SynthSpec(num_train=args.train, num_val=args.val, seed=args.seed, style=args.style)
    # the dataset is written aside and renamed at the end
    with Run(args.out, force=args.force, staged=True, command="data synth"):
        out = write_synthetic(args.out, spec, force=args.force)
    print(f"wrote {args.train} train + {args.val} val {args.style} images to {out} (seed {args.seed})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import warnings

    from hitdet.data import DataError, load_split

    if args.max_problems < 1:
        raise UserError(f"--max-problems: must be at least 1, got {args.max_problems}")
    found: list[str] = []
    for split in args.splits:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = load_split(args.data, split, max_problems=args.max_problems)
                ds.verify_images(max_problems=args.max_problems)
            except DataError as exc:  # listed here; the one error line comes after every split
                print(f"{split}: {len(exc.problems)} problem(s)"
                      f"{' (stopped at --max-problems)' if len(exc.problems) >= args.max_problems else ''}")
                for problem in exc.problems:
                    print(f"  problem: {problem}")
                found += exc.problems
                continue
        n_boxes = sum(len(t["labels"]) for t in ds._targets)
        empty = sum(len(t["labels"]) == 0 for t in ds._targets)
        cats = ", ".join(f"{c['id']}:{c.get('name', '')}" for c in ds.categories())
        print(f"{split}: {len(ds)} images ({empty} without objects), {n_boxes} boxes, "
              f"{ds.box_stats['crowd']} crowd, {ds.box_stats['clipped']} clipped, {ds.box_stats['dropped']} dropped")
        print(f"  {ds.num_classes} categories (id:name -> labels 1..{ds.num_classes}): {cats}")
        for w in caught:
            if issubclass(w.category, UserWarning):
                print(f"  warning: {w.message}")
    if found:  # one error line: the first problem, and how many more the list above holds
        more = f" (and {len(found) - 1} more problem(s), listed above)" if len(found) > 1 else ""
        raise UserError(f"{found[0]}{more}")
    return 0
