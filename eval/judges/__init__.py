"""The embedded judges: exact, offline readers of generated images.

`judge_for(dataset, image_size)` picks the judge that reads a dataset's images; `None` for data
that has no judge (photos, your own folders), where only Frechet-type metrics apply.
"""
from __future__ import annotations


def judge_for(dataset: str, image_size: int, num_objects: int = 1):
    if dataset == "shapes":
        from .shapes import ShapesJudge

        return ShapesJudge(image_size=image_size, num_objects=num_objects)
    if dataset == "digits":
        from .digits import DigitsJudge

        return DigitsJudge(image_size=image_size)
    return None
