"""`tokgen convert-tokenizer`: load a published tokenizer's released checkpoint (LlamaGen VQ-16,
VAR's multi-scale VQVAE, taming's VQGAN) and write it as a tokgen tokenizer folder, which every
other command then takes as --tokenizer.

    tokgen convert-tokenizer --from var-vqvae vae_ch160v4096z32.pth --out tokenizers/var
    tokgen convert-tokenizer --from llamagen-vq16 vq_ds16_c2i.pt --out tokenizers/llamagen
    tokgen convert-tokenizer --from taming-vqgan last.ckpt --out tokenizers/taming --image-size 256

The file is read with torch.load(weights_only=True); the keys inference does not need (taming's
loss.*, LlamaGen's codebook_used, VAR's ema_vocab_hit_SV) are skipped and counted in the JSON printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

HELP = "convert a released LlamaGen, VAR or taming tokenizer checkpoint into a tokgen tokenizer folder"

def _scales(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated token-map sides, e.g. 1,2,3,4,6,8") from None


def build_parser() -> argparse.ArgumentParser:
    from tokgen.tokenizers_vq.published import FORMATS

    p = argparse.ArgumentParser(prog="tokgen convert-tokenizer", description=HELP)
    p.add_argument("--from", dest="source", required=True, choices=tuple(FORMATS),
                   help="the published format: llamagen-vq16 (vq_ds16_c2i.pt), var-vqvae (vae_ch160v4096z32.pth), "
                        "taming-vqgan (vqgan_imagenet_f16_16384 last.ckpt)")
    p.add_argument("checkpoint", help="the released checkpoint file, as downloaded")
    p.add_argument("--out", required=True, help="tokenizer folder to write")
    p.add_argument("--image-size", type=int, default=256,
                   help="image side the tokenizer takes (default 256, as all three releases were trained); "
                        "must be a multiple of 16")
    p.add_argument("--scales", type=_scales, default=None,
                   help="var-vqvae: token-map sides, coarse to fine, the last = image size / 16 "
                        "(default: the released 1,2,3,4,5,6,8,10,13,16)")
    return p


def main(argv: list[str]) -> int:
    from tokgen.tokenizers_vq.published import convert_tokenizer

    args = build_parser().parse_args(argv)
    if args.image_size < 1:
        raise ValueError(f"--image-size {args.image_size}: must be a positive multiple of 16")
    if args.scales is not None and args.source != "var-vqvae":
        raise ValueError(f"--scales applies to --from var-vqvae only; {args.source} has a single token map")
    result = convert_tokenizer(args.source, args.checkpoint, args.out, image_size=args.image_size,
                               scales=args.scales)          # a bad input: `error: ...` (tokgen.train.cli)
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0
