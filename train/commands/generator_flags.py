"""The generator-training flags that train-generator and compare share: the text tokenizer,
previews and validation, the loop (TrainConfig), the optimizer and the learning-rate schedule."""
from __future__ import annotations

import argparse

from .options import add_dataclass_options


def add_training_flags(p: argparse.ArgumentParser, *, defaults: dict, skip: tuple[str, ...] = (),
                       title: str = "") -> None:
    """--text-vocab-size, --preview-n, --val-n and the flags of TrainConfig (less `skip`, with
    `defaults`), OptimConfig and ScheduleConfig."""
    from ..engine import TrainConfig
    from ..schedule import ScheduleConfig
    from ..tasks.generator import OptimConfig

    p.add_argument("--text-vocab-size", type=int, default=512, help="BPE vocabulary for --condition text")
    p.add_argument("--preview-n", type=int, default=8, help="val conditions in each sample grid")
    p.add_argument("--val-n", type=int, default=256, help="val items in the validation loss (0 = none)")
    add_dataclass_options(p, TrainConfig, skip=skip, defaults=defaults, title=f"training (TrainConfig){title}")
    add_dataclass_options(p, OptimConfig, title=f"optimizer: AdamW (OptimConfig){title}")
    add_dataclass_options(p, ScheduleConfig,
                          title=f"learning rate: warm-up, then decay over the budget (ScheduleConfig){title}")
