"""A tiny task for the engine's tests, and the script the 2-process test launches.

    accelerate launch --multi_gpu --num_processes 2 tests/_ddp_worker.py OUT_DIR BATCH_SIZE STEPS

trains `ToyTask` (deterministic: no dropout, no noise) on `ToyDataset` and leaves the final
checkpoint (weights as safetensors) and log.jsonl in OUT_DIR for the test to compare.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tokgen.train.engine import TrainConfig, Trainer, TrainTask  # noqa: E402


class ToyDataset(Dataset):
    """Regression items y = x W + 0.1 noise; the item depends only on its index and the seed."""

    def __init__(self, n: int = 22, dim: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        w = torch.randn(dim, 2, generator=g)
        self.y = self.x @ w + 0.1 * torch.randn(n, 2, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": i}


class ToyTask(TrainTask):
    """An MLP "net" fitted to y, plus a "critic" trained from step `critic_start` on the net's
    detached output (two optimizers, independent graphs, one that sits out at first).

    dropout and noise draw from the torch, python and numpy RNGs, to test that resume restores them.
    nan_at: steps whose net loss is NaN; poison_at: step at which on_interval writes NaN weights.
    """

    def __init__(self, dim=4, hidden=16, dropout=0.1, noise=True, critic_start=2, scheduler=True,
                 nan_at=(), poison_at=None, sleep=0.0, init_seed=0):
        torch.manual_seed(init_seed)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 2))
        self.critic = nn.Linear(2, 2)
        self.noise, self.critic_start, self.scheduler = noise, critic_start, scheduler
        self.nan_at, self.poison_at, self.sleep = set(nan_at), poison_at, sleep
        self.intervals: list[int] = []
        self.seen_indices: list[list[int]] = []

    def trainable_modules(self):
        return {"net": self.net, "critic": self.critic}

    def configure_optimizers(self, modules, config):
        opt = torch.optim.AdamW(modules["net"].parameters(), lr=config.lr, weight_decay=0.01)
        critic_opt = torch.optim.SGD(modules["critic"].parameters(), lr=config.lr, momentum=0.9)
        if not self.scheduler:
            return {"net": opt, "critic": critic_opt}
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.1 * s))
        return {"net": (opt, sched), "critic": critic_opt}

    def losses(self, batch, step):
        if self.sleep:
            import time

            time.sleep(self.sleep)
        self.seen_indices.append(batch["index"].tolist())
        m = self.trainer.modules
        pred = m["net"](batch["x"])
        loss = nn.functional.mse_loss(pred, batch["y"])
        if self.noise:  # draws from python's and numpy's RNG
            loss = loss * (1 + 0.01 * random.random() + 0.01 * float(np.random.rand()))
        if step in self.nan_at:
            loss = loss * float("nan")
        critic = None
        if step >= self.critic_start:
            critic = nn.functional.mse_loss(m["critic"](pred.detach()), batch["y"])
        return {"net": loss, "critic": critic}, {"mse": nn.functional.mse_loss(pred.detach(), batch["y"])}

    def on_interval(self, step):
        self.intervals.append(step)
        if step == self.poison_at:
            self.trainer.unwrap("net")[0].weight.fill_(float("nan"))


def make_trainer(out_dir: str, batch_size: int, steps: int) -> Trainer:
    """The deterministic run both sides of the 2-process test make (no dropout, no noise)."""
    task = ToyTask(dropout=0.0, noise=False, scheduler=True)
    config = TrainConfig(out_dir=out_dir, max_steps=steps, batch_size=batch_size, lr=0.05, grad_clip=1.0,
                         ema_decay=0.9, log_every=1, save_every=0, resume=None, tensorboard=False, cpu=True)
    return Trainer(task, ToyDataset(n=24), config)


def main(out_dir: str, batch_size: int, steps: int) -> None:
    torch.set_num_threads(1)
    make_trainer(out_dir, batch_size, steps).fit()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
