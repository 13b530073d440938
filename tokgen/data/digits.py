"""Handwritten digits: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), upscaled.

The source is the UCI "Optical Recognition of Handwritten Digits" test set as shipped inside
scikit-learn (`sklearn.datasets.load_digits`), so it loads offline.  Pixels count ink in 0..16;
we divide by 16, upscale with bicubic interpolation (sharper strokes than bilinear, which
looks blurred at 4x) and clip the overshoot back into [0, 1], then repeat grey to RGB.

Splits are a fixed stratified 70/15/15 partition of the 1,797 source images, drawn per class
from `seed`, so train/val/test never share a source image and each has every class in
proportion.  The digits judge (`eval.judges.digits`) trains on the train split of the same seed.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")
IMAGE_SIZES = (8, 16, 32)
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
NUM_CLASSES = 10


@functools.lru_cache(maxsize=1)
def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 source digits: float32 (N, 8, 8) in [0, 1] and int64 labels (N,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # pixels are ink counts 0..16
    images.setflags(write=False)
    labels = bunch.target.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@functools.lru_cache(maxsize=16)
def _split_table(seed: int) -> dict[str, np.ndarray]:
    _, labels = load_digit_arrays()
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(len(idx) * SPLIT_FRACTIONS["val"])
        n_test = round(len(idx) * SPLIT_FRACTIONS["test"])
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val:n_val + n_test])
        parts["train"].append(idx[n_val + n_test:])
    table = {s: np.sort(np.concatenate(p)) for s, p in parts.items()}
    for v in table.values():
        v.setflags(write=False)
    return table


def digit_split_indices(split: str, seed: int = 0) -> np.ndarray:
    """Sorted indices into `load_digits()` that make up `split` for this seed."""
    _check_split(split)
    return _split_table(int(seed))[split]


def upscale_digits(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Grey digits (N, 8, 8) in [0, 1] -> RGB (N, 3, image_size, image_size) in [0, 1]."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES} for digits, got {image_size!r}")
    x = x.float().unsqueeze(1)  # (N, 1, 8, 8)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False)
        x = x.clamp_(0.0, 1.0)  # bicubic overshoots by a few percent at stroke edges
    return x.repeat(1, 3, 1, 1).contiguous()


def digit_caption(label: int) -> str:
    return f"the digit {int(label)}"


class DigitsDataset(Dataset):
    """scikit-learn's handwritten digits as RGB images of size 8, 16 or 32.

    Items: {"image": float32 (3, S, S) in [0, 1], "label": digit 0..9, "caption": "the digit 7"}.
    `source_indices[i]` is the row of `load_digits()` that item i comes from.
    """

    def __init__(self, split: str = "train", image_size: int = 32, seed: int = 0):
        _check_split(split)
        if image_size not in IMAGE_SIZES:
            raise ValueError(
                f"image_size must be one of {IMAGE_SIZES} for digits (the source is 8x8), "
                f"got {image_size!r}"
            )
        self.split, self.image_size, self.seed = split, image_size, int(seed)
        images, labels = load_digit_arrays()
        self.source_indices = digit_split_indices(split, self.seed)
        self.images = upscale_digits(torch.from_numpy(images[self.source_indices]), image_size)
        self.labels = torch.from_numpy(labels[self.source_indices].copy())  # (N,) int64

    def __len__(self) -> int:
        return len(self.source_indices)

    def __getitem__(self, i: int) -> dict:
        label = int(self.labels[i])
        return {"image": self.images[i], "label": label, "caption": digit_caption(label)}

    def __repr__(self) -> str:
        return f"DigitsDataset(split={self.split!r}, image_size={self.image_size}, seed={self.seed}, n={len(self)})"
