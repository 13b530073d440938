"""Image helpers shared by the photo and folder datasets: PIL in, float32 (3, H, W) in [0, 1] out.

Resizing happens in PIL (bicubic with its built-in antialiasing when shrinking), on uint8 images,
so that a folder of large photos and the bundled photographs go through the same path.

Image modes (`to_pixels`), every one scaled to [0, 1] by its real range:

    RGB, L, 1, P, CMYK, YCbCr, ...  8 bits per channel: converted to RGB, / 255
    RGBA, LA, PA, P with transparency  composited over a white background, then as RGB
    I;16, I;16B, I;16L (16-bit grey) / 65535, kept at full precision (mode "F" until the tensor)
    I (32-bit signed int grey)      by the bit depth the file records: b <= 16 (a 16-bit PNG, a TIFF
                                    with BitsPerSample b) -> / (2**b - 1), 32 -> / (2**31 - 1); a file
                                    that records none: / 65535 when every value fits 16 bits, else
                                    / (2**31 - 1); negative values are refused
    F (32-bit float grey)           taken as [0, 1] intensities: refused when it holds NaN/inf or
                                    values outside [0, 1] (beyond FLOAT_TOLERANCE), since no range
                                    can be read off a float file

A refused image raises `BadImage` (a ValueError) naming the mode and the values; the folder
datasets skip such files and count them with the unreadable ones.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

RESAMPLE = Image.Resampling.BICUBIC
FLOAT_TOLERANCE = 1e-3  # how far outside [0, 1] a float (mode F) image may stray and be clamped
BACKGROUND = (255, 255, 255)  # what transparent pixels become
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class BadImage(ValueError):
    """A decodable image whose values cannot be mapped to [0, 1] (negative ints, NaN, floats > 1)."""


def to_pixels(img: Image.Image) -> Image.Image:
    """Upright (EXIF orientation applied, e.g. phone photos) and in one of two modes: "RGB" (8-bit
    data; alpha composited over white, grey/palette/CMYK expanded) or "F" holding grey values
    already scaled to [0, 1] (16/32-bit integer and float data, at full precision).  The module
    docstring lists the rule per mode; `BadImage` for values that have no [0, 1] reading."""
    bits = _recorded_bits(img)  # before exif_transpose: its copy forgets the file's format and tags
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return _high_bit_grey(img, bits)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ALPHA_MODES:
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(flat, rgba).convert("RGB")
    return img.convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Upright 8-bit RGB (`to_pixels`, with 16/32-bit and float grey rounded to 8 bits)."""
    img = to_pixels(img)
    if img.mode == "F":
        arr = np.rint(np.asarray(img, dtype=np.float32) * 255.0).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L").convert("RGB")
    return img


def _high_bit_grey(img: Image.Image, bits: int | None) -> Image.Image:
    """A 16/32-bit integer or float grey image as mode "F" in [0, 1] (see the module docstring)."""
    arr = np.asarray(img)
    if img.mode == "F" or arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
        finite = np.isfinite(arr)
        if not finite.all():
            raise BadImage(f"float image (mode {img.mode}) holds {int((~finite).sum())} NaN/inf value(s) of "
                           f"{arr.size}: the file is corrupt; fix or remove it")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -FLOAT_TOLERANCE or hi > 1 + FLOAT_TOLERANCE:
            raise BadImage(f"float image (mode {img.mode}) has values in [{lo:.4g}, {hi:.4g}]; float images are "
                           f"read as intensities in [0, 1] (no range can be read off a float file): rescale it "
                           f"to [0, 1], or save it as a 16-bit PNG")
        return Image.fromarray(arr.clip(0, 1), "F")
    if arr.dtype.kind not in "iu":
        raise BadImage(f"image mode {img.mode} ({arr.dtype}) is not supported: save it as 8- or 16-bit PNG")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0:
        raise BadImage(f"{arr.dtype.itemsize * 8}-bit integer image (mode {img.mode}) has negative values "
                       f"(range [{lo}, {hi}]), which have no [0, 1] reading: rescale it to 0..65535 and save "
                       f"it as a 16-bit PNG")
    if arr.dtype.itemsize <= 2:
        bits = 16                                    # I;16, I;16B, I;16L
    elif bits is None:
        bits = 16 if hi <= 65535 else 32             # the file records no depth: the values decide
    top = 2**bits - 1 if bits <= 16 else 2**31 - 1
    return Image.fromarray((arr.astype(np.float64) / top).astype(np.float32), "F")


def _recorded_bits(img: Image.Image) -> int | None:
    """Bits per sample the file records for a mode "I" image: 16 for a PNG (PNG holds at most 16),
    a TIFF's BitsPerSample tag; None when unknown."""
    if img.mode != "I":
        return None
    if img.format == "PNG":
        return 16
    tags = getattr(img, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # TIFF BitsPerSample
    if isinstance(bits, (tuple, list)):
        bits = bits[0] if bits else None
    return int(bits) if bits else None


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
    """uint8 RGB PIL image, or a mode "F" grey one in [0, 1] (`to_pixels`) -> float32 (3, H, W) in [0, 1]."""
    # numpy, single-threaded, not torch ops: this runs once per item, often in DataLoader workers
    # or beside them, where torch's intra-op threads only fight for the cores (10x slower on 2 cores)
    if img.mode == "F":  # resampling may overshoot [0, 1] a little: clamp
        grey = np.asarray(img, dtype=np.float32).clip(0, 1)
        return torch.from_numpy(np.ascontiguousarray(np.broadcast_to(grey, (3,) + grey.shape)))
    if img.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {img.mode!r}: call to_pixels(img) first")
    arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    out = np.empty((3,) + arr.shape[:2], np.float32)
    np.divide(arr.transpose(2, 0, 1), np.float32(255.0), out=out, dtype=np.float32)  # == float(x) / 255 in float32
    return torch.from_numpy(out)


def square_tensor(img: Image.Image, image_size: int) -> torch.Tensor:
    """The standard pipeline for arbitrary photos: RGB, shorter side to image_size, center crop."""
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    img = center_crop(resize_shorter_side(to_pixels(img), image_size), image_size)
    return pil_to_tensor(img)
