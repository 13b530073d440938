"""The embedded judges: exact, offline readers of generated images.

`judge_for(dataset, image_size, options)` picks the judge that reads a dataset's images, built for
the dataset's options (`num_objects` of shapes); `None` for data that has no judge (photos, your own
folders), where only Frechet-type metrics apply.
"""
from __future__ import annotations


def judge_for(dataset: str, image_size: int, options: dict | None = None):
    if dataset == "shapes":
        from .shapes import ShapesJudge

        return ShapesJudge(image_size=image_size, num_objects=(options or {}).get("num_objects", 1))
    if dataset == "digits":
        from .digits import DigitsJudge

        return DigitsJudge(image_size=image_size)
    return None
