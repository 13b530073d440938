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


def process_index() -> int:
    return int(os.environ.get("RANK", "0"))


def process_device(device=None):
    """Where this process samples and evaluates: `device` as given (a bare "cuda" under several
    processes: this process's own GPU, cuda:LOCAL_RANK); None: cuda (this process's GPU) when
    available, else the CPU."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and world_size() > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


_GLOO = []


def _object_group():
    """A gloo group over every process for python objects (features, scores, timings): they stay
    in CPU memory whatever the training backend (nccl would copy them onto a GPU first).  The
    process group is brought up from the launcher's environment (accelerate's PartialState) where
    no Trainer has done so yet, e.g. when every family was loaded rather than trained."""
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate.state import PartialState

        PartialState()
    if not _GLOO:
        _GLOO.append(dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo"))
    return _GLOO[0]


def gather_to_main(obj):
    """`obj` of every process, as a list in process order, on the main process; None on the
    others (a collective: every process must call it, in the same order).  One process: [obj]."""
    if world_size() == 1:
        return [obj]
    import torch.distributed as dist

    group = _object_group()
    out = [None] * world_size() if is_main_process() else None
    dist.gather_object(obj, out, dst=0, group=group)
    return out


def barrier() -> None:
    """Every process waits here until all have arrived (no-op for one process), on the object
    group: a start line for timing a distributed draw."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier(group=_object_group())
