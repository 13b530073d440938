"""Image helpers shared by the photo and folder datasets: PIL in, float32 (3, H, W) in [0, 1] out.

Resizing happens in PIL (bicubic with its built-in antialiasing when shrinking), on uint8 images,
so that a folder of large photos and the bundled photographs go through the same path.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

RESAMPLE = Image.Resampling.BICUBIC


def to_rgb(img: Image.Image) -> Image.Image:
    """Upright RGB: applies the EXIF orientation (phone photos), drops alpha, expands grey/palette."""
    img = ImageOps.exif_transpose(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def resize_by_factor(img: Image.Image, factor: float) -> Image.Image:
    """Scale both sides by `factor` (0 < factor); factor 1 returns the image unchanged."""
    if not factor > 0:
        raise ValueError(f"resize factor must be > 0, got {factor}")
    if factor == 1:
        return img
    w, h = img.size
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return img.resize(size, RESAMPLE)


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """Scale so that the shorter side is `size`, keeping the aspect ratio."""
    w, h = img.size
    if min(w, h) == size:
        return img
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return img.resize(new, RESAMPLE)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The central size x size window; the image must be at least that large on both sides."""
    w, h = img.size
    if w < size or h < size:
        raise ValueError(f"cannot center-crop {size}x{size} from an image of {w}x{h}: resize first")
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 RGB PIL image -> float32 (3, H, W) in [0, 1]."""
    if img.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {img.mode!r}: call to_rgb(img) first")
    arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def square_tensor(img: Image.Image, image_size: int) -> torch.Tensor:
    """The standard pipeline for arbitrary photos: RGB, shorter side to image_size, center crop."""
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    img = center_crop(resize_shorter_side(to_rgb(img), image_size), image_size)
    return pil_to_tensor(img)
