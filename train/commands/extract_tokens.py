"""`tokgen extract-tokens`: encode a dataset once with a trained tokenizer and write its tokens
(with labels and captions) to disk, so generators train on tokens, not pixels.

    tokgen extract-tokens --tokenizer runs/tokenizer/tokenizer --dataset shapes --out runs/tokens-shapes
    tokgen extract-tokens --tokenizer runs/tokenizer/tokenizer --num-objects 2 --out runs/tokens-two

meta.json records the dataset and its options, so that generator training and `tokgen compare`
judge samples with the judge of the same data (a two-object judge for two-object tokens).

At scale: under `accelerate launch` (or torchrun) each process encodes its own shards of
--shard-size items (the tokens are the same whatever the process count); a rerun with the same
flags resumes after a kill, skipping finished shards; `--views flip` adds mirrored copies.

    accelerate launch --num_processes 8 -m tokgen.train.cli extract-tokens --tokenizer T --out O --views flip
"""
from __future__ import annotations

import argparse
import dataclasses
import json

from .config_file import add_config_argument
from .options import add_dataset_arguments, dataset_options, parse_args

HELP = "encode a dataset with a trained tokenizer and write its tokens, labels and captions"


def build_parser() -> argparse.ArgumentParser:
    from ..precision import SAMPLING_CHOICES

    p = argparse.ArgumentParser(prog="tokgen extract-tokens", description=HELP)
    add_config_argument(p)
    p.add_argument("--tokenizer", required=True, help="a folder written by train-tokenizer (…/tokenizer)")
    add_dataset_arguments(p)
    p.add_argument("--out", required=True, help="token folder to write")
    p.add_argument("--splits", default="train,val,test", help="comma-separated splits")
    p.add_argument("--limit", type=int, default=0, help="at most this many items per split (0 = all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=_DEFAULT_DEVICE, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--precision", default="auto", choices=SAMPLING_CHOICES,
                   help="the encoder's forwards in float32 or under bfloat16 autocast (auto: bf16 where --device "
                        "runs it fast; the quantizer's code search stays float32)")
    p.add_argument("--shard-size", type=int, default=4096,
                   help="items per shard: the unit of resuming and of sharing work among processes")
    p.add_argument("--views", default="",
                   help="extra views of every item, comma-separated: flip (a mirrored copy; each view adds a "
                        "copy of the split after the plain items). Default: none")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers loading images (0: in the process)")
    return p


_DEFAULT_DEVICE = "auto"


def main(argv: list[str]) -> int:
    from ..jobs.tokens import ExtractConfig, extract_tokens

    args = parse_args(build_parser(), argv)
    if args.device == _DEFAULT_DEVICE:
        args.device = None                    # None: cuda when available (the job decides)
    config = ExtractConfig(tokenizer=args.tokenizer, out=args.out, dataset=args.dataset,
                           dataset_options=dataset_options(args),
                           splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()), limit=args.limit,
                           batch_size=args.batch_size, device=args.device, precision=args.precision,
                           shard_size=args.shard_size, num_workers=args.num_workers,
                           views=tuple(v.strip() for v in args.views.split(",") if v.strip()))
    result = extract_tokens(config)          # a bad input: `error: ...` (tokgen.train.cli)
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0
