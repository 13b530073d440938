"""Image folders and Hugging Face datasets, read through `datasets`.

    ImageFolderDataset("path/to/folder", split="train", image_size=32)
    HFImageDataset("user/dataset" or "path/saved_with_save_to_disk" or "file.parquet", split="val")

Both give the standard items {"image": float32 (3, S, S) in [0, 1], "label": int (-1 if none),
"caption": str ("" if none)}: every image is converted to RGB, its shorter side resized to S
and the centre S x S kept (`tokgen.data.transforms.square_tensor`).

Splits.  A source split named train / validation (val, valid, dev) / test is used as it is.  A
split the source lacks is carved out of its train split (or out of its only split) by a hash of
each item (the file path relative to the folder, or the image bytes), ~5 % for each missing split,
the rest staying in train; so the three never overlap, and adding files moves no other file.
A tiny source still gets a non-empty train split; asking for an empty split is an error.

Broken files.  Every image of the source split is decoded once up front (PIL open + load, the
image column read with `datasets.Image(decode=False)` so that a bad file cannot crash the loader,
and its values mapped to [0, 1] by `tokgen.data.transforms.to_pixels`, which scales 16/32-bit and
float images by their range and refuses NaN/inf, negative or out-of-range float values);
unreadable or refused ones are dropped, listed in `.skipped` (with reasons in `.skip_reasons`) and reported
in one warning.  The check is cached per `datasets` fingerprint for the process, so building the
val and test splits after train does not decode everything again.

Nothing is downloaded unless you name a hub dataset, and then it is `datasets` that downloads it.
`datasets` is imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from tokgen.data.transforms import square_tensor, to_pixels

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {  # our split -> names a source may use for it (as `datasets` recognises them)
    "train": ("train", "training"),
    "val": ("validation", "val", "valid", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
CARVED_FRACTION = 0.05  # share of the pool that goes to each split the source lacks
SAVED_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")  # written by save_to_disk
DATA_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}

_CHECKED: dict[tuple[str, str], tuple[list[int], list[str], list[str]]] = {}  # fingerprint cache


def image_extensions() -> tuple[str, ...]:
    """File endings `datasets`' imagefolder loader treats as images."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    return tuple(sorted(ImageFolder.EXTENSIONS))


class _ImageTable(Dataset):
    """Shared core: one split of a `datasets.DatasetDict`, checked, as standard items."""

    def __init__(self, dsdict, source: str, split: str, image_size: int, image_column, label_column,
                 caption_column, root: str | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.source, self.split, self.image_size = source, split, image_size
        pool_name, carve = _resolve_split(dsdict, split, source)
        self.source_split = pool_name
        pool = dsdict[pool_name]
        self.image_column = _image_column(pool, image_column, source)
        self.label_column = _label_column(pool, label_column, source)
        self.caption_column = _caption_column(pool, caption_column, source)
        self.classes = _class_names(pool, self.label_column)

        import datasets

        self._table = pool.cast_column(self.image_column, datasets.Image(decode=False))
        good, self.skipped, self.skip_reasons = _check_images(self._table, self.image_column)
        if self.skipped:
            shown = ", ".join(os.path.basename(p) for p in self.skipped[:5])
            more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable image(s) of {len(self._table)} in {source} "
                f"(split {pool_name!r}): {shown}{more}; see .skipped and .skip_reasons",
                stacklevel=3,
            )
        if len(self._table) == 0:
            raise ValueError(f"split {pool_name!r} of {source} has no rows")
        if not good:
            raise ValueError(f"no readable images in {source} (split {pool_name!r}): "
                             f"all {len(self._table)} failed to decode (the warning above names them)")
        self.indices = _select(self._table, self.image_column, good, split, carve, root)
        if not self.indices:
            raise ValueError(
                f"split {split!r} of {source} is empty: the source has no {split} split and ~{CARVED_FRACTION:.0%} "
                f"of its {len(good)} readable images are carved out for it; add images, or provide "
                f"train/val/test sub-folders (or splits)"
            )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        row = self._table[self.indices[i]]
        with _open_image(row[self.image_column]) as img:
            image = square_tensor(img, self.image_size)
        label = row[self.label_column] if self.label_column else None
        caption = row[self.caption_column] if self.caption_column else None
        return {"image": image, "label": -1 if label is None else int(label), "caption": caption or ""}

    def item_path(self, i: int) -> str:
        """Where item i comes from: its file path, or "row k" of the source split for in-memory images."""
        k = self.indices[i]
        return _cell_name(self._table[k][self.image_column], k)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, split={self.split!r}, image_size={self.image_size}, "
                f"n={len(self)}, skipped={len(self.skipped)})")


class ImageFolderDataset(_ImageTable):
    """A local folder of images, optionally one sub-folder per class (-> labels) and
    train/val/test (or validation) sub-folders (-> splits), loaded with `datasets`' imagefolder.

    `caption_column` may name a column of a metadata.csv/metadata.jsonl in the folder (the
    imagefolder convention: a `file_name` column plus extra columns).  `cache_dir` is where
    `datasets` keeps its Arrow cache (default: HF_DATASETS_CACHE).
    """

    def __init__(self, path: str, split: str = "train", image_size: int = 32, caption_column: str | None = None,
                 cache_dir: str | None = None):
        path = os.fspath(path)
        _check_image_folder(path)
        import datasets

        dsdict = datasets.load_dataset("imagefolder", data_dir=path, cache_dir=cache_dir)
        super().__init__(dsdict, path, split, image_size, image_column="image", label_column=None,
                         caption_column=caption_column, root=os.path.abspath(path))


class HFImageDataset(_ImageTable):
    """Any `datasets` source with an image column: a hub name ("user/name", downloaded by
    `datasets`), a local dataset folder, a folder written by `save_to_disk`, or a single
    .parquet/.csv/.json/.arrow file.

    image_column: None -> the one column of `datasets.Image` type.
    label_column: None -> the one `ClassLabel` column if there is exactly one, else no labels (-1).
    caption_column: None -> no captions ("").
    load_kwargs go to `datasets.load_dataset` (e.g. name=, revision=, data_files=).
    """

    def __init__(self, name_or_path: str, split: str = "train", image_size: int = 32,
                 image_column: str | None = None, label_column: str | None = None,
                 caption_column: str | None = None, cache_dir: str | None = None, **load_kwargs: Any):
        name_or_path = os.fspath(name_or_path)
        if "split" in load_kwargs or "streaming" in load_kwargs:
            raise ValueError("pass split= as HFImageDataset's own argument ('train'/'val'/'test'); "
                             "streaming is not supported")
        dsdict = _load_any(name_or_path, cache_dir, load_kwargs)
        super().__init__(dsdict, name_or_path, split, image_size, image_column, label_column, caption_column)


def _check_image_folder(path: str) -> None:
    exts = image_extensions()
    expected = (f"expected {'/'.join(e for e in exts if e in ('.png', '.jpg', '.jpeg', '.webp', '.bmp'))}/... "
                f"files, optionally in one sub-folder per class (and train/val/test sub-folders)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"image folder {path} does not exist: {expected}")
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a folder: {expected}; for a single data file use HFImageDataset")
    for _, _, files in os.walk(path):
        if any(os.path.splitext(f)[1].lower() in exts for f in files):
            return
    raise ValueError(f"no images found in {path}: {expected}")


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


def _resolve_split(dsdict, split: str, source: str) -> tuple[str, tuple[str, ...]]:
    """(source split to read, our splits that must be carved out of it by hashing).

    A split the source has is read whole; train is the source's train split minus whatever val
    or test must be carved from it; a source with a single split (whatever its name) is the pool
    for all three.
    """
    names = list(dsdict.keys())
    found = {ours: next((n for n in names if n.lower() in aliases), None) for ours, aliases in SPLIT_ALIASES.items()}
    if len(names) == 1:
        return names[0], ("val", "test")
    if found["train"] is None:
        raise ValueError(f"{source} has splits {names} and none is called train: rename one, "
                         f"or load the one you want on its own (it is then split 90/5/5)")
    missing = tuple(s for s in ("val", "test") if found[s] is None)
    if split != "train" and found[split] is not None:
        return found[split], ()
    return found["train"], missing


def _image_column(table, column: str | None, source: str) -> str:
    import datasets

    feats = table.features
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


def _label_column(table, column: str | None, source: str) -> str | None:
    import datasets

    feats = table.features
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


def _caption_column(table, column: str | None, source: str) -> str | None:
    import datasets

    if column is None:
        return None
    feats = table.features
    if column not in feats:
        raise ValueError(f"caption_column {column!r} not in {source}: available columns are {list(feats)}")
    f = feats[column]
    if not (isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")):
        raise ValueError(f"caption_column {column!r} of {source} has type {f}, expected strings")
    return column


def _class_names(table, label_column: str | None) -> list[str] | None:
    import datasets

    f = table.features[label_column] if label_column else None
    return list(f.names) if isinstance(f, datasets.ClassLabel) else None


def _open_image(cell: dict) -> Image.Image:
    """Open an undecoded `datasets.Image` cell ({"bytes", "path"})."""
    if cell is None:
        raise ValueError("empty image cell")
    data = cell.get("bytes")
    return Image.open(io.BytesIO(data)) if data else Image.open(cell["path"])


def _cell_name(cell: dict | None, i: int) -> str:
    return (cell or {}).get("path") or f"row {i}"


def _check_images(table, column: str) -> tuple[list[int], list[str], list[str]]:
    """(indices of decodable images, names of the others, why each failed); cached."""
    key = (table._fingerprint, column)
    if key not in _CHECKED:
        good, bad, reasons = [], [], []
        for i, cell in enumerate(table.select_columns([column])):
            cell = cell[column]
            try:
                with _open_image(cell) as img:
                    img.load()  # decodes every pixel: catches truncated files, not just bad headers
                    if img.width < 1 or img.height < 1:
                        raise ValueError("image has no pixels")
                    to_pixels(img)  # values with no [0, 1] reading (NaN, negative ints, floats > 1): BadImage
                good.append(i)
            except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
                bad.append(_cell_name(cell, i))
                reasons.append(f"{type(e).__name__}: {e}")
        _CHECKED[key] = (good, bad, reasons)
    return _CHECKED[key]


def _unit_hash(key: str | bytes) -> float:
    data = key.encode() if isinstance(key, str) else key
    return int(hashlib.sha1(b"tokgen-split:" + data).hexdigest()[:15], 16) / 16**15


def _split_key(cell: dict, root: str | None) -> str | bytes:
    path = cell.get("path")
    if root and path and os.path.isabs(path):
        return os.path.relpath(path, root).replace(os.sep, "/")
    return hashlib.sha1(cell["bytes"]).hexdigest() if cell.get("bytes") else (path or "")


def _select(table, column: str, good: list[int], split: str, carve: tuple[str, ...], root: str | None) -> list[int]:
    """Indices of `table` (readable ones only) that belong to `split`; `carve` lists the splits
    that each take the top CARVED_FRACTION slice of the hash range, train keeps the rest."""
    if not carve:
        return list(good)
    cells = table.select_columns([column])
    h = {i: _unit_hash(_split_key(cells[i][column], root)) for i in good}
    n = len(carve)
    bounds = {s: (1 - (n - k) * CARVED_FRACTION, 1 - (n - k - 1) * CARVED_FRACTION) for k, s in enumerate(carve)}

    def owner(i: int) -> str:
        return next((s for s, (lo, hi) in bounds.items() if lo <= h[i] < hi), "train")

    owners = {i: owner(i) for i in good}
    if "train" not in owners.values():  # tiny source: keep train non-empty, deterministically
        owners[min(good, key=h.__getitem__)] = "train"
    return [i for i in good if owners[i] == split]
