"""Which process this is, read from the launcher's environment (`accelerate launch` and torchrun
set RANK and WORLD_SIZE) rather than from an Accelerator's state: the jobs need these answers
before, between and after the trainers that build one."""
from __future__ import annotations

import os


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def wait_for_everyone() -> None:
    """Under several processes: each waits here until all have arrived (one writes, the others read)."""
    if world_size() > 1:
        from accelerate.state import PartialState

        PartialState().wait_for_everyone()
