"""`tokgen data`: look at a dataset: a captioned grid PNG of its first items and a few counts."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import add_dataset_arguments, dataset_options

HELP = "preview a dataset: write a captioned image grid and print its size and classes"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokgen data", description=HELP)
    add_dataset_arguments(p)
    p.add_argument("--split", default="train", choices=("train", "val", "test"))
    p.add_argument("--image-size", type=int, default=None, help="pixels (default: the dataset's own)")
    p.add_argument("--n", type=int, default=32, help="how many items to show")
    p.add_argument("--out", default="tokgen-out/data.png", help="where to write the grid PNG")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise ValueError(f"--n {args.n}: must be >= 1 item")
    if args.image_size is not None and args.image_size < 8:
        raise ValueError(f"--image-size {args.image_size}: must be >= 8 pixels (or leave it out: the dataset's own)")
    if Path(args.out).is_dir():
        raise IsADirectoryError(f"--out {args.out} is a folder: name the PNG file to write, e.g. "
                                f"--out {Path(args.out) / 'data.png'}")
    options = dataset_options(args)
    import torch

    from tokgen.eval.visualize import save_captioned_grid
    from tokgen.data import build_dataset

    ds = build_dataset(args.dataset, args.split, args.image_size, **options)
    n = min(args.n, len(ds))
    items = [ds[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    titles = [it["caption"] or str(it["label"]) for it in items]
    out = save_captioned_grid(images, titles, Path(args.out), ncol=8, suptitle=f"{args.dataset} / {args.split}")
    summary = {"dataset": args.dataset, "split": args.split, "items": len(ds),
               "image_shape": list(images.shape[1:]), "grid": str(out)}
    print(json.dumps(summary, indent=2))
    return 0
