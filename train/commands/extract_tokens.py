"""`tokgen extract-tokens`: encode a dataset once with a trained tokenizer and write its tokens
(with labels and captions) to disk, so generators train on tokens, not pixels.

    tokgen extract-tokens --tokenizer runs/tokenizer/tokenizer --dataset shapes --out runs/tokens-shapes
    tokgen extract-tokens --tokenizer runs/tokenizer/tokenizer --num-objects 2 --out runs/tokens-two

meta.json records the dataset and its options, so that generator training and `tokgen compare`
judge samples with the judge of the same data (a two-object judge for two-object tokens).
"""
from __future__ import annotations

import argparse
import json

from .options import add_dataset_arguments, dataset_options

HELP = "encode a dataset with a trained tokenizer and write its tokens, labels and captions"


def build_parser() -> argparse.ArgumentParser:
    from ..precision import SAMPLING_CHOICES

    p = argparse.ArgumentParser(prog="tokgen extract-tokens", description=HELP)
    p.add_argument("--tokenizer", required=True, help="a folder written by train-tokenizer (…/tokenizer)")
    add_dataset_arguments(p)
    p.add_argument("--out", required=True, help="token folder to write")
    p.add_argument("--splits", default="train,val,test", help="comma-separated splits")
    p.add_argument("--limit", type=int, default=0, help="at most this many items per split (0 = all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--precision", default="auto", choices=SAMPLING_CHOICES,
                   help="the encoder's forwards in float32 or under bfloat16 autocast (auto: bf16 where --device "
                        "runs it fast; the quantizer's code search stays float32)")
    return p


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from tqdm.auto import tqdm

    from tokgen.tokenizers_vq import VQTokenizer
    from tokgen.data import build_dataset
    from tokgen.data.tokens import check_token_folder, write_token_split

    from ..precision import autocast, resolve_precision

    tokenizer = VQTokenizer.from_pretrained(args.tokenizer, device=args.device).eval()
    precision = resolve_precision(args.precision, args.device)
    spec = tokenizer.spec
    options = dataset_options(args)
    try:
        check_token_folder(args.out, spec.to_dict(), args.dataset, options)  # before any encoding
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    summary = {}
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        ds = build_dataset(args.dataset, split, spec.image_size, **options)
        n = min(len(ds), args.limit) if args.limit else len(ds)
        scales: list[list[torch.Tensor]] = [[] for _ in spec.scales]
        labels, captions = [], []
        for lo in tqdm(range(0, n, args.batch_size), desc=f"encoding {split}"):
            items = [ds[i] for i in range(lo, min(n, lo + args.batch_size))]
            images = torch.stack([it["image"] for it in items]).to(args.device)
            with autocast(precision, args.device):
                maps = tokenizer.encode(images)
            for k, t in enumerate(maps):
                scales[k].append(t.cpu())
            labels += [it["label"] for it in items]
            captions += [it["caption"] for it in items]
        write_token_split(args.out, split, [torch.cat(s) for s in scales], torch.tensor(labels), captions,
                          spec.to_dict(), args.dataset, options, precision=precision.to_dict())
        summary[split] = n
    print(json.dumps({"out": args.out, "items": summary, "spec": spec.to_dict(), "precision": str(precision)},
                     indent=2))
    return 0
