"""Datasets: the embedded ones (shapes, digits, photos) and the user's own (image folders,
Hugging Face datasets), all with the same item format (see CONTRIBUTING.md).

`build_dataset(name, split, image_size, ...)` is the one entry point the commands use:

    shapes            procedurally drawn shapes with captions (default 32 px; options:
                      num_objects=1|2, seed)
    digits            scikit-learn's handwritten digits, upscaled (16 or 32 px)
    photos            crops of the photographs bundled with scikit-learn / scikit-image
    folder:PATH       an image folder (one sub-folder per class optional)
    hf:NAME_OR_PATH   a Hugging Face dataset by hub name or local path (downloads only if you
                      name a hub dataset); streaming=True streams it instead (an IterableDataset:
                      no length, not for the trainer or extract-tokens)

Folder and Hugging Face datasets decode lazily in `__getitem__` and take augment="none" | "flip" |
"crop" | "crop_flip" (crop_ratio=1.1, seed=0); see tokgen/data/folder.py.  Their bad files are
skipped and recorded, and `dataset.report_skipped()` warns about them (call it at the end of
training / extraction).  `default_num_workers` says how many DataLoader workers to give them.
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
        from .hf import HFImageDataset, HFStreamingDataset

        if options.pop("streaming", False):
            return HFStreamingDataset(arg, split=split, image_size=size, **options)
        return HFImageDataset(arg, split=split, image_size=size, **options)
    raise ValueError(
        f"unknown dataset {name!r}: use one of {', '.join(EMBEDDED)}, folder:PATH (an image "
        "folder) or hf:NAME_OR_PATH (a Hugging Face dataset)"
    )


def default_num_workers(dataset, device="cpu", num_processes: int = 1) -> int:
    """DataLoader workers per training process for `dataset` on `device`.

    0 for datasets held in memory (shapes, digits, photos, token folders: a worker costs more
    than it saves, and the trainer starts its workers afresh every epoch); for datasets that
    decode files (`dataset.decodes_files`): on an accelerator, the cores this process may use
    (the machine's, shared by num_processes ranks) less one for the training loop, at most 8;
    on the CPU, where the training step needs the cores too, a quarter of them, at most 4
    (0 on a machine with fewer than 4 cores per process).
    """
    import os

    import torch

    if not getattr(dataset, "decodes_files", False):
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    per_process = max(1, cores // max(1, num_processes))
    if torch.device(device).type == "cpu":
        return min(4, per_process // 4)
    return max(1, min(8, per_process - 1))
