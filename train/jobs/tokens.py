"""Encode a dataset once with a trained tokenizer and write its tokens (with labels and captions),
so that generators train on tokens, not pixels.

    extract_tokens(ExtractConfig(tokenizer="runs/tok/tokenizer", out="runs/tokens", limit=8000))

meta.json records the dataset and its options, so that generator training and compare judge
samples with the judge of the same data (a two-object judge for two-object tokens).

At scale (tokgen/data/tokens.py has the folder layout):

- a split is written in shards of `shard_size` items, shard k covering items [k*S, (k+1)*S), each
  shard atomically with its own record; a process keeps one shard's tokens in memory at a time;
- under `accelerate launch` / torchrun (RANK, WORLD_SIZE, LOCAL_RANK), process r of W encodes
  shards r, r+W, ...: the same shards, batches and tokens whatever W; the main process writes the
  split's manifest and meta.json once every process has finished its shards;
- a rerun with the same settings resumes: shards already finished (record, size and sha256
  intact) are skipped, so a killed extraction loses at most the shards it was writing;
- `views=("flip",)` adds a horizontally mirrored copy of every item (same label and caption)
  after the originals: the split doubles, items [0, N) staying the plain ones.
"""
from __future__ import annotations

import os
import time
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
    device: str | None = None        # None: cuda when available (cuda:LOCAL_RANK under several processes)
    precision: str = "auto"          # the encoder's forwards in float32 or under bfloat16 autocast (auto: bf16 where the device runs it fast)
    shard_size: int = 4096           # items per shard (a multiple of batch_size keeps every batch full)
    views: tuple[str, ...] = ()      # extra views of every item: "flip" (each view adds a copy of the split)
    num_workers: int = 0             # DataLoader workers loading (decoding) images


@dataclass
class ExtractResult:
    out: str                         # the token folder
    items: dict[str, int]            # items written per split (views included)
    spec: dict                       # the tokenizer spec of the tokens
    precision: str                   # the encoder's precision, as chosen
    shards: dict[str, dict] = field(default_factory=dict)  # per split: total, and this process's encoded / kept


def extract_tokens(config: ExtractConfig) -> ExtractResult:
    """Encode config.splits of the dataset into config.out.  Raises ValueError when the folder
    already holds tokens of another tokenizer or dataset (checked before any encoding)."""
    from tokgen.data import build_dataset
    from tokgen.data.tokens import check_token_folder, compare_plan, finish_split, shard_ranges, split_plan, \
        start_split
    from tokgen.tokenizers_vq import VQTokenizer

    from ..distributed import wait_for_everyone
    from ..precision import resolve_precision
    from .checks import check_extract

    check_extract(config)         # every setting, before the tokenizer or the dataset is loaded
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        _init_process_group()
    wait_for_everyone()           # a caller that empties the folder first has done so in every process
    device = _device(config.device, world)
    tokenizer = VQTokenizer.from_pretrained(config.tokenizer, device=device).eval()
    precision = _agreed(resolve_precision(config.precision, device), world)
    spec, options = tokenizer.spec.to_dict(), dict(config.dataset_options)
    check_token_folder(config.out, spec, config.dataset, options)
    items, shards = {}, {}
    for split in config.splits:
        ds = build_dataset(config.dataset, split, spec["image_size"], **options)
        base = min(len(ds), config.limit) if config.limit else len(ds)
        plan = split_plan(spec, config.dataset, options, base, config.views, config.shard_size, precision.chosen)
        decision = compare_plan(config.out, split, plan)     # every process reads before any writes
        wait_for_everyone()
        if rank == 0:
            start_split(config.out, split, plan, decision)
        wait_for_everyone()
        ranges = shard_ranges(plan["items"], plan["shard_size"])
        done = _encode_shards(tokenizer, ds, plan, split, config, device, precision,
                              mine=list(range(rank, len(ranges), world)))
        wait_for_everyone()
        if rank == 0:
            finish_split(config.out, split, plan, precision=precision.to_dict())
        wait_for_everyone()
        items[split] = plan["items"]
        shards[split] = {"total": len(ranges), **done}
    return ExtractResult(out=str(config.out), items=items, spec=spec, precision=str(precision), shards=shards)


def _encode_shards(tokenizer, ds, plan: dict, split: str, config: ExtractConfig, device, precision,
                   mine: list[int]) -> dict:
    """Encode this process's unfinished shards (one DataLoader over their items, batches cut at
    shard starts so they are the same whatever the process count); returns the counts."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from tokgen.data.tokens import finished_shard, shard_ranges, write_token_shard

    from ..precision import autocast

    ranges = shard_ranges(plan["items"], plan["shard_size"])
    todo = [k for k in mine if finished_shard(config.out, split, k, plan) is None]
    kept = len(mine) - len(todo)
    batches, owner = [], []
    for k in todo:
        lo, hi = ranges[k]
        for b in range(lo, hi, config.batch_size):
            batches.append(list(range(b, min(hi, b + config.batch_size))))
            owner.append(k)
    log = os.environ.get("TOKGEN_EXTRACT_LOG")            # tests: one line per shard this process writes
    loader = DataLoader(_Views(ds, plan["base_items"], plan["views"]), batch_sampler=batches,
                        num_workers=config.num_workers, collate_fn=_collate)
    current, maps, labels, captions = None, [], [], []
    desc = f"encoding {split}" + (f" (process {os.environ.get('RANK', '0')})" if len(mine) != len(ranges) else "")
    for k, batch in zip(owner, tqdm(loader, desc=desc, disable=not batches)):
        if k != current:
            current, maps, labels, captions = k, [], [], []
        with autocast(precision, device):
            codes = tokenizer.encode(batch["image"].to(device))
        maps.append([c.cpu() for c in codes])
        labels += batch["label"]
        captions += batch["caption"]
        if len(labels) == ranges[k][1] - ranges[k][0]:           # the shard's last batch
            write_token_shard(config.out, split, k, plan, [torch.cat(s) for s in zip(*maps)], labels, captions)
            if log:
                with open(log, "a") as f:
                    f.write(f"{time.time():.3f} rank {os.environ.get('RANK', '0')} wrote {split} shard {k}\n")
            current, maps = None, []
    if hasattr(ds, "report_skipped"):        # unreadable files this process's loader met, one warning
        ds.report_skipped()
    return {"encoded": len(todo), "kept": kept}


class _Views:
    """Item j of the extracted split: view j // N of dataset item j % N ("none" or "flip")."""

    def __init__(self, ds, base: int, views: list[str]):
        self.ds, self.base, self.views = ds, base, views

    def __len__(self) -> int:
        return self.base * len(self.views)

    def __getitem__(self, j: int) -> dict:
        item = self.ds[j % self.base]
        image = item["image"]
        if self.views[j // self.base] == "flip":
            image = image.flip(-1)
        return {"image": image, "label": int(item["label"]), "caption": str(item["caption"])}


def _collate(items: list[dict]) -> dict:
    import torch

    return {"image": torch.stack([it["image"] for it in items]), "label": [it["label"] for it in items],
            "caption": [it["caption"] for it in items]}


def _init_process_group() -> None:
    """accelerate's process state: gloo on a machine without GPUs (cpu=True), NCCL otherwise."""
    import torch
    from accelerate.state import PartialState

    PartialState(cpu=not torch.cuda.is_available())


def _device(requested: str | None, world: int):
    import torch

    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))   # one GPU per process
    return device


def _agreed(choice, world: int):
    """The main process's precision is everyone's (a CPU probe could time differently per process,
    and the shards must all be encoded alike)."""
    if world <= 1:
        return choice
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([choice])[0]
