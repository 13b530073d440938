"""Learning-rate schedules over the budget (train/schedule.py), alone and inside the trainer."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tokgen.train.engine import TrainConfig, Trainer
from tokgen.train.schedule import ScheduleConfig, budget_scheduler, lr_factor

sys.path.insert(0, str(Path(__file__).parent))
from _ddp_worker import ToyDataset, ToyTask  # noqa: E402  (the test helper beside this file)


def test_warmup_then_cosine_over_steps():
    assert lr_factor(0, 10, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, "cosine", 0.1) == pytest.approx(0.55)   # half way: the mean of 1 and 0.1
    assert lr_factor(100, 10, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(500, 10, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 10, 100, "constant", 0.1) == 1.0
    assert lr_factor(0, 0, 100, "constant", 0.1) == 1.0


def test_the_further_spent_budget_drives_the_cosine():
    # a tenth of the steps but half the minutes: the schedule is half way
    assert lr_factor(19, 10, 100, "cosine", 0.0, time_fraction=0.5) == pytest.approx(0.5)
    # the time fraction never undoes step progress
    assert lr_factor(55, 10, 100, "cosine", 0.0, time_fraction=0.1) == pytest.approx(0.5)
    assert lr_factor(20, 10, 10**9, "cosine", 0.2, time_fraction=1.0) == pytest.approx(0.2)
    assert lr_factor(5, 10, 100, "cosine", 0.0, time_fraction=0.9) == pytest.approx(0.6)  # warm-up first


def test_bad_schedule_settings_are_named():
    with pytest.raises(ValueError, match="lr_schedule"):
        ScheduleConfig(lr_schedule="linear").validate()
    with pytest.raises(ValueError, match="min_lr_ratio"):
        ScheduleConfig(min_lr_ratio=1.5).validate()


class _ScheduledToy(ToyTask):
    """The toy task with its net's learning rate on a budget schedule."""

    def __init__(self, schedule: ScheduleConfig, **kw):
        super().__init__(dropout=0.0, noise=False, **kw)
        self.schedule = schedule

    def configure_optimizers(self, modules, config):
        opt = torch.optim.SGD(modules["net"].parameters(), lr=config.lr)
        return {"net": (opt, budget_scheduler(opt, self.schedule, config.max_steps, self.trainer.time_fraction)),
                "critic": torch.optim.SGD(modules["critic"].parameters(), lr=config.lr)}


def _lr(trainer) -> float:
    return trainer.optimizers["net"].optimizer.param_groups[0]["lr"]


def test_a_time_budget_decays_the_learning_rate_to_its_floor(tmp_path):
    """max_steps is far away; the wall-time budget ends the run and the cosine with it."""
    task = _ScheduledToy(ScheduleConfig(warmup_steps=0, min_lr_ratio=0.1), sleep=0.02)
    config = TrainConfig(out_dir=str(tmp_path), max_steps=10**6, max_minutes=1.0 / 60, batch_size=4, lr=0.1,
                         save_every=0, log_every=1, resume=None, tensorboard=False)
    trainer = Trainer(task, ToyDataset(n=24), config)
    seen = []
    original = trainer._optimizer_step

    def record(*args, **kwargs):
        original(*args, **kwargs)
        seen.append(_lr(trainer))

    trainer._optimizer_step = record
    logs = trainer.fit()
    assert logs["stopped"] == "max_minutes" and 10 <= logs["step"] < 1000
    assert all(a >= b for a, b in zip(seen, seen[1:])), "the learning rate must only fall"
    assert seen[0] > 0.09 and seen[-1] == pytest.approx(0.01, abs=2e-3)


class _Crash(Exception):
    pass


def test_a_step_budget_schedule_resumes_exactly(tmp_path):
    """Without a time budget the schedule is a function of the step: a run cut off after its
    step-3 checkpoint and resumed ends with the weights and learning rate of a run straight through."""
    def run(out, crash_at=None):
        task = _ScheduledToy(ScheduleConfig(warmup_steps=2, min_lr_ratio=0.0))
        if crash_at is not None:
            losses = task.losses

            def crashing(batch, step):
                if step == crash_at:
                    raise _Crash
                return losses(batch, step)
            task.losses = crashing
        config = TrainConfig(out_dir=str(out), max_steps=6, batch_size=4, lr=0.1, save_every=3,
                             log_every=1, resume="auto", tensorboard=False)
        trainer = Trainer(task, ToyDataset(n=24), config)
        trainer.fit()
        return trainer

    straight = run(tmp_path / "a")
    with pytest.raises(_Crash):
        run(tmp_path / "b", crash_at=4)
    resumed = run(tmp_path / "b")
    assert resumed.schedulers["net"].scheduler.last_epoch == straight.schedulers["net"].scheduler.last_epoch == 6
    assert _lr(resumed) == _lr(straight)
    for name in ("net", "critic"):
        for a, b in zip(straight.unwrap(name).parameters(), resumed.unwrap(name).parameters()):
            assert torch.equal(a, b)
