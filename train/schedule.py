"""Learning-rate schedules that follow the training budget, steps or wall-clock minutes.

A cosine decay only helps if it reaches its end when training does.  With a step budget that is
`max_steps`; with a wall-time budget (`--max-minutes`) the number of steps is unknown in advance,
so the schedule follows whichever budget is further spent: progress = max(steps done / max_steps,
minutes spent / max_minutes).  The time fraction is agreed by all processes in the trainer's
per-step collective, so every process sets the same learning rate.  With only a step budget the
schedule is a pure function of the step, and resuming reproduces it exactly.

Warm-up is linear over the first `warmup_steps` optimizer steps (Goyal et al. 2017); the cosine
(Loshchilov & Hutter, "SGDR", ICLR 2017) runs from 1 to `min_lr_ratio` over the rest of the budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

LR_SCHEDULES = ("cosine", "constant")


@dataclass
class ScheduleConfig:
    warmup_steps: int = 100          # linear learning-rate warm-up from 0 over this many optimizer steps
    lr_schedule: str = "cosine"      # after warm-up: "cosine" decay to min_lr_ratio * lr when the budget (steps or minutes) is spent, or "constant"
    min_lr_ratio: float = 0.1        # cosine: the final learning rate as a fraction of lr

    def validate(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"need warmup_steps >= 0 and min_lr_ratio in [0, 1], got "
                             f"{self.warmup_steps} and {self.min_lr_ratio}")


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float,
              time_fraction: float = 0.0) -> float:
    """Multiplier of the base learning rate after `step` optimizer steps: linear warm-up, then
    constant or a cosine from 1 down to min_ratio when `total` steps are done or `time_fraction`
    (the share of the wall-time budget spent, 0 without one) reaches 1, whichever comes first."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    by_steps = (step - warmup) / (total - warmup) if total > warmup else 1.0
    progress = min(1.0, max(by_steps, time_fraction))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def budget_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig, max_steps: int,
                     time_fraction: Callable[[], float]) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR for `optimizer` following `config` over the budget.  `time_fraction` is read at
    every scheduler step (the trainer's `time_fraction`); the closure is not saved in checkpoints,
    the step count and the optimizer's current learning rate are."""
    config.validate()
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.warmup_steps, max_steps, config.lr_schedule,
                                          config.min_lr_ratio, time_fraction()))
