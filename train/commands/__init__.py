"""One module per `tokgen` command (see train/cli.py), and the process facts they share."""
from __future__ import annotations

import os


# The launcher's environment (accelerate launch / torchrun set RANK and WORLD_SIZE) is read
# rather than an Accelerator's state: commands need these answers before, between and after the
# trainers that build one.
def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
