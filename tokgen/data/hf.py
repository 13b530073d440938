"""Hugging Face `datasets` sources, decoded lazily like the image folders (tokgen/data/folder.py):
a hub name, a local dataset folder, a folder written by `save_to_disk`, or a single
.parquet/.csv/.json/.arrow file (`HFImageDataset`, memory-mapped), or a hub dataset streamed
(`HFStreamingDataset`).  Same items, splits, augmentation and bad-file handling as the folders
(folder.py's module docstring); `datasets` is imported on first use.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset

from .folder import (DATA_FILE_BUILDERS, DEFAULT_CROP_RATIO, SAVED_TO_DISK_MARKERS, _carve_bounds, _LazyImages, _owner,
                     _ReportsSkips, _resolve_split, _split_key, _unit_hash)


class HFImageDataset(_LazyImages):
    """Any `datasets` source with an image column: a hub name ("user/name", downloaded by
    `datasets`), a local dataset folder, a folder written by `save_to_disk`, or a single
    .parquet/.csv/.json/.arrow file.  For streaming (nothing downloaded up front) use
    `HFStreamingDataset` (build_dataset("hf:NAME", streaming=True)).

    image_column: None -> the one column of `datasets.Image` type.
    label_column: None -> the one `ClassLabel` column if there is exactly one, else no labels (-1).
    caption_column: None -> no captions ("").
    augment, crop_ratio, seed: see the module docstring.
    load_kwargs go to `datasets.load_dataset` (e.g. name=, revision=, data_files=).
    """

    def __init__(self, name_or_path: str, split: str = "train", image_size: int = 32,
                 image_column: str | None = None, label_column: str | None = None,
                 caption_column: str | None = None, cache_dir: str | None = None, augment: str = "none",
                 crop_ratio=DEFAULT_CROP_RATIO, seed: int = 0, **load_kwargs: Any):
        name_or_path = os.fspath(name_or_path)
        if "split" in load_kwargs or "streaming" in load_kwargs:
            raise ValueError("pass split= as HFImageDataset's own argument ('train'/'val'/'test'); for streaming "
                             "use HFStreamingDataset, or build_dataset('hf:NAME', streaming=True)")
        self._setup(name_or_path, split, image_size, augment, crop_ratio, seed)
        dsdict = _load_any(name_or_path, cache_dir, load_kwargs)
        self.source_split, carve = _resolve_split(list(dsdict.keys()), split, name_or_path)
        pool = dsdict[self.source_split]
        self.image_column = _image_column(pool.features, image_column, name_or_path)
        self.label_column = _label_column(pool.features, label_column, name_or_path)
        self.caption_column = _caption_column(pool.features, caption_column, name_or_path)
        self.classes = _class_names(pool.features, self.label_column)

        import datasets

        self._table = pool.cast_column(self.image_column, datasets.Image(decode=False))
        self._last: tuple[int, dict | None] = (-1, None)
        self._finish_setup(len(self._table), lambda: _table_keys(self._table, self.image_column), carve)

    def _row(self, k: int) -> dict:
        if self._last[0] != k:  # _cell then _meta read the same row: read it once
            self._last = (k, self._table[k])
        return self._last[1]

    def _cell(self, k: int) -> dict:
        return self._row(k)[self.image_column]

    def _meta(self, k: int) -> tuple[int | None, str | None]:
        row = self._row(k)
        return (row[self.label_column] if self.label_column else None,
                row[self.caption_column] if self.caption_column else None)


def _table_keys(table, column: str) -> list[str | bytes]:
    """Every row's split key, read in Arrow batches (not row by row)."""
    keys: list[str | bytes] = []
    for batch in table.select_columns([column]).with_format("arrow").iter(batch_size=4096):
        keys += [_split_key(cell, None) for cell in batch.column(column).to_pylist()]
    return keys


class HFStreamingDataset(_ReportsSkips, IterableDataset):
    """A Hugging Face dataset streamed (`datasets.load_dataset(..., streaming=True)`): nothing is
    downloaded up front, items come as the shards are read.  Same items, splits (carved by the
    same hash of the image bytes or path, filtered as they stream), columns, augmentation and bad-
    file handling (skipped, counted, `report_skipped()`) as `HFImageDataset`.

    It has no length and no `ds[i]`: iterate it (`for item in ds`, or `DataLoader(ds,
    batch_size=...)`, whose workers each read their share of the source's shards).  The trainer
    and extract-tokens read map-style datasets (len and ds[i]): `len()` raises a TypeError that
    says so.  The augmentation draws of the n-th item of this process's stream are seeded by
    (seed, epoch, n, worker).
    """

    decodes_files = True

    def __init__(self, name_or_path: str, split: str = "train", image_size: int = 32,
                 image_column: str | None = None, label_column: str | None = None,
                 caption_column: str | None = None, cache_dir: str | None = None, augment: str = "none",
                 crop_ratio=DEFAULT_CROP_RATIO, seed: int = 0, **load_kwargs: Any):
        import datasets

        name_or_path = os.fspath(name_or_path)
        self._setup(name_or_path, split, image_size, augment, crop_ratio, seed)
        if "split" in load_kwargs:
            raise ValueError("pass split= as HFStreamingDataset's own argument ('train'/'val'/'test')")
        load_kwargs.pop("streaming", None)
        ext = os.path.splitext(name_or_path)[1].lower()
        if os.path.isfile(name_or_path) and ext in DATA_FILE_BUILDERS:
            loaded = datasets.load_dataset(DATA_FILE_BUILDERS[ext], data_files=name_or_path, cache_dir=cache_dir,
                                           streaming=True, **load_kwargs)
        else:
            loaded = datasets.load_dataset(name_or_path, cache_dir=cache_dir, streaming=True, **load_kwargs)
        if isinstance(loaded, datasets.IterableDataset):
            loaded = datasets.IterableDatasetDict({"train": loaded})
        self.source_split, self._carve = _resolve_split(list(loaded.keys()), split, name_or_path)
        pool = loaded[self.source_split]
        features = pool.features
        if features is None:
            raise ValueError(f"{name_or_path} does not declare its columns' types when streamed; "
                             f"load it without streaming (HFImageDataset)")
        self.image_column = _image_column(features, image_column, name_or_path)
        self.label_column = _label_column(features, label_column, name_or_path)
        self.caption_column = _caption_column(features, caption_column, name_or_path)
        self.classes = _class_names(features, self.label_column)
        self._stream = pool.cast_column(self.image_column, datasets.Image(decode=False))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self._stream, "set_epoch"):
            self._stream.set_epoch(int(epoch))

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__}({self.source!r}) streams: it has no length and no ds[i]. The trainer "
                        f"(train-tokenizer, train-generator, compare) and extract-tokens read map-style datasets; "
                        f"load it without streaming (build_dataset('hf:NAME') downloads it once, memory-mapped), or "
                        f"iterate it yourself (for item in ds, or DataLoader(ds, batch_size=...))")

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        n = 0
        bounds = _carve_bounds(self._carve)
        for k, row in enumerate(self._stream):
            cell = row[self.image_column]
            if bounds and _owner(_unit_hash(_split_key(cell, None)), bounds) != self.split:
                continue
            img = self._decoded(cell, self._skips_key(worker, k), k)
            if img is None:
                continue
            rng = np.random.default_rng([self.seed, self.epoch, n, worker]) if self.augment != "none" else None
            n += 1
            yield self._item(img, row[self.label_column] if self.label_column else None,
                             row[self.caption_column] if self.caption_column else None, rng)

    @staticmethod
    def _skips_key(worker: int, k: int) -> int:
        return k * 1024 + worker  # row k of worker's share: unique per (worker, row)

    def report_skipped(self, warn: bool = True, stacklevel: int = 2) -> list[tuple[str, str]]:
        """As `ImageFolderDataset.report_skipped` (the total is the number of files read, unknown: '?')."""
        return self._report("?", warn, stacklevel + 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, split={self.split!r}, image_size={self.image_size}, streaming)"


# ----------------------------------------------------------------------------- helpers

def _load_any(name_or_path: str, cache_dir: str | None, load_kwargs: dict):
    import datasets

    ext = os.path.splitext(name_or_path)[1].lower()
    if os.path.isdir(name_or_path) and any(
            os.path.isfile(os.path.join(name_or_path, m)) for m in SAVED_TO_DISK_MARKERS):
        loaded = datasets.load_from_disk(name_or_path)
    elif os.path.isfile(name_or_path) and ext in DATA_FILE_BUILDERS:
        builder = DATA_FILE_BUILDERS[ext]
        loaded = datasets.load_dataset(builder, data_files=name_or_path, cache_dir=cache_dir, **load_kwargs)
    elif not os.path.exists(name_or_path) and (os.path.isabs(name_or_path) or name_or_path.startswith((".", "~"))):
        raise FileNotFoundError(f"{name_or_path} does not exist: expected a dataset folder, a save_to_disk folder, "
                                f"a {'/'.join(DATA_FILE_BUILDERS)} file, or a hub name like 'user/dataset'")
    else:
        loaded = datasets.load_dataset(name_or_path, cache_dir=cache_dir, **load_kwargs)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    if not isinstance(loaded, datasets.DatasetDict):
        raise ValueError(f"{name_or_path} loaded as {type(loaded).__name__}; "
                         f"expected a (map-style) Dataset or DatasetDict")
    return loaded


def _image_column(feats, column: str | None, source: str) -> str:
    import datasets

    if column is None:
        cols = [c for c, f in feats.items() if isinstance(f, datasets.Image)]
        if len(cols) == 1:
            return cols[0]
        what = f"several image columns {cols}" if cols else "no column of datasets.Image type"
        raise ValueError(f"{source} has {what}: pass image_column= one of the available columns {list(feats)}")
    if column not in feats:
        raise ValueError(f"image_column {column!r} not in {source}: available columns are {list(feats)}")
    if not isinstance(feats[column], datasets.Image):
        raise ValueError(f"column {column!r} of {source} has type {feats[column]}, not datasets.Image: "
                         f"cast it first, e.g. ds.cast_column({column!r}, datasets.Image())")
    return column


def _label_column(feats, column: str | None, source: str) -> str | None:
    import datasets

    if column is None:
        cols = [c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)]
        return cols[0] if len(cols) == 1 else None
    if column not in feats:
        raise ValueError(f"label_column {column!r} not in {source}: available columns are {list(feats)}")
    f = feats[column]
    if not (isinstance(f, datasets.ClassLabel) or (isinstance(f, datasets.Value) and "int" in f.dtype)):
        raise ValueError(f"label_column {column!r} of {source} has type {f}, expected integers or ClassLabel: "
                         f"encode it first with ds.class_encode_column({column!r})")
    return column


def _caption_column(feats, column: str | None, source: str) -> str | None:
    import datasets

    if column is None:
        return None
    if column not in feats:
        raise ValueError(f"caption_column {column!r} not in {source}: available columns are {list(feats)}")
    f = feats[column]
    if not (isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")):
        raise ValueError(f"caption_column {column!r} of {source} has type {f}, expected strings")
    return column


def _class_names(feats, label_column: str | None) -> list[str] | None:
    import datasets

    f = feats[label_column] if label_column else None
    return list(f.names) if isinstance(f, datasets.ClassLabel) else None
