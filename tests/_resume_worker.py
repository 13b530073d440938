"""A training run for the tests that stop a run from outside (SIGTERM, SIGINT, kill -9):

    python tests/_resume_worker.py OUT_DIR MAX_STEPS SAVE_EVERY SLEEP

trains exactly what tests/test_checkpoint.py's `run` trains in-process (ToyTask with dropout and
RNG noise, EMA, two optimizers), sleeping SLEEP seconds per micro-batch so a test can catch it.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import torch  # noqa: E402

from test_checkpoint import run  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    out, steps, save_every, sleep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    run(out, steps, resume="auto", save_every=save_every, sleep=sleep)
