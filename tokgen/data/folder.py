"""Image folders and Hugging Face datasets (tokgen/data/hf.py), decoded lazily, one image per `__getitem__`.

    ImageFolderDataset("path/to/folder", split="train", image_size=32, augment="crop_flip")
    HFImageDataset("user/dataset" or "path/saved_with_save_to_disk" or "file.parquet", split="val")
    HFStreamingDataset("user/dataset", split="train")      # an IterableDataset: nothing downloaded up front

All give the standard items {"image": float32 (3, S, S) in [0, 1], "label": int (-1 if none),
"caption": str ("" if none)}: every image is converted by `tokgen.data.transforms.to_pixels`, its
shorter side resized to S and the centre S x S kept (`augment="none"`, the default).

Start-up.  Nothing is decoded when a dataset is built, so that 1 M files start training in
seconds.  An image folder is listed with os.scandir in a fixed order (each folder's images
sorted by name, then its sub-folders sorted by name), so the items are the same on every machine
and run: no `datasets` import, no Arrow cache (`datasets`' imagefolder builder took 53 s for
10,000 files on a shared 2-core machine: hours for ImageNet, in every process).  It follows
imagefolder's conventions: class sub-folders give labels (when there are at least two and every
image sits at the same depth), top-level train / validation (val, valid, dev) / test sub-folders
give splits, and a metadata.csv / metadata.jsonl / metadata.parquet (a `file_name` column plus extra columns) gives
captions (and then no folder labels).  `datasets` is used for hub datasets, save_to_disk folders
and single data files, memory-mapped, and imported on first use.  Only the first item is
decoded at construction, to fail early on a source with no readable image at all.

Splits.  A source split named train / validation (val, valid, dev) / test is used as it is.  A
split the source lacks is carved out of its train split (or out of its only split) by a hash of
each item (the file path relative to the folder, or the image bytes), ~5 % for each missing split,
the rest staying in train; so the three never overlap, and adding files moves no other file.
A tiny source still gets a non-empty train split; asking for an empty split is an error.

Broken files, lazily.  `__getitem__(i)` decodes item i (PIL open + load, values mapped to [0, 1]
by `to_pixels`, which refuses NaN/inf, negative or out-of-range float values).  A file that fails
is skipped: the item returned is the next readable one, i + 1, i + 2, ... (modulo the length), so
a batch keeps its size and `ds[i]` is the same for the same i on every run and in every worker.
The failure is counted and its path and reason recorded (in memory, and in a small file per
process in a temporary folder, since DataLoader workers are separate processes); a file known
bad is not decoded again by the same process.  `report_skipped()`, called by the main process at
the end of training or extraction, gathers every process's records and warns once with the count
and the first five names; `.skipped` and `.skip_reasons` list them all, in item order.

Augmentation (`augment=`, in `__getitem__`, so in the DataLoader workers):
    "none"       shorter side to S, centre crop (the default: figures do not change)
    "flip"       the same, mirrored left-right with probability 1/2 (an exact mirror)
    "crop"       shorter side to a random length in [ceil(S * lo), ceil(S * hi)] for crop_ratio =
                 (lo, hi) (default (1, 1.25): ADM's random_crop_arr with min_crop_frac 0.8, which
                 LlamaGen's vq_train.py uses), or to round(S * r) for a number r (1.1: LlamaGen's
                 crop_range), then an S x S window at a uniformly random position
    "crop_flip"  both
The random draws (four uniforms: side, x, y, flip) for item i come from numpy's generator seeded
with (seed, epoch, i) alone (`set_epoch(epoch)` before each epoch's DataLoader is made), not from
torch's global or worker RNG: so an item is the same whichever worker decodes it, with any
num_workers, and a run resumed in the middle of an epoch sees the very crops and flips of the
uninterrupted one.  Without set_epoch every epoch sees the same crops and flips (epoch 0).

Streaming.  `HFStreamingDataset` (build_dataset("hf:NAME", streaming=True)) reads a hub dataset
as it downloads (an IterableDataset: the same items, split carving, augmentation and skipping,
but no len() and no ds[i], which the trainer and extract-tokens need: its len() raises a
TypeError that says so).

Nothing is downloaded unless you name a hub dataset, and then it is `datasets` that downloads it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import warnings
import weakref

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tokgen.data.transforms import center_crop, pil_to_tensor, resize_shorter_side, to_pixels

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {  # our split -> names a source may use for it (as `datasets` recognises them)
    "train": ("train", "training"),
    "val": ("validation", "val", "valid", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
CARVED_FRACTION = 0.05  # share of the pool that goes to each split the source lacks
SAVED_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")  # written by save_to_disk
DATA_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}
METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")  # imagefolder's names
AUGMENTS = ("none", "flip", "crop", "crop_flip")
DEFAULT_CROP_RATIO = (1.0, 1.25)  # ADM's random_crop_arr: crop 80-100 % of the shorter side
SHOWN_SKIPPED = 5  # names in the warning
# The file endings `datasets`' imagefolder treats as images (datasets 5.2's list, kept here so
# that listing a folder does not import `datasets`).
IMAGE_EXTENSIONS = (
    '.apng', '.blp', '.bmp', '.bufr', '.bw', '.cur', '.dcx', '.dds', '.dib', '.emf', '.eps', '.fit', '.fits',
    '.flc', '.fli', '.ftc', '.ftu', '.gbr', '.gif', '.grib', '.icb', '.icns', '.ico', '.iim', '.im', '.j2c',
    '.j2k', '.jfif', '.jp2', '.jpc', '.jpe', '.jpeg', '.jpf', '.jpg', '.jpx', '.mpeg', '.mpg', '.msp',
    '.pbm', '.pcd', '.pcx', '.pgm', '.png', '.pnm', '.ppm', '.ps', '.psd', '.pxr', '.ras', '.rgb', '.rgba',
    '.sgi', '.tga', '.tif', '.tiff', '.vda', '.vst', '.webp', '.wmf', '.xbm', '.xpm',
)


def image_extensions() -> tuple[str, ...]:
    """File endings read as images (those of `datasets`' imagefolder loader)."""
    return IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------- skipped files

class _SkipLog:
    """Bad items met by this process and by its DataLoader workers.

    Each process appends "k<TAB>name<TAB>reason" lines to its own file in a temporary folder made
    by the process that built the dataset (workers inherit the folder's path); `gather()` reads
    them all.  The folder is removed when the building process drops the dataset or exits."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tokgen-skipped-")
        self.bad: dict[int, tuple[str, str]] = {}  # source row -> (name, reason), this process
        weakref.finalize(self, _remove_dir, self.dir, os.getpid())

    def add(self, k: int, name: str, reason: str) -> None:
        self.bad[k] = (name, reason)
        line = "\t".join((str(k), name.replace("\t", " ").replace("\n", " "),
                          reason.replace("\t", " ").replace("\n", " ")))
        try:
            with open(os.path.join(self.dir, f"{os.getpid()}.tsv"), "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError:  # the folder is gone (the main process ended): the in-memory record stays
            pass

    def gather(self) -> dict[int, tuple[str, str]]:
        found = dict(self.bad)
        try:
            names = sorted(os.listdir(self.dir))
        except OSError:
            names = []
        for name in names:
            try:
                with open(os.path.join(self.dir, name), encoding="utf-8") as f:
                    for line in f:
                        parts = line.rstrip("\n").split("\t", 2)
                        if len(parts) == 3 and parts[0].isdigit():  # a torn last line is ignored
                            found.setdefault(int(parts[0]), (parts[1], parts[2]))
            except OSError:
                continue
        return found

    def __getstate__(self):  # to a spawned worker: the folder, not the parent's records
        return {"dir": self.dir, "bad": {}}

    def __setstate__(self, state):
        self.__dict__.update(state)


def _remove_dir(path: str, owner: int) -> None:
    if os.getpid() == owner:  # never from a forked worker that inherited the finalizer
        shutil.rmtree(path, ignore_errors=True)


def _warn_skipped(bad: dict[int, tuple[str, str]], total: int, source: str, split: str, stacklevel: int = 3) -> None:
    names = [bad[k][0] for k in sorted(bad)]
    shown = ", ".join(os.path.basename(p) for p in names[:SHOWN_SKIPPED])
    more = f" and {len(names) - SHOWN_SKIPPED} more" if len(names) > SHOWN_SKIPPED else ""
    warnings.warn(f"skipped {len(names)} unreadable image(s) of {total} in {source} (split {split!r}): "
                  f"{shown}{more}; see .skipped and .skip_reasons", stacklevel=stacklevel)


# ----------------------------------------------------------------------------- decoding, augmentation

def _crop_range(crop_ratio) -> tuple[float, float]:
    """crop_ratio (a number r, or a pair lo <= hi, all >= 1) as (lo, hi)."""
    pair = tuple(crop_ratio) if isinstance(crop_ratio, (tuple, list)) else (crop_ratio, crop_ratio)
    if (len(pair) != 2 or any(isinstance(r, bool) or not isinstance(r, (int, float)) for r in pair)
            or not 1 <= pair[0] <= pair[1] < float("inf")):
        raise ValueError(f"crop_ratio must be a number >= 1 or a pair (lo, hi) with 1 <= lo <= hi (the shorter side "
                         f"is resized to image_size * crop_ratio before the random crop), got {crop_ratio!r}")
    return float(pair[0]), float(pair[1])


def _check_augment(augment: str, crop_ratio, seed: int) -> None:
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    _crop_range(crop_ratio)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def _decode(cell: dict) -> Image.Image:
    """The cell's image, fully decoded and mapped by `to_pixels`; raises on any damage."""
    with _open_image(cell) as img:
        img.load()  # decodes every pixel: catches truncated files, not just bad headers
        if img.width < 1 or img.height < 1:
            raise ValueError("image has no pixels")
        return to_pixels(img)  # values with no [0, 1] reading (NaN, negative ints, floats > 1): BadImage


def augmented_tensor(img: Image.Image, image_size: int, augment: str = "none", crop_ratio=DEFAULT_CROP_RATIO,
                     rng: np.random.Generator | None = None) -> torch.Tensor:
    """A `to_pixels` image as float32 (3, S, S), augmented as `augment` says with `rng`'s draws
    (four uniforms per call, whatever the augmentation: shorter side, crop x, crop y, flip)."""
    u = rng.random(4) if rng is not None else np.full(4, 0.5)
    if augment in ("crop", "crop_flip"):
        lo, hi = _crop_range(crop_ratio)
        if lo == hi:
            side = round(image_size * lo)
        else:
            a, b = math.ceil(image_size * lo), math.ceil(image_size * hi)
            side = a + min(int(u[0] * (b - a + 1)), b - a)
        img = resize_shorter_side(img, max(image_size, side))
        w, h = img.size
        left, top = int(u[1] * (w - image_size + 1)), int(u[2] * (h - image_size + 1))
        img = img.crop((left, top, left + image_size, top + image_size))
    else:
        img = center_crop(resize_shorter_side(img, image_size), image_size)
    if augment in ("flip", "crop_flip") and u[3] < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # an exact mirror
    return pil_to_tensor(img)


def _item_rng(seed: int, epoch: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, i])


# ----------------------------------------------------------------------------- map-style core

class _ReportsSkips:
    """The settings check (`_setup`), `.skipped`, `.skip_reasons` and the report shared by the map-style
    and streaming datasets, which keep a `_SkipLog` in `_skips`."""

    _skips: _SkipLog

    def _setup(self, source: str, split: str, image_size: int, augment: str, crop_ratio, seed: int) -> None:
        """The settings every image dataset here checks and keeps, and a fresh skip log."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        _check_augment(augment, crop_ratio, seed)
        self.source, self.split, self.image_size = source, split, image_size
        self.augment, self.crop_ratio, self.seed, self.epoch = augment, _crop_range(crop_ratio), seed, 0
        self._skips = _SkipLog()

    def _report(self, total, warn: bool, stacklevel: int) -> list[tuple[str, str]]:
        bad = self._skips.gather()
        self._skips.bad.update(bad)  # known bad here too: not decoded again by this process
        if bad and warn:
            _warn_skipped(bad, total, self.source, self.source_split, stacklevel=stacklevel + 1)
        return [bad[k] for k in sorted(bad)]

    def _decoded(self, cell: dict, key: int, k: int):
        """The image of a source cell, or None once it is logged as skipped (under `key`; `k` names
        its row): the one decode-or-skip step of the map-style and the streaming datasets."""
        try:
            return _decode(cell)
        except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
            self._skips.add(key, _cell_name(cell, k), f"{type(e).__name__}: {e}")
            return None

    def _item(self, img, label: int | None, caption: str | None, rng) -> dict:
        """The standard item of a decoded image: augmented tensor, label (-1: none), caption ("": none)."""
        return {"image": augmented_tensor(img, self.image_size, self.augment, self.crop_ratio, rng),
                "label": -1 if label is None else int(label), "caption": caption or ""}

    @property
    def skipped(self) -> list[str]:
        """Names of the bad files met so far by this process and its workers, in item order."""
        bad = self._skips.gather()
        return [bad[k][0] for k in sorted(bad)]

    @property
    def skip_reasons(self) -> list[str]:
        """Why each of `.skipped` failed ("ExceptionType: message")."""
        bad = self._skips.gather()
        return [bad[k][1] for k in sorted(bad)]


class _LazyImages(_ReportsSkips, Dataset):
    """Shared core: rows of a source split (`_cell(k)`, `_meta(k)`), the ones in `indices` as
    standard items, decoded on demand, bad ones skipped (see the module docstring)."""

    decodes_files = True  # tokgen.data.default_num_workers: worth DataLoader workers

    def _finish_setup(self, num_rows: int, keys, carve: tuple[str, ...]) -> None:
        """`keys()` gives every row's split key (only called when a split is carved)."""
        pool = self.source_split
        if num_rows == 0:
            raise ValueError(f"split {pool!r} of {self.source} has no rows")
        self.indices = _select(num_rows, keys, self.split, carve)  # an array: workers share it, not copy it
        if not len(self.indices):
            raise ValueError(
                f"split {self.split!r} of {self.source} is empty: the source has no {self.split} split and "
                f"~{CARVED_FRACTION:.0%} of its {num_rows} images are carved out for it; add images, or provide "
                f"train/val/test sub-folders (or splits)")
        self._first_good()

    def _first_good(self) -> None:
        """Decode items from the first on until one reads: a source with none fails here, not in training."""
        for k in map(int, self.indices):
            if self._decoded(self._cell(k), k, k) is not None:
                return
        self.report_skipped(stacklevel=5)  # the warning points at the line that built the dataset
        raise ValueError(f"no readable images in {self.source} (split {self.source_split!r}): all {len(self)} "
                         f"failed to decode (the warning above names them)")

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentation draws `__getitem__` makes (call before making its DataLoader)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        n = len(self.indices)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} items")
        i %= n
        rng = _item_rng(self.seed, self.epoch, i) if self.augment != "none" else None
        for step in range(n):
            k = int(self.indices[(i + step) % n])
            if k in self._skips.bad:
                continue
            img = self._decoded(self._cell(k), k, k)
            if img is not None:
                return self._item(img, *self._meta(k), rng)
        raise RuntimeError(f"no readable images left in {self.source} (split {self.split!r}): every one of "
                           f"the {n} failed to decode; call report_skipped() to see why")

    def report_skipped(self, warn: bool = True, stacklevel: int = 2) -> list[tuple[str, str]]:
        """Every bad file met so far by this process and its DataLoader workers, as (name, reason)
        in item order (`.skipped` / `.skip_reasons` give the same).  Warns, once per call, when any:
        call it from the main process at the end of training or extraction."""
        return self._report(len(self), warn, stacklevel + 1)

    def item_path(self, i: int) -> str:
        """Where item i comes from: its file path, or "row k" of the source split for in-memory images."""
        k = int(self.indices[i])
        return _cell_name(self._cell(k), k)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, split={self.split!r}, image_size={self.image_size}, "
                f"n={len(self)}, augment={self.augment!r})")

    def _cell(self, k: int) -> dict:  # {"bytes": ..., "path": ...}
        raise NotImplementedError

    def _meta(self, k: int) -> tuple[int | None, str | None]:  # (label, caption)
        raise NotImplementedError


class ImageFolderDataset(_LazyImages):
    """A local folder of images, optionally one sub-folder per class (-> labels) and
    train/val/test (or validation) sub-folders (-> splits), listed with os.scandir.

    `caption_column` may name a column of a metadata.csv/metadata.jsonl/metadata.parquet in the
    folder (the imagefolder convention: a `file_name` column plus extra columns).  `cache_dir`
    is accepted for compatibility and unused (nothing is cached on disk).  `augment`,
    `crop_ratio`, `seed`: see the module docstring.

    The paths are kept as one bytes blob plus an offsets array (and the labels as one array), not
    as a Python list: DataLoader workers share them with the main process instead of copying
    millions of reference-counted strings each.
    """

    def __init__(self, path: str, split: str = "train", image_size: int = 32, caption_column: str | None = None,
                 cache_dir: str | None = None, augment: str = "none", crop_ratio=DEFAULT_CROP_RATIO,
                 seed: int = 0):
        path = os.fspath(path)
        self._setup(path, split, image_size, augment, crop_ratio, seed)
        self.root = root = os.path.abspath(path)
        listing = list_image_folder(root)
        self.source_split, carve = _resolve_split(list(listing.splits), split, path)
        files, dir_ids = listing.splits[self.source_split]
        self.classes = listing.classes
        self._labels = listing.dir_labels[dir_ids] if listing.classes else None
        encoded = [f.encode("utf-8", "surrogateescape") for f in files]
        self._blob = b"".join(encoded)
        self._offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self.caption_column = caption_column
        self._captions = None
        if caption_column is not None:
            columns = ["image"] + (["label"] if listing.classes else []) + listing.metadata_columns
            if caption_column not in listing.metadata_columns:
                raise ValueError(f"caption_column {caption_column!r} not in {path}: available columns are {columns}")
            meta = listing.metadata
            values = [meta.get(f, {}).get(caption_column) for f in files]
            wrong = next((v for v in values if v is not None and not isinstance(v, str)), None)
            if wrong is not None:
                raise ValueError(f"caption_column {caption_column!r} of {path} has {type(wrong).__name__} values "
                                 f"(e.g. {wrong!r}), expected strings")
            self._captions = values
        self.image_column, self.label_column = "image", ("label" if listing.classes else None)
        self._finish_setup(len(files), lambda: files, carve)

    def _relpath(self, k: int) -> str:
        return self._blob[self._offsets[k]:self._offsets[k + 1]].decode("utf-8", "surrogateescape")

    def _cell(self, k: int) -> dict:
        return {"bytes": None, "path": os.path.join(self.root, self._relpath(k))}

    def _meta(self, k: int) -> tuple[int | None, str | None]:
        return (int(self._labels[k]) if self._labels is not None else None,
                self._captions[k] if self._captions is not None else None)


class FolderListing:
    """What `list_image_folder` found.  splits: source split -> (image paths relative to the root,
    "/"-separated, in walk order; the index of each one's folder); dir_labels: the class index of
    each folder (with classes; else None); metadata: rows by image path; metadata_columns."""

    def __init__(self, splits: dict[str, tuple[list[str], np.ndarray]], classes: list[str] | None,
                 dir_labels: np.ndarray | None, metadata: dict[str, dict], metadata_columns: list[str]):
        self.splits, self.classes, self.dir_labels = splits, classes, dir_labels
        self.metadata, self.metadata_columns = metadata, metadata_columns


_LISTINGS: dict[str, tuple[list[tuple[str, int]], FolderListing]] = {}  # root -> (folder mtimes, listing)


def list_image_folder(root: str) -> FolderListing:
    """List an image folder the way `datasets`' imagefolder reads it (see the module docstring),
    with os.scandir: about a second per 100,000 files on a local disk.  Each folder's images come
    sorted by name, before its sub-folders (sorted by name).  The listing is kept for the process
    while no folder's modification time changes (adding or removing a file changes its folder's),
    so that building val and test after train lists nothing again."""
    root = os.path.abspath(root)
    exts = IMAGE_EXTENSIONS
    expected = (f"expected {'/'.join(e for e in exts if e in ('.png', '.jpg', '.jpeg', '.webp', '.bmp'))}/... "
                f"files, optionally in one sub-folder per class (and train/val/test sub-folders)")
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder {root} does not exist: {expected}")
    if not os.path.isdir(root):
        raise ValueError(f"{root} is not a folder: {expected}; for a single data file use HFImageDataset")
    cached = _LISTINGS.get(root)
    if cached is not None and all(_mtime(p) == m for p, m in cached[0]):
        return cached[1]
    dirs: list[tuple[str, list[str]]] = []
    metadata_files: list[str] = []
    stamps: list[tuple[str, int]] = []
    _scan(root, "", set(exts), dirs, metadata_files, stamps, {os.path.realpath(root)})
    if not any(names for _, names in dirs):
        raise ValueError(f"no images found in {root}: {expected}")
    tops = {d.split("/", 1)[0] for d, names in dirs if d and names}
    split_dirs: dict[str, str] = {}  # top-level folder -> our split
    for ours, aliases in SPLIT_ALIASES.items():
        top = next((t for t in sorted(tops) if t.lower() in aliases), None)
        if top is not None:
            split_dirs[top] = ours
    def split_of(d: str) -> str | None:
        if not split_dirs:
            return "train"
        return d.split("/", 1)[0] if d and d.split("/", 1)[0] in split_dirs else None

    splits: dict[str, tuple[list[str], list[int]]] = {}
    used: list[int] = []
    for n, (d, names) in enumerate(dirs):
        name = split_of(d)
        if name is None or not names:
            continue
        files, ids = splits.setdefault(name, ([], []))
        files += [d + f for f in names]
        ids += [n] * len(names)
        used.append(n)
    metadata, columns = _read_metadata(root, sorted(metadata_files))
    classes, dir_labels = None, None
    if not metadata_files:  # imagefolder: labels only without metadata, from >= 2 folders at one depth
        label_of = {n: os.path.basename((root + "/" + dirs[n][0]).rstrip("/")) for n in used}
        depths = {dirs[n][0].count("/") for n in used}
        if len(set(label_of.values())) > 1 and len(depths) == 1:
            classes = sorted(set(label_of.values()))
            index = {c: i for i, c in enumerate(classes)}
            dir_labels = np.full(len(dirs), -1, np.int32)
            for n, c in label_of.items():
                dir_labels[n] = index[c]
    listing = FolderListing({k: (f, np.asarray(i, np.int64)) for k, (f, i) in splits.items()}, classes, dir_labels,
                            metadata, columns)
    _LISTINGS[root] = (stamps, listing)
    return listing


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _scan(folder: str, rel: str, exts: set[str], dirs: list, metadata: list[str], stamps: list,
          seen: set[str]) -> None:
    """Append (rel, [image names]) for `folder` and then, recursively, its sub-folders."""
    stamps.append((folder, _mtime(folder)))
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    names, subdirs = [], []
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir():  # follows symlinks, like `datasets`; a loop is entered once
            if e.is_symlink():
                real = os.path.realpath(e.path)
                if real in seen:
                    continue
                seen.add(real)
            subdirs.append(e)
        elif e.name in METADATA_FILES:
            metadata.append(rel + e.name)
            stamps.append((e.path, _mtime(e.path)))
        elif os.path.splitext(e.name)[1].lower() in exts:
            names.append(e.name)
    dirs.append((rel, names))
    for e in subdirs:
        _scan(e.path, rel + e.name + "/", exts, dirs, metadata, stamps, seen)


def _read_metadata(root: str, files: list[str]) -> tuple[dict[str, dict], list[str]]:
    """{image path relative to root: row} and the column names, from imagefolder metadata files
    (their `file_name` is relative to the metadata file's own folder)."""
    rows: dict[str, dict] = {}
    columns: list[str] = []
    for rel in files:
        path = os.path.join(root, rel)
        base = os.path.dirname(rel)
        if rel.endswith(".csv"):
            with open(path, newline="", encoding="utf-8") as f:
                records = list(csv.DictReader(f))
        elif rel.endswith(".jsonl"):
            with open(path, encoding="utf-8") as f:
                records = [json.loads(line) for line in f if line.strip()]
        else:
            import pyarrow.parquet as pq

            records = pq.read_table(path).to_pylist()
        for r in records:
            if "file_name" not in r:
                raise ValueError(f"{path}: every row needs a file_name column (the imagefolder convention)")
            name = os.path.normpath(os.path.join(base, str(r["file_name"]))).replace(os.sep, "/")
            rows[name] = {c: v for c, v in r.items() if c != "file_name"}
            columns += [c for c in r if c != "file_name" and c not in columns]
    return rows, columns


# ----------------------------------------------------------------------------- helpers

def _resolve_split(names: list[str], split: str, source: str) -> tuple[str, tuple[str, ...]]:
    """(source split to read, our splits that must be carved out of it by hashing).

    A split the source has is read whole; train is the source's train split minus whatever val
    or test must be carved from it; a source with a single split (whatever its name) is the pool
    for all three.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
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


def _open_image(cell: dict) -> Image.Image:
    """Open an undecoded `datasets.Image` cell ({"bytes", "path"})."""
    if cell is None:
        raise ValueError("empty image cell")
    data = cell.get("bytes")
    return Image.open(io.BytesIO(data)) if data else Image.open(cell["path"])


def _cell_name(cell: dict | None, i: int) -> str:
    return (cell or {}).get("path") or f"row {i}"


def _unit_hash(key: str | bytes) -> float:
    data = key.encode() if isinstance(key, str) else key
    return int(hashlib.sha1(b"tokgen-split:" + data).hexdigest()[:15], 16) / 16**15


def _split_key(cell: dict | None, root: str | None) -> str | bytes:
    cell = cell or {}
    path = cell.get("path")
    if root and path and os.path.isabs(path):
        return os.path.relpath(path, root).replace(os.sep, "/")
    return hashlib.sha1(cell["bytes"]).hexdigest() if cell.get("bytes") else (path or "")


def _carve_bounds(carve: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Each carved split's slice of the hash range: the top CARVED_FRACTION's, one after another."""
    n = len(carve)
    return {s: (1 - (n - k) * CARVED_FRACTION, 1 - (n - k - 1) * CARVED_FRACTION) for k, s in enumerate(carve)}


def _owner(h: float, bounds: dict[str, tuple[float, float]]) -> str:
    return next((s for s, (lo, hi) in bounds.items() if lo <= h < hi), "train")


def _select(num_rows: int, keys, split: str, carve: tuple[str, ...]) -> np.ndarray:
    """Rows (0..num_rows-1) that belong to `split`; `carve` lists the splits that each take their
    CARVED_FRACTION slice of the hash range of the rows' keys (`keys()`), train keeps the rest."""
    if not carve:
        return np.arange(num_rows, dtype=np.int64)
    h = [_unit_hash(key) for key in keys()]
    bounds = _carve_bounds(carve)
    owners = [_owner(x, bounds) for x in h]
    if "train" not in owners:  # tiny source: keep train non-empty, deterministically
        owners[min(range(num_rows), key=h.__getitem__)] = "train"
    return np.asarray([i for i in range(num_rows) if owners[i] == split], dtype=np.int64)
