"""Kernel time: how long a timed call's matmul, convolution and attention kernels ran inside it.

The arithmetic limit (limits.py) prices every FLOP at the rate of a large square GEMM.  The calls
a sampler really makes are often far from that shape: an AR step at batch 8 multiplies 8 rows by
each 256 x 1024 weight, and CPU flash attention at head dim 32 is not a GEMM.  On one machine
those run several times below the square-GEMM rate whatever code calls them (a 2-core AVX2 EPYC,
2026-12-02: 40-60 GFLOP/s at 8 rows against 116-175 for 2048^2).  So the bench also measures

    kernel_s = the time the call spent inside those kernels, summed from torch.profiler's
               time of each kernel op (mm, addmm, bmm, baddbmm, the attention kernels, the
               convolutions, and their backward ops) with what it calls itself (addmm's copy of
               the bias into its output is part of addmm), in one untimed run of the call.

It is measured in place, so the kernels see the caches and the memory the model leaves them.
ours / kernel_s is then how much of our time is not kernel time (Python and dispatch, element-wise
work, sampling): what removing every overhead could gain at most; kernel_s / limit is how far the
kernels themselves are from the square-GEMM rate at these shapes, which only other kernels (fused,
batched differently, another library) can change.  On CUDA the kernels' device time is summed.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

# composite ops: their self time is dispatch (the kernel they call is counted on its own)
_COMPOSITE = {"aten::linear", "aten::matmul", "aten::einsum", "aten::scaled_dot_product_attention",
              "aten::conv1d", "aten::conv2d", "aten::convolution", "aten::_convolution"}
_KERNELS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::mkldnn_convolution",
            "aten::convolution_backward", "aten::cudnn_convolution", "aten::_slow_conv2d_forward",
            "aten::_slow_conv2d_backward"}


def is_kernel(name: str) -> bool:
    """Whether a profiler event named `name` is a matmul, convolution or attention kernel."""
    if name in _COMPOSITE:
        return False
    return name in _KERNELS or ("scaled_dot_product" in name or "flash_attention" in name
                                or "efficient_attention" in name) and name.startswith("aten::")


def kernel_time(fn: Callable[[], object], device: torch.device) -> dict:
    """Run fn() once under torch.profiler: {"kernel_s": seconds inside the kernels, "calls": how
    many kernel calls, "by_op": {op: seconds}}.  CPU: each kernel op's time on the calling thread,
    with the ops it calls (one called by another kernel op counts inside that one); CUDA: the
    device time of the kernels it launched."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities)
    with _quiet_stderr():
        prof.start()
    try:
        fn()
        if cuda:
            torch.cuda.synchronize(device)
    finally:
        with _quiet_stderr():
            prof.stop()
    by_op: dict[str, float] = {}
    calls = 0
    for event in prof.events():
        if is_kernel(event.name) and not _inside_kernel(event):
            micros = event.device_time_total if cuda else event.cpu_time_total
            op = event.name.removeprefix("aten::")
            by_op[op] = by_op.get(op, 0.0) + micros / 1e6
            calls += 1
    return {"kernel_s": sum(by_op.values()), "calls": calls, "by_op": by_op}


def _inside_kernel(event) -> bool:
    """Whether a profiler event runs inside another kernel op (counted there already)."""
    parent = event.cpu_parent
    while parent is not None:
        if is_kernel(parent.name):
            return True
        parent = parent.cpu_parent
    return False


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null: the profiler's C++ side writes a line there when it starts
    and stops, in the middle of the bench's progress lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
