"""Photos: random square crops of the real photographs that ship inside scikit-learn and scikit-image.

Only colour photographs stored in the installed packages are used, read straight from the package
folders with PIL, so nothing is ever downloaded (several `skimage.data` images need `pooch` and a
network; those are left out):

    scikit-learn  sklearn/datasets/images/   china.jpg (a temple), flower.jpg
    scikit-image  skimage/data/               astronaut.png, coffee.png, chelsea.png (a cat),
                                              rocket.jpg, motorcycle_left.png

Splits never overlap: each photo is cut along its longer side into three bands, 60 % train,
20 % val, 20 % test (20 % so that even the smallest photo, chelsea, 451 px wide, has room for
64-px crops in val and test), fixed in the photo's own coordinates (so they are the same whatever the
crop size or scale), and a split crops only inside its band, keeping 2 px clear of a neighbouring
band so that resampling never blends pixels across.  `scale` shrinks every photo before
cropping, so that a crop holds objects rather than texture; by default it is
min(1, image_size / 64), so 32-px crops see as much of a photo as 64-px crops at full size.
Scales below that run out of room in the val/test bands (a clear error says so).  Item i is photo
`i % len(names)` cropped at a position drawn from (seed, split, i): the same arguments give the
same crops in any process.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tokgen.data.transforms import pil_to_tensor, resize_by_factor, to_rgb

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.60, "val": 0.20, "test": 0.20}  # along each photo's longer side
DEFAULT_LENGTHS = {"train": 8192, "val": 1024, "test": 1024}
BAND_MARGIN = 2  # px (after scaling) kept clear of a neighbouring band: PIL's bicubic support

# name -> (package, folder inside the package, file).  The order fixes the labels.
PHOTO_FILES: dict[str, tuple[str, str, str]] = {
    "china": ("sklearn", "datasets/images", "china.jpg"),
    "flower": ("sklearn", "datasets/images", "flower.jpg"),
    "astronaut": ("skimage", "data", "astronaut.png"),
    "coffee": ("skimage", "data", "coffee.png"),
    "chelsea": ("skimage", "data", "chelsea.png"),
    "rocket": ("skimage", "data", "rocket.jpg"),
    "motorcycle": ("skimage", "data", "motorcycle_left.png"),
}
PHOTO_NAMES: tuple[str, ...] = tuple(PHOTO_FILES)


def photo_path(name: str) -> str:
    """Path of a bundled photo inside its installed package (found without importing it)."""
    if name not in PHOTO_FILES:
        raise ValueError(f"unknown photo {name!r}: choose from {PHOTO_NAMES}")
    package, folder, file = PHOTO_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = {"sklearn": "scikit-learn", "skimage": "scikit-image"}[package]
        raise FileNotFoundError(
            f"photo {name!r} ships with {pip_name}, which is not installed: `pip install {pip_name}`, "
            f"or pass names= with photos from the installed packages only"
        )
    path = os.path.join(spec.submodule_search_locations[0], *folder.split("/"), file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"photo {name!r} is missing from the installed package: expected {path}")
    return path


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """The full-size photo as an RGB PIL image (cached; do not modify)."""
    with Image.open(photo_path(name)) as img:
        return to_rgb(img).copy()


@functools.lru_cache(maxsize=32)
def _scaled_photo(name: str, scale: float) -> torch.Tensor:
    return pil_to_tensor(resize_by_factor(load_photo(name), scale))  # (3, H, W)


def split_band(length: int, split: str) -> tuple[int, int]:
    """[start, stop) of `split`'s band along a side of `length` px (train | val | test)."""
    edges = np.round(np.cumsum([0.0] + [SPLIT_FRACTIONS[s] for s in SPLITS]) * length).astype(int)
    i = SPLITS.index(split)
    return int(edges[i]), int(edges[i + 1])


def crop_region(name: str, split: str, scale: float) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) in scaled pixels inside which `split` may crop this photo."""
    w0, h0 = load_photo(name).size
    h, w = _scaled_photo(name, scale).shape[1:]
    along_x = w0 >= h0
    start, stop = split_band(w0 if along_x else h0, split)
    ratio = (w / w0) if along_x else (h / h0)
    lo, hi = round(start * ratio), round(stop * ratio)
    lo += BAND_MARGIN if split != SPLITS[0] else 0
    hi -= BAND_MARGIN if split != SPLITS[-1] else 0
    return (0, lo, h, hi) if along_x else (lo, 0, hi, w)


class PhotosDataset(Dataset):
    """Square crops of bundled photographs.

    Items: {"image": float32 (3, S, S) in [0, 1], "label": index of the photo in PHOTO_NAMES,
    "caption": the photo's name}.  `length` defaults to DEFAULT_LENGTHS[split]; `scale` to
    min(1, image_size / 64); `names` (a subset of PHOTO_NAMES) to all of them.
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 64,
        seed: int = 0,
        length: int | None = None,
        scale: float | None = None,
        names: Sequence[str] | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an int >= 8 (32 or 64 are usual), got {image_size!r}")
        if length is None:
            length = DEFAULT_LENGTHS[split]
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}")
        if scale is None:
            scale = min(1.0, image_size / 64)
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"scale must be a number > 0 (0.5 halves every photo before cropping), got {scale!r}")
        names = PHOTO_NAMES if names is None else tuple(names)
        unknown = [n for n in names if n not in PHOTO_FILES]
        if not names or unknown:
            raise ValueError(f"names must be a non-empty subset of {PHOTO_NAMES}, got unknown {unknown or 'none'}")
        self.split, self.image_size, self.seed, self.length = split, image_size, int(seed), length
        self.scale, self.names = float(scale), names
        self.regions = [crop_region(n, split, self.scale) for n in names]
        for name, (top, left, bottom, right) in zip(names, self.regions):
            if bottom - top < image_size or right - left < image_size:
                raise ValueError(
                    f"the {split} region of photo {name!r} at scale={scale} is {right - left}x{bottom - top} px, "
                    f"too small for {image_size}x{image_size} crops: raise scale, lower image_size, "
                    f"or leave the photo out with names="
                )

    def __len__(self) -> int:
        return self.length

    def crop_box(self, i: int) -> tuple[int, int, int]:
        """(photo position in self.names, top, left) of item i, in scaled pixels."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a dataset of length {self.length}")
        p = i % len(self.names)
        top, left, bottom, right = self.regions[p]
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), i])
        y = int(rng.integers(top, bottom - self.image_size + 1))
        x = int(rng.integers(left, right - self.image_size + 1))
        return p, y, x

    def __getitem__(self, i: int) -> dict:
        p, y, x = self.crop_box(i)
        name, s = self.names[p], self.image_size
        image = _scaled_photo(name, self.scale)[:, y:y + s, x:x + s].clone()  # (3, s, s)
        return {"image": image, "label": PHOTO_NAMES.index(name), "caption": name}

    def __repr__(self) -> str:
        return (f"PhotosDataset(split={self.split!r}, image_size={self.image_size}, seed={self.seed}, "
                f"length={self.length}, scale={self.scale}, names={self.names})")
