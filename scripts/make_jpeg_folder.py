"""Make a large image folder for data-loading checks: N JPEGs of size x size px in class sub-folders.

    python scripts/make_jpeg_folder.py /tmp/jpegs100k --count 100000 --size 256 --classes 100

Each image is a random smooth picture (a low-resolution random grid upscaled bicubically, plus a
little noise so that JPEG has real work to do), seeded by its index, so the same command makes
the same files.  Written with one process per core.  Never generate into the repository: the
folder is large (100,000 files at 256 px are about 1.5 GB) and must not be committed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image


def _make(args: tuple[str, int, int, int, int]) -> int:
    root, lo, hi, size, classes = args
    noise = np.random.default_rng(lo).integers(-6, 7, (2 * size, 2 * size, 3), dtype=np.int16)  # one tile per job
    for i in range(lo, hi):
        rng = np.random.default_rng(i)
        grid = rng.integers(0, 256, (rng.integers(3, 9), rng.integers(3, 9), 3), dtype=np.uint8)
        img = Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)
        y, x = rng.integers(0, size, 2)
        arr = np.asarray(img, dtype=np.int16) + noise[y:y + size, x:x + size]
        folder = os.path.join(root, f"class_{i % classes:04d}")
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(os.path.join(folder, f"img_{i:08d}.jpg"),
                                                                 quality=90)
    return hi - lo


def make_folder(root: str, count: int, size: int = 256, classes: int = 100, workers: int | None = None) -> float:
    """Write the folder; returns the seconds it took."""
    root = os.path.abspath(root)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root == repo or root.startswith(repo + os.sep):
        raise SystemExit(f"refusing to write {count} images inside the repository ({repo}): use /tmp")
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class_{c:04d}"), exist_ok=True)
    chunk = 500
    jobs = [(root, lo, min(count, lo + chunk), size, classes) for lo in range(0, count, chunk)]
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    pool = Pool(workers) if workers > 1 else None
    done = 0
    for n in (pool.imap_unordered(_make, jobs) if pool else map(_make, jobs)):
        done += n
        if done % 10000 < chunk:
            print(f"{done}/{count}", file=sys.stderr, flush=True)
    if pool:
        pool.close()
        pool.join()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to create (outside the repository, e.g. /tmp/jpegs100k)")
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    a = p.parse_args(argv)
    seconds = make_folder(a.out, a.count, a.size, a.classes, a.workers)
    print(f"wrote {a.count} JPEGs of {a.size} px in {a.classes} class folders under {a.out} in {seconds:.1f} s")


if __name__ == "__main__":
    main()
