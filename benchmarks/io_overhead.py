"""What hitdet.io's guarantees cost: bounded JSON reads against plain ``json.loads``, atomic writes against plain.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/io_overhead.py [--images 100000 --annotations 200000]

Builds a COCO-like annotation document in memory (boxes and polygons, like instances_train.json),
then times, best of ``--repeat``: ``json.loads`` vs :func:`hitdet.io.parse_json` (adds the
nesting-depth scan), and writing it with ``Path.write_text`` vs :func:`hitdet.io.write_text_atomic`
(temporary file, fsync, rename) into a temporary folder. Prints the file size and seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hitdet.io import parse_json, write_text_atomic


def best(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--annotations", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    doc = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in range(args.images)],
        "annotations": [{"id": i, "image_id": i % args.images, "category_id": 1, "bbox": [1.0, 2.0, 30.0, 40.0],
                         "segmentation": [[1, 2, 31, 2, 31, 42, 1, 42]], "area": 1200.0, "iscrowd": 0}
                        for i in range(args.annotations)],
        "categories": [{"id": 1, "name": "thing"}],
    }
    text = json.dumps(doc)
    raw = text.encode()
    print(f"document: {len(raw) / 1e6:.1f} MB")
    loads, bounded = best(lambda: json.loads(raw), args.repeat), best(lambda: parse_json(raw, "x"), args.repeat)
    print(f"read : json.loads {loads:.2f} s, hitdet.io.parse_json {bounded:.2f} s ({bounded / loads:.2f}x)")
    with tempfile.TemporaryDirectory() as tmp:
        plain = best(lambda: Path(tmp, "plain.json").write_text(text), args.repeat)
        atomic = best(lambda: write_text_atomic(Path(tmp, "atomic.json"), text), args.repeat)
    print(f"write: Path.write_text {plain:.2f} s, hitdet.io.write_text_atomic {atomic:.2f} s ({atomic / plain:.2f}x)")


if __name__ == "__main__":
    main()
