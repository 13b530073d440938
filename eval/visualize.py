"""Image grids and captioned figures: where people look rather than read."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected images of shape (B, 3, H, W) in [0, 1], got {tuple(images.shape)}: "
            "repeat grey images to 3 channels with x.repeat(1, 3, 1, 1)"
        )
    return images.detach().float().clamp(0, 1).cpu()


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """Tile (B, 3, H, W) images into one (3, rows*(H+pad), nrow*(W+pad)) image, row-major."""
    images = _check_images(images)
    b = images.shape[0]
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    filler = torch.ones(rows * nrow - b, *images.shape[1:])  # white cells after the last image
    images = torch.cat([images, filler])
    images = torch.nn.functional.pad(images, (0, pad, 0, pad), value=1.0)
    return rearrange(images, "(r c) ch h w -> ch (r h) (c w)", r=rows, c=nrow)


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL image, enlarged `scale` times with nearest neighbours so that
    32 px images stay crisp when looked at."""
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    pil = Image.fromarray(array)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return pil


def atomic_save(save, path: str | os.PathLike) -> Path:
    """Call `save(tmp_path)` and rename into place, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    save(tmp)
    os.replace(tmp, path)
    return path


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, scale: int = 4) -> Path:
    """Save a plain image grid as PNG."""
    grid = to_pil(make_grid(images, nrow), scale)
    return atomic_save(lambda p: grid.save(p, format="PNG"), path)


def save_captioned_grid(
    images: torch.Tensor, titles: list[str], path: str | os.PathLike, ncol: int = 8, suptitle: str | None = None
) -> Path:
    """Save images with a small title under each (captions, predicted labels) through matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = _check_images(images)
    if len(titles) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(titles)} titles: give one title per image")
    rows = math.ceil(images.shape[0] / ncol)
    fig, axes = plt.subplots(rows, ncol, figsize=(1.9 * ncol, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(np.asarray(to_pil(image)), interpolation="nearest")
        ax.set_title(_wrap(title, 26), fontsize=6.5)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    out = atomic_save(lambda p: fig.savefig(p, format="png", dpi=110), path)
    plt.close(fig)
    return out


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)
