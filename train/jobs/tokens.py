"""Encode a dataset once with a trained tokenizer and write its tokens (with labels and captions),
so that generators train on tokens, not pixels.

    extract_tokens(ExtractConfig(tokenizer="runs/tok/tokenizer", out="runs/tokens", limit=8000))

meta.json records the dataset and its options, so that generator training and compare judge
samples with the judge of the same data (a two-object judge for two-object tokens).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")


@dataclass
class ExtractConfig:
    tokenizer: str                   # a folder written by train-tokenizer (.../tokenizer)
    out: str                         # the token folder to write (other splits already in it are kept)
    dataset: str = "shapes"          # shapes | digits | photos | folder:PATH | hf:NAME_OR_PATH
    dataset_options: dict[str, Any] = field(default_factory=dict)   # the dataset's own options (shapes: num_objects)
    splits: tuple[str, ...] = SPLITS  # the splits to encode
    limit: int = 0                   # at most this many items per split (0 = all)
    batch_size: int = 256            # images encoded at once
    device: str | None = None        # None: cuda when available
    precision: str = "auto"          # the encoder's forwards in float32 or under bfloat16 autocast (auto: bf16 where the device runs it fast)


@dataclass
class ExtractResult:
    out: str                         # the token folder
    items: dict[str, int]            # items written per split
    spec: dict                       # the tokenizer spec of the tokens
    precision: str                   # the encoder's precision, as chosen


def extract_tokens(config: ExtractConfig) -> ExtractResult:
    """Encode config.splits of the dataset into config.out.  Raises ValueError when the folder
    already holds tokens of another tokenizer or dataset (checked before any encoding)."""
    import torch
    from tqdm.auto import tqdm

    from tokgen.data import build_dataset
    from tokgen.data.tokens import check_token_folder, write_token_split
    from tokgen.tokenizers_vq import VQTokenizer

    from ..precision import autocast, resolve_precision
    from .checks import check_extract

    check_extract(config)         # every setting, before the tokenizer or the dataset is loaded
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = VQTokenizer.from_pretrained(config.tokenizer, device=device).eval()
    precision = resolve_precision(config.precision, device)
    spec, options = tokenizer.spec, dict(config.dataset_options)
    check_token_folder(config.out, spec.to_dict(), config.dataset, options)
    items = {}
    for split in config.splits:
        ds = build_dataset(config.dataset, split, spec.image_size, **options)
        n = min(len(ds), config.limit) if config.limit else len(ds)
        scales: list[list[torch.Tensor]] = [[] for _ in spec.scales]
        labels, captions = [], []
        for lo in tqdm(range(0, n, config.batch_size), desc=f"encoding {split}"):
            batch = [ds[i] for i in range(lo, min(n, lo + config.batch_size))]
            images = torch.stack([it["image"] for it in batch]).to(device)
            with autocast(precision, device):
                maps = tokenizer.encode(images)
            for k, t in enumerate(maps):
                scales[k].append(t.cpu())
            labels += [it["label"] for it in batch]
            captions += [it["caption"] for it in batch]
        write_token_split(config.out, split, [torch.cat(s) for s in scales], torch.tensor(labels), captions,
                          spec.to_dict(), config.dataset, options, precision=precision.to_dict())
        items[split] = n
    return ExtractResult(out=str(config.out), items=items, spec=spec.to_dict(), precision=str(precision))
