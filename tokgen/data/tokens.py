"""Token datasets: a dataset encoded once by a tokenizer, for generator training.

A token folder (written by `tokgen extract-tokens`, read by `TokenDataset`) holds splits in one
of two layouts; meta.json is shared:

    meta.json                 the tokenizer spec, the source dataset and its options (e.g. num_objects),
                              the item counts per split, the precision each split was encoded in, and
                              for sharded splits their layout ("shards") and views

Sharded splits (what extract-tokens writes), one folder per split:

    {split}/plan.json         what is being extracted (spec, dataset, item count, views, shard size,
                              dtype, precision): a rerun with the same plan resumes, skipping shards
    {split}/shard-KKKKK.npy   items [K*S, (K+1)*S) as one (n, L) array, L = sum of s_k^2, each row the
                              item's scales flattened coarse to fine; int16 when the codebook fits
                              (codebook_size <= 32768), else int32
    {split}/shard-KKKKK.json  the shard's record: first item, item count, file size and sha256,
                              labels, captions; written after the .npy, so it marks the shard finished
    {split}/manifest.json     every shard with its count, size and hash: written last, when all shards
                              are there, so a split without it is incomplete (refused, naming the
                              missing shards)

    Items [0, N) are the dataset's first N items; with views (e.g. "flip") the split holds them
    again after that, view by view: item v*N + i is view v of item i (same label and caption).

Single-file splits (the first format, still read; `write_token_split` writes it for small splits
built in memory, e.g. by tests):

    {split}.safetensors       scale_{k}: (N, s_k, s_k) token maps (int16 / int32), label: (N,) int64
    {split}-captions.json     N captions (a list of strings)

Every write is atomic (temp file, then rename), so a cut-off extraction never looks finished.
Reading checks the split against meta.json (`TokenDataset`); a damaged file is named with its key.
A sharded split is memory-mapped (numpy .npy, `mmap_mode="r"`): a process holds only the rows it
reads, converted to int64 as they are read; several processes reading one folder share the pages.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from tokgen.io import file_sha256

SHARD_SIZE = 4096          # items per shard, unless the extraction says otherwise
LAYOUT_VERSION = 1         # of plan.json / manifest.json
VIEWS = ("flip",)          # the extra views an extraction can add (each one more copy of the split)


def token_dtype(codebook_size: int) -> np.dtype:
    """int16 when every id < codebook_size fits (<= 32768 codes), else int32."""
    return np.dtype(np.int16) if codebook_size <= 2**15 else np.dtype(np.int32)


def write_token_split(folder: str | os.PathLike, split: str, tokens: list[torch.Tensor], labels: torch.Tensor,
                      captions: list[str], spec: dict, source: str, dataset_options: dict | None = None,
                      precision: dict | None = None) -> None:
    """One split, from tensors in memory, as a single-file split (small splits: tests, tools)."""
    folder = Path(folder)
    options = dict(dataset_options or {})
    meta = check_token_folder(folder, spec, source, options)  # before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, token_dtype(spec["codebook_size"]).name)  # the shards' rule: int16 or int32
    tensors = {f"scale_{k}": t.to(dtype).contiguous() for k, t in enumerate(tokens)}
    tensors["label"] = labels.long().contiguous()
    stale = folder / split / "manifest.json"           # a sharded split of the same name gives way
    if stale.exists():
        stale.unlink()
    _atomic(folder / f"{split}.safetensors", lambda p: save_file(tensors, str(p)))
    _atomic(folder / f"{split}-captions.json", lambda p: p.write_text(json.dumps(captions)))
    meta.update({"spec": spec, "source": source, "dataset_options": options})
    meta.setdefault("splits", {})[split] = len(labels)
    for key in ("layout", "views"):
        meta.get(key, {}).pop(split, None)
    if precision is not None:  # train/precision.py's record of the encoder's precision
        meta.setdefault("precision", {})[split] = precision
    _atomic(folder / "meta.json", lambda p: p.write_text(json.dumps(meta, indent=2)))


def check_token_folder(folder: str | os.PathLike, spec: dict, source: str, dataset_options: dict) -> dict:
    """The folder's meta.json ({} for a new folder) if new splits of this tokenizer and dataset may
    join it; a ValueError naming the difference if it holds tokens of another tokenizer or data."""
    meta_path = Path(folder) / "meta.json"
    meta = _read_meta(meta_path) if meta_path.exists() else {}
    if meta and meta.get("spec") != spec:
        raise ValueError(f"{folder} holds tokens of another tokenizer (spec {meta.get('spec')}); "
                         "write to a new folder")
    if meta and (meta.get("source"), meta.get("dataset_options", {})) != (source, dataset_options):
        raise ValueError(f"{folder} holds tokens of {meta.get('source')!r} with options "
                         f"{meta.get('dataset_options', {})}, not {source!r} with {dataset_options}; "
                         "write to a new folder")
    return meta


# ---------------------------------------------------------------------------- sharded splits: writing

def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def shard_ranges(items: int, shard_size: int) -> list[tuple[int, int]]:
    """[lo, hi) of each shard: shard k covers items [k*S, (k+1)*S), the last one the rest."""
    return [(lo, min(items, lo + shard_size)) for lo in range(0, items, shard_size)]


def split_plan(spec: dict, source: str, dataset_options: dict, base_items: int, views: Sequence[str],
               shard_size: int, precision: str) -> dict:
    """What an extraction of one split writes; a rerun resumes only an identical plan."""
    views = ["none", *views]
    return {"version": LAYOUT_VERSION, "spec": spec, "source": source, "dataset_options": dict(dataset_options),
            "base_items": base_items, "views": views, "items": base_items * len(views), "shard_size": shard_size,
            "dtype": token_dtype(spec["codebook_size"]).name, "width": sum(s * s for s in spec["scales"]),
            "precision": precision}


def read_plan(folder: str | os.PathLike, split: str) -> dict | None:
    path = Path(folder) / split / "plan.json"
    return _read_json(path, "delete the folder's split directory and extract it again") if path.is_file() else None


def compare_plan(folder: str | os.PathLike, split: str, plan: dict) -> str:
    """"new" (no extraction of this split yet), "resume" (the same plan: finished shards are kept)
    or "restart" (another item count, views, shard size or precision: the old shards are dropped,
    as a rerun used to overwrite a split).  A ValueError when the split's shards come from another
    tokenizer or dataset (write to a new folder).  Reads only: every process may call it."""
    old = read_plan(folder, split)
    if old is None:
        return "new"
    for key, what in (("spec", "another tokenizer"), ("source", "another dataset"),
                      ("dataset_options", "other dataset options")):
        if old.get(key) != plan[key]:
            raise ValueError(f"{Path(folder) / split} holds shards of {what} ({key} {old.get(key)!r}, not "
                             f"{plan[key]!r}); write to a new folder")
    return "resume" if old == plan else "restart"


def start_split(folder: str | os.PathLike, split: str, plan: dict, decision: str) -> None:
    """The main process: write the plan (after dropping the old shards on "restart")."""
    where = Path(folder) / split
    if decision == "restart" and where.is_dir():
        for path in where.iterdir():
            if path.name.startswith(("shard-", ".shard-")) or path.name in ("manifest.json", "plan.json"):
                path.unlink()
    where.mkdir(parents=True, exist_ok=True)
    if decision != "resume":
        _atomic(where / "plan.json", lambda p: p.write_text(json.dumps(plan, indent=2)))


def finished_shard(folder: str | os.PathLike, split: str, k: int, plan: dict, check_hash: bool = True) -> dict | None:
    """Shard k's record if the shard is finished and intact (record, item count, file size and,
    with check_hash, its sha256), else None (it is to be encoded again)."""
    where = Path(folder) / split
    record_path, data_path = where / f"{shard_name(k)}.json", where / f"{shard_name(k)}.npy"
    lo, hi = shard_ranges(plan["items"], plan["shard_size"])[k]
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        ok = (record.get("first"), record.get("items"), len(record.get("labels", ())),
              len(record.get("captions", ()))) == (lo, hi - lo, hi - lo, hi - lo)
        ok = ok and data_path.stat().st_size == record.get("bytes")
        ok = ok and (not check_hash or file_sha256(data_path) == record.get("sha256"))
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return record if ok else None


def write_token_shard(folder: str | os.PathLike, split: str, k: int, plan: dict, tokens: list[torch.Tensor],
                      labels: Sequence[int], captions: Sequence[str]) -> dict:
    """Shard k of a planned split: its token maps (one (n, s_k, s_k) tensor per scale) as an
    (n, L) .npy, then its record; each atomic, the record last (it marks the shard finished)."""
    where = Path(folder) / split
    lo, hi = shard_ranges(plan["items"], plan["shard_size"])[k]
    n = hi - lo
    if not (len(labels) == len(captions) == n and all(len(t) == n for t in tokens)):
        raise ValueError(f"shard {k} of {split!r} covers items [{lo}, {hi}) ({n} items) but got "
                         f"{[len(t) for t in tokens]} token maps, {len(labels)} labels, {len(captions)} captions")
    rows = torch.cat([t.reshape(n, -1) for t in tokens], dim=1) if tokens else torch.zeros(n, 0)
    v = plan["spec"]["codebook_size"]
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= v):
        raise ValueError(f"shard {k} of {split!r}: token ids outside [0, {v - 1}] (the encoder's codebook_size)")
    array = rows.cpu().numpy().astype(plan["dtype"])
    data_path = where / f"{shard_name(k)}.npy"

    def save(path: Path) -> None:
        with open(path, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())

    _atomic(data_path, save)
    record = {"shard": k, "first": lo, "items": n, "bytes": data_path.stat().st_size, "sha256": file_sha256(data_path),
              "labels": [int(c) for c in labels], "captions": [str(c) for c in captions]}
    _atomic(where / f"{shard_name(k)}.json", lambda p: p.write_text(json.dumps(record)))
    return record


def finish_split(folder: str | os.PathLike, split: str, plan: dict, precision: dict | None = None) -> dict:
    """The main process, once every process has written its shards: check that all shards are
    there (a ValueError naming the missing ones), write the manifest, then record the split in
    meta.json (the single-file split of the same name, if any, is removed)."""
    folder = Path(folder)
    meta = check_token_folder(folder, plan["spec"], plan["source"], plan["dataset_options"])
    ranges = shard_ranges(plan["items"], plan["shard_size"])
    records = [finished_shard(folder, split, k, plan, check_hash=False) for k in range(len(ranges))]
    missing = [k for k, r in enumerate(records) if r is None]
    if missing:
        raise ValueError(f"{folder}/{split}: {len(missing)} of {len(ranges)} shards are missing or damaged "
                         f"({_names(missing)}): rerun extract-tokens with the same settings to write them")
    manifest = {**{k: plan[k] for k in ("version", "items", "base_items", "views", "shard_size", "dtype", "width")},
                "scales": list(plan["spec"]["scales"]),
                "shards": [{"name": shard_name(k), "items": r["items"], "bytes": r["bytes"], "sha256": r["sha256"]}
                           for k, r in enumerate(records)]}
    _atomic(folder / split / "manifest.json", lambda p: p.write_text(json.dumps(manifest, indent=1)))
    meta.update({"spec": plan["spec"], "source": plan["source"], "dataset_options": plan["dataset_options"]})
    meta.setdefault("splits", {})[split] = plan["items"]
    meta.setdefault("layout", {})[split] = "shards"
    meta.setdefault("views", {})[split] = plan["views"]
    if precision is not None:
        meta.setdefault("precision", {})[split] = precision
    _atomic(folder / "meta.json", lambda p: p.write_text(json.dumps(meta, indent=2)))
    for old in (folder / f"{split}.safetensors", folder / f"{split}-captions.json"):
        if old.exists():
            old.unlink()
    return manifest


# ---------------------------------------------------------------------------- reading

class TokenScale:
    """Scale k of a split, read lazily: `scale[i]`, `scale[lo:hi]`, `scale[index_tensor]` give
    int64 tensors (.., s_k, s_k) converted from the stored int16/int32 rows when read.  Indexes
    like the (N, s_k, s_k) LongTensor it replaces (`len`, `.shape`, `.dtype`)."""

    def __init__(self, store: "_Store", k: int):
        self._store, self.k = store, k
        side = store.scales[k]
        self.shape = torch.Size((store.n, side, side))
        self.dtype = torch.int64

    def __len__(self) -> int:
        return self._store.n

    def __getitem__(self, key) -> torch.Tensor:
        return self._store.read(key, [self.k])[0]

    def dim(self) -> int:
        return 3

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def __repr__(self) -> str:
        return f"TokenScale(k={self.k}, shape={tuple(self.shape)}, stored {self._store.dtype})"


class TokenDataset(Dataset):
    """Items `{"tokens": [LongTensor (s_k, s_k) per scale], "label": int, "caption": str}`.

    `scales` is one `TokenScale` per scale (indexable like an (N, s_k, s_k) LongTensor, read
    lazily), `labels` an (N,) LongTensor, `captions` a list of N strings; `read(index)` gives the
    token maps of many items at once (int64, one gather per shard).

    Opening a split checks it against meta.json, each failure a ValueError (FileNotFoundError for
    a missing file) naming the folder, the file and the key: meta.json readable with a valid spec;
    a sharded split complete (its manifest there; else the missing shards are named) with every
    shard's file of the recorded size, shape (n, L) and dtype and a record of n labels and
    captions; a single-file split's safetensors file readable (not truncated) with exactly the
    keys scale_0 .. scale_{K-1} and label, each scale_k an integer (N, s_k, s_k) map with ids in
    [0, codebook_size), label an integer (N,) and the captions file a list of N strings; and N the
    count meta.json records for the split.  A sharded split's ids are checked as they are read
    (and in full with verify=True, which also checks each shard's sha256)."""

    def __init__(self, folder: str | os.PathLike, split: str = "train", verify: bool = False):
        folder = Path(folder)
        meta_path, data_path = folder / "meta.json", folder / f"{split}.safetensors"
        sharded = (folder / split / "manifest.json").is_file()
        if not sharded and not data_path.is_file() and (folder / split / "plan.json").is_file():
            raise ValueError(_incomplete_message(folder, split))
        if not meta_path.is_file():
            what = "has no meta.json" if folder.is_dir() else "does not exist"
            raise FileNotFoundError(f"no token folder at {folder} (it {what}): run "
                                    f"`tokgen extract-tokens --out {folder}` first")
        self.meta = _read_meta(meta_path)
        splits = self.meta.get("splits", {})
        if not sharded and not data_path.is_file():
            raise FileNotFoundError(f"{folder} has no {split!r} split: {data_path.name} is missing (meta.json lists "
                                    f"{sorted(splits)}); extract it with `tokgen extract-tokens --splits {split}`")
        self.spec = self.meta["spec"]
        self.source = self.meta.get("source", "")                    # the dataset the images came from
        self.dataset_options = self.meta.get("dataset_options", {})  # and its options, e.g. num_objects
        self.views = self.meta.get("views", {}).get(split, ["none"])
        if sharded:
            self._store = _ShardStore(folder, split, self.spec, verify)
            self.labels, self.captions, what = self._store.labels, self._store.captions, f"{split}/manifest.json"
        else:
            self._store, self.labels, self.captions = _legacy_split(folder, split, self.spec)
            what = data_path.name
        n = self._store.n
        if split in splits and splits[split] != n:
            raise ValueError(f"{folder}/{split}: meta.json records {splits[split]} items for {split!r} but "
                             f"{what} holds {n}; the folder is inconsistent (an interrupted or mixed "
                             f"extraction?): re-extract the split")
        self.scales = [TokenScale(self._store, k) for k in range(len(self.spec["scales"]))]

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index) -> list[torch.Tensor]:
        """The token maps of items `index` (an int, a slice or a sequence / tensor of ints): one
        LongTensor (m, s_k, s_k) per scale ((s_k, s_k) for an int)."""
        return self._store.read(index, range(len(self.spec["scales"])))

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.read(int(i)), "label": int(self.labels[i]), "caption": self.captions[i]}


def _incomplete_message(folder: Path, split: str) -> str:
    plan = read_plan(folder, split)
    try:
        total = len(shard_ranges(int(plan["items"]), int(plan["shard_size"])))
    except (KeyError, TypeError, ValueError):
        return (f"{folder / split} is an incomplete {split!r} split with an unreadable plan.json: delete that "
                f"directory and rerun `tokgen extract-tokens --out {folder} --splits {split}`")
    missing = [k for k in range(total) if finished_shard(folder, split, k, plan, check_hash=False) is None]
    return (f"the {split!r} split of {folder} is incomplete (an interrupted extraction): "
            f"{total - len(missing)} of {total} shards are written, missing {_names(missing)}; rerun "
            f"`tokgen extract-tokens --out {folder} --splits {split}` with the same settings to finish it "
            f"(finished shards are kept)")


def _names(ks: list[int], most: int = 8) -> str:
    names = ", ".join(shard_name(k) for k in ks[:most])
    return names + (f" and {len(ks) - most} more" if len(ks) > most else "")


class _Store:
    """Token rows of a split: `read(index, ks)` -> one int64 tensor per scale in ks."""
    n: int
    scales: list[int]
    dtype: str

    def read(self, index, ks) -> list[torch.Tensor]:
        raise NotImplementedError

    def _rows(self, index) -> tuple[np.ndarray | slice, bool]:
        """index as (positions, single): an int, a slice (kept a slice) or an integer sequence."""
        if isinstance(index, slice):
            return slice(*index.indices(self.n)), False
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.dim() == 0):
            i = int(index)
            if not -self.n <= i < self.n:
                raise IndexError(f"index {i} out of range for a split of {self.n} items")
            return np.array([i % self.n]), True
        idx = index.cpu().numpy() if torch.is_tensor(index) else np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"token rows are indexed by ints, slices or integer sequences, got {idx.dtype}")
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -self.n or idx.max() >= self.n):
            raise IndexError(f"index out of range for a split of {self.n} items")
        return idx % max(self.n, 1), False


class _TensorStore(_Store):
    """A single-file split, in memory in its stored dtype (int16 / int32)."""

    def __init__(self, scales: list[torch.Tensor], sides: list[int]):
        self.maps, self.scales = scales, sides
        self.n = len(scales[0]) if scales else 0
        self.dtype = str(scales[0].dtype).replace("torch.", "") if scales else "int16"

    def read(self, index, ks) -> list[torch.Tensor]:
        rows, single = self._rows(index)
        rows = rows if isinstance(rows, slice) else torch.from_numpy(rows)
        out = [self.maps[k][rows].long() for k in ks]
        return [t[0] for t in out] if single else out


class _ShardStore(_Store):
    """A sharded split: each shard's (n, L) .npy memory-mapped on first use (and again in each
    DataLoader worker: the maps are not pickled)."""

    def __init__(self, folder: Path, split: str, spec: dict, verify: bool):
        where = folder / split
        manifest_path = where / "manifest.json"
        fix = f"rerun `tokgen extract-tokens --out {folder} --splits {split}` with the same settings"
        manifest = _read_json(manifest_path, fix)
        try:
            self.shard_size, shards = int(manifest["shard_size"]), list(manifest["shards"])
            self.dtype, width, n = str(manifest["dtype"]), int(manifest["width"]), int(manifest["items"])
            ranges = shard_ranges(n, self.shard_size)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{manifest_path} is damaged ({err!r}): {fix}") from None
        self.scales, self.codebook = list(spec["scales"]), int(spec["codebook_size"])
        if manifest.get("scales") != self.scales or width != sum(s * s for s in self.scales):
            raise ValueError(f"{manifest_path} records scales {manifest.get('scales')} (row width {width}) but "
                             f"meta.json's spec has scales {self.scales}; {fix}")
        if self.dtype not in ("int16", "int32") or len(shards) != len(ranges):
            raise ValueError(f"{manifest_path} lists {len(shards)} shards of dtype {self.dtype} for {n} items of "
                             f"{self.shard_size} per shard ({len(ranges)} shards); {fix}")
        self.n, self.width = n, width
        self.paths, labels, self.captions = [], [], []
        offs = np.cumsum([0] + [s * s for s in self.scales])
        self.cols = [(int(offs[k]), int(offs[k + 1])) for k in range(len(self.scales))]
        for k, (entry, (lo, hi)) in enumerate(zip(shards, ranges)):
            path, record_path = where / f"{shard_name(k)}.npy", where / f"{shard_name(k)}.json"
            if not path.is_file() or not record_path.is_file():
                raise FileNotFoundError(f"{path if not path.is_file() else record_path} is missing (the manifest "
                                        f"lists it): the {split!r} split of {folder} is damaged; {fix}")
            size = path.stat().st_size
            if size != entry.get("bytes"):
                raise ValueError(f"{path} has {size} bytes, the manifest records {entry.get('bytes')}: it is "
                                 f"truncated or was replaced; delete it and {fix}")
            record = _read_json(record_path, f"delete it and {fix}")
            shard_labels, shard_captions = record.get("labels"), record.get("captions")
            if not (isinstance(shard_labels, list) and isinstance(shard_captions, list)
                    and len(shard_labels) == len(shard_captions) == hi - lo
                    and all(type(c) is int for c in shard_labels)
                    and all(isinstance(c, str) for c in shard_captions)):
                raise ValueError(f"{record_path} must hold {hi - lo} integer labels and {hi - lo} caption strings "
                                 f"(items [{lo}, {hi})); delete it and {fix}")
            shape, dtype = _npy_header(path, fix)
            if shape != (hi - lo, width) or dtype != np.dtype(self.dtype):
                raise ValueError(f"{path} holds a {dtype} array of shape {shape}, expected {self.dtype} of shape "
                                 f"({hi - lo}, {width}); delete it and {fix}")
            if verify:
                self._verify(path, entry, fix)
            self.paths.append(path)
            labels += shard_labels
            self.captions += shard_captions
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self._maps: list[np.ndarray | None] = [None] * len(self.paths)
        self._last = None                   # (index, int64 rows) of the last read

    def _verify(self, path: Path, entry: dict, fix: str) -> None:
        if file_sha256(path) != entry.get("sha256"):
            raise ValueError(f"{path}: its sha256 differs from the manifest's (the file changed); delete it and {fix}")
        rows = np.load(path, mmap_mode="r")
        for lo in range(0, len(rows), 1024):
            self._check_ids(np.asarray(rows[lo:lo + 1024]), [path])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": [None] * len(self.paths), "_last": None}

    def _map(self, s: int) -> np.ndarray:
        if self._maps[s] is None:
            self._maps[s] = np.load(self.paths[s], mmap_mode="r")
        return self._maps[s]

    def _check_ids(self, rows: np.ndarray, paths) -> None:
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= self.codebook):
            raise ValueError(f"{', '.join(map(str, paths))}: token ids outside [0, {self.codebook - 1}] "
                             f"(meta.json's codebook_size {self.codebook}): the shard is damaged; delete it and rerun "
                             f"extract-tokens with the same settings")

    def read(self, index, ks) -> list[torch.Tensor]:
        """All scales of the rows are gathered at once (one row of L tokens per item) and kept for
        the next call with the same index: a collate that asks scale by scale reads each row once."""
        rows, single = self._rows(index)
        key = (rows.start, rows.stop, rows.step) if isinstance(rows, slice) else rows
        last = self._last
        same = last is not None and type(key) is type(last[0]) and (
            key == last[0] if isinstance(key, tuple) else np.array_equal(key, last[0]))
        if not same:
            last = self._last = (key, self._gather(rows))
        maps = []
        for k in ks:
            a, b = self.cols[k]
            t = last[1][:, a:b].reshape(-1, self.scales[k], self.scales[k])
            maps.append(t[0] if single else t)
        return maps

    def _gather(self, rows) -> torch.Tensor:
        S, dtype = self.shard_size, np.dtype(self.dtype)
        used = []
        if isinstance(rows, slice) and rows.step == 1:
            parts = []
            for s in range(rows.start // S, -(-rows.stop // S)) if rows.stop > rows.start else ():
                a, b = max(rows.start, s * S) - s * S, min(rows.stop, (s + 1) * S) - s * S
                parts.append(self._map(s)[a:b])
                used.append(s)
            out = np.concatenate(parts) if parts else np.zeros((0, self.width), dtype)
        else:
            idx = np.arange(self.n)[rows] if isinstance(rows, slice) else rows
            shard, row = idx // S, idx % S
            order = np.argsort(shard, kind="stable")
            out = np.empty((len(idx), self.width), dtype)
            for group in np.split(order, np.flatnonzero(np.diff(shard[order])) + 1) if len(idx) else ():
                s = int(shard[group[0]])
                out[group] = self._map(s)[row[group]]
                used.append(s)
        self._check_ids(out, [self.paths[s] for s in used])
        return torch.from_numpy(out.astype(np.int64))


def _npy_header(path: Path, fix: str) -> tuple[tuple, np.dtype]:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        return tuple(shape), np.dtype(dtype)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable .npy file ({err}): it is truncated or corrupt; "
                         f"delete it and {fix}") from None


def _legacy_split(folder: Path, split: str, spec: dict) -> tuple[_TensorStore, torch.Tensor, list[str]]:
    data_path = folder / f"{split}.safetensors"
    data = _read_tokens(data_path)
    scales, labels = _check_split_tensors(data, data_path, spec)
    n = len(labels)
    captions_path = folder / f"{split}-captions.json"
    if not captions_path.is_file():
        raise FileNotFoundError(f"{captions_path} is missing (the {split!r} split of {folder} is incomplete): "
                                f"re-extract it with `tokgen extract-tokens --splits {split}`")
    captions = _read_json(captions_path, f"re-extract the {split!r} split")
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"{captions_path} must hold a JSON list of caption strings, got "
                         f"{type(captions).__name__}: re-extract the {split!r} split")
    if len(captions) != n:
        raise ValueError(f"{folder}/{split}: {data_path.name} holds {n} token maps and labels but "
                         f"{captions_path.name} {len(captions)} captions; re-extract the split")
    return _TensorStore(scales, list(spec["scales"])), labels.long(), captions




def _read_json(path: Path, fix: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): the token folder is damaged; {fix}") from None


def _read_meta(path: Path) -> dict:
    """meta.json, checked: an object with a spec of codebook_size (int >= 2) and scales (ints >= 1)."""
    fix = "re-extract the tokens into a new folder"
    meta = _read_json(path, fix)
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(meta).__name__}: {fix}")
    spec = meta.get("spec")
    if not isinstance(spec, dict):
        raise ValueError(f"{path} has no 'spec' object (the tokenizer spec): {fix}")
    v, scales = spec.get("codebook_size"), spec.get("scales")
    if not (type(v) is int and v >= 2):
        raise ValueError(f"{path}: spec 'codebook_size' must be an int >= 2, got {v!r}: {fix}")
    if not (isinstance(scales, list) and scales and all(type(s) is int and s >= 1 for s in scales)):
        raise ValueError(f"{path}: spec 'scales' must be a non-empty list of positive ints, got {scales!r}: {fix}")
    splits = meta.get("splits", {})
    if not (isinstance(splits, dict) and all(type(c) is int and c >= 0 for c in splits.values())):
        raise ValueError(f"{path}: 'splits' must map split names to item counts, got {splits!r}: {fix}")
    return meta


def _read_tokens(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} ({path.stat().st_size} bytes) is not a readable safetensors file ({err}): it is "
                         f"truncated or corrupt (an interrupted copy?); re-extract the split") from None


def _check_split_tensors(data: dict, path: Path, spec: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    """[(N, s_k, s_k) per scale, in the stored integer dtype], labels (N,): the split's tensors
    checked against the spec."""
    scales, v = spec["scales"], spec["codebook_size"]
    fix = "re-extract the split with the tokenizer that wrote meta.json"
    want = [f"scale_{k}" for k in range(len(scales))] + ["label"]
    missing, unknown = [k for k in want if k not in data], sorted(set(data) - set(want))
    if missing or unknown:
        raise ValueError(f"{path} does not match meta.json's spec (scales {scales}: keys {want}): "
                         + (f"missing {missing}" if missing else "") + ("; " if missing and unknown else "")
                         + (f"unexpected {unknown}" if unknown else "") + f"; {fix}")
    labels = data["label"]
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{path}: 'label' must be an integer (N,) tensor, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}; {fix}")
    n = labels.shape[0]
    out = []
    for k, s in enumerate(scales):
        t = data[f"scale_{k}"]
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{path}: 'scale_{k}' has dtype {t.dtype}, expected integer token ids "
                             f"(int16/int32); {fix}")
        if tuple(t.shape) != (n, s, s):
            raise ValueError(f"{path}: 'scale_{k}' has shape {tuple(t.shape)}, expected ({n}, {s}, {s}) "
                             f"(N = {n} labels, side {s} from meta.json's scales {scales}); {fix}")
        if t.numel():
            wide = t.long()                       # for the check only: kept in its stored dtype
            bad = (wide < 0) | (wide >= v)
            if bool(bad.any()):
                first = tuple(int(i) for i in bad.nonzero()[0])
                raise ValueError(f"{path}: 'scale_{k}' has {int(bad.sum())} id(s) outside [0, {v - 1}] "
                                 f"(meta.json's codebook_size {v}), the first {int(wide[first])} at item {first[0]} "
                                 f"position {first[1:]}; {fix}")
            del wide, bad
        out.append(t)
    return out, labels


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
