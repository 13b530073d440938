"""Datasets: the embedded ones (shapes, digits, photos) and the user's own (image folders,
Hugging Face datasets), all with the same item format (see CONTRIBUTING.md).

`build_dataset(name, split, image_size, ...)` is the one entry point the commands use:

    shapes            procedurally drawn shapes with captions (default 32 px; options:
                      num_objects=1|2, seed)
    digits            scikit-learn's handwritten digits, upscaled (16 or 32 px)
    photos            crops of the photographs bundled with scikit-learn / scikit-image
    folder:PATH       an image folder (one sub-folder per class optional)
    hf:NAME_OR_PATH   a Hugging Face dataset by hub name or local path (downloads only if you
                      name a hub dataset)
"""
from __future__ import annotations

EMBEDDED = ("shapes", "digits", "photos")
DEFAULT_SIZE = {"shapes": 32, "digits": 32, "photos": 64}


def build_dataset(name: str, split: str = "train", image_size: int | None = None, **options):
    """Build a dataset by name; `options` go to the dataset class (e.g. num_objects=2)."""
    kind, _, arg = name.partition(":")
    size = image_size or DEFAULT_SIZE.get(kind, 32)
    if kind == "shapes":
        from .shapes import ShapesDataset

        return ShapesDataset(split=split, image_size=size, **options)
    if kind == "digits":
        from .digits import DigitsDataset

        return DigitsDataset(split=split, image_size=size, **options)
    if kind == "photos":
        from .photos import PhotosDataset

        return PhotosDataset(split=split, image_size=size, **options)
    if kind == "folder" and arg:
        from .folder import ImageFolderDataset

        return ImageFolderDataset(arg, split=split, image_size=size, **options)
    if kind == "hf" and arg:
        from .folder import HFImageDataset

        return HFImageDataset(arg, split=split, image_size=size, **options)
    raise ValueError(
        f"unknown dataset {name!r}: use one of {', '.join(EMBEDDED)}, folder:PATH (an image "
        "folder) or hf:NAME_OR_PATH (a Hugging Face dataset)"
    )
