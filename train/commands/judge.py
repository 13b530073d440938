"""`tokgen judge`: measure the embedded judges on real test images (clean and degraded).

These are the referees of every quality figure in the suite, so their own accuracy is printed
as JSON, reproducibly, rather than asserted once and forgotten.
"""
from __future__ import annotations

import argparse
import json

HELP = "measure the shapes and digits judges on real test images (clean and degraded), as JSON"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokgen judge", description=HELP)
    p.add_argument("--judge", choices=("shapes", "digits", "all"), default="all")
    p.add_argument("--n", type=int, default=2000, help="shapes: test images per configuration")
    p.add_argument("--image-size", type=int, default=None, help="shapes: 32 or 64 (default: both)")
    p.add_argument("--num-objects", type=int, default=None, help="shapes: 1 or 2 (default: both)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise ValueError(f"--n {args.n}: must be >= 1 test image")
    if args.image_size not in (None, 32, 64):
        raise ValueError(f"--image-size {args.image_size}: the shapes judge reads 32 or 64 px images (or leave it out: "
                         "both)")
    if args.num_objects not in (None, 1, 2):
        raise ValueError(f"--num-objects {args.num_objects}: shapes images hold 1 or 2 objects (or leave it out: both)")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: must be >= 0")
    if args.judge in ("shapes", "all"):
        from tokgen.eval.judges import shapes

        for objects in [args.num_objects] if args.num_objects else [1, 2]:
            for size in [args.image_size] if args.image_size else [32, 64]:
                print(json.dumps(shapes.measure(args.n, size, objects, args.seed)), flush=True)
    if args.judge in ("digits", "all"):
        from tokgen.eval.judges import digits

        print(json.dumps(digits.measure(args.seed)), flush=True)
    return 0
