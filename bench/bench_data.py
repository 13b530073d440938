"""Data-loading bench: start-up time and images per second of an image folder through a DataLoader.

    python scripts/make_jpeg_folder.py /tmp/jpegs100k --count 100000     # once, outside the repo
    python bench/bench_data.py /tmp/jpegs100k --image-size 256 --workers 0 1 2

Prints one JSON object: the machine (tokgen.train.machine.describe), the folder, the start-up
time (constructing the dataset: listing, split carving, decoding the first item; then to the
first batch of 64 out of a DataLoader), and for each num_workers the images per second decoding +
resizing (+ the augmentation asked for) over `--batches` batches after the first.  Timings are
wall-clock: on a shared machine compare them as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from torch.utils.data import DataLoader


def startup(path: str, image_size: int, batch_size: int, augment: str) -> dict:
    from tokgen.data import build_dataset

    t0 = time.perf_counter()
    ds = build_dataset(f"folder:{path}", "train", image_size, augment=augment)
    t1 = time.perf_counter()
    batch = next(iter(DataLoader(ds, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))))
    t2 = time.perf_counter()
    assert batch["image"].shape == (batch_size, 3, image_size, image_size)
    return {"items": len(ds), "construct_s": round(t1 - t0, 3), "first_batch_s": round(t2 - t0, 3)}


def throughput(path: str, image_size: int, batch_size: int, workers: int, batches: int, augment: str) -> dict:
    from tokgen.data import build_dataset

    ds = build_dataset(f"folder:{path}", "train", image_size, augment=augment)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    t0 = time.perf_counter()
    next(it)  # worker start-up and the first batch, timed apart
    t1 = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += next(it)["image"].shape[0]
    t2 = time.perf_counter()
    del it
    return {"num_workers": workers, "first_batch_s": round(t1 - t0, 3), "images": n,
            "images_per_s": round(n / (t2 - t1), 1)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="an image folder (scripts/make_jpeg_folder.py makes one)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=10, help="batches timed per num_workers, after the first")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--augment", default="none", choices=["none", "flip", "crop", "crop_flip"])
    a = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tokgen.train.machine import describe

    result = {"machine": describe("cpu", rate=False), "cores": os.cpu_count(), "folder": a.folder,
              "image_size": a.image_size, "batch_size": a.batch_size, "augment": a.augment,
              "startup": startup(a.folder, a.image_size, a.batch_size, a.augment),
              "throughput": [throughput(a.folder, a.image_size, a.batch_size, w, a.batches, a.augment)
                             for w in a.workers],
              "note": "wall-clock; compare as ratios within one run when the machine is shared"}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
