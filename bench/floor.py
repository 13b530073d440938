"""The kernel floor of a timed workload: its own matmul, convolution and attention calls, replayed
alone, back to back, on random data.

The arithmetic limit (limits.py) prices every FLOP at the rate of a large square GEMM.  The calls
a sampler really makes are often far from that shape: one AR decoding step at batch 8 multiplies
8 rows by each 256 x 1024 weight, and CPU flash attention at head dim 32 is not a GEMM.  On the
same machine those run several times below the square-GEMM rate whatever code calls them (on a
2-core AVX2 EPYC, 2026-12-02: 40-60 GFLOP/s at 8 rows against 116 at 2048^2).  The floor
measures what they cost:

    floor_s = the recorded calls, replayed in their order with the same shapes, strides and
              dtypes, each storage the workload used (a weight, the KV cache, an activation)
              stood in for by one random buffer, so that weights cycle through the caches as
              they do in the model.

So ours / floor is the share of our time that is not kernel time (Python, dispatch, element-wise
work, sampling), and floor / limit is what the kernels themselves leave at these shapes.  The
floor is no hard bound either: a different split of the same work into kernels (fusion, another
library) can go below it.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# the kernels the floor replays: the ops FlopCounterMode counts, forward and backward (composite
# ops such as linear are seen whole under inference mode, decomposed into mm/addmm under autograd)
KERNELS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "conv1d", "conv2d", "convolution",
           "convolution_backward", "_convolution", "einsum"}


def _is_kernel(func) -> bool:
    name = func.overloadpacket.__name__
    return name in KERNELS or "scaled_dot_product" in name


class _Tensor:
    """A recorded tensor argument: where it lives (its storage, by address) and how it is viewed."""
    __slots__ = ("key", "shape", "stride", "offset", "dtype")

    def __init__(self, t: torch.Tensor):
        self.key = (t.untyped_storage().data_ptr(), t.dtype, t.device)
        self.shape, self.stride, self.offset, self.dtype = tuple(t.shape), t.stride(), t.storage_offset(), t.dtype

    def extent(self) -> int:
        """Elements of the storage this view reaches."""
        if any(s == 0 for s in self.shape):
            return self.offset
        return self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1


class KernelRecorder(TorchDispatchMode):
    """Records every kernel call (see KERNELS) that runs inside it, in order, without changing it."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_kernel(func):
            wrap = lambda a: _Tensor(a) if isinstance(a, torch.Tensor) else \
                [wrap(x) for x in a] if isinstance(a, (list, tuple)) else a  # noqa: E731
            self.calls.append((func, tuple(wrap(a) for a in args), {k: wrap(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def record_kernels(fn: Callable[[], object]) -> list:
    """Run fn() once and return its kernel calls (func, args, kwargs), tensors as _Tensor records."""
    recorder = KernelRecorder()
    with recorder:
        fn()
    return recorder.calls


def _leaves(x):
    if isinstance(x, _Tensor):
        yield x
    elif isinstance(x, list):
        for item in x:
            yield from _leaves(item)


def _buffers(calls: list) -> dict:
    """One random buffer per recorded storage, large enough for every view of it."""
    need: dict = {}
    for _, args, kwargs in calls:
        for leaf in (t for a in (*args, *kwargs.values()) for t in _leaves(a)):
            need[leaf.key] = max(need.get(leaf.key, 0), leaf.extent())
    buffers = {}
    for (ptr, dtype, device), n in need.items():
        if dtype == torch.bool:          # attention masks: all True (every query sees every key)
            buffers[(ptr, dtype, device)] = torch.ones(max(n, 1), dtype=dtype, device=device)
        elif dtype.is_floating_point:
            buffers[(ptr, dtype, device)] = torch.randn(max(n, 1), device=device).mul_(0.05).to(dtype)
        else:
            buffers[(ptr, dtype, device)] = torch.zeros(max(n, 1), dtype=dtype, device=device)
    return buffers


def _materialise(x, buffers: dict):
    if isinstance(x, _Tensor):
        return buffers[x.key].as_strided(x.shape, x.stride, x.offset)
    if isinstance(x, list):
        return [_materialise(item, buffers) for item in x]
    return x


def replay_seconds(calls: list, device: torch.device, repeats: int = 3) -> float:
    """Median seconds of one replay of `calls` (after one untimed replay)."""
    if not calls:
        return 0.0
    buffers = _buffers(calls)
    ready = [(func, tuple(_materialise(a, buffers) for a in args), {k: _materialise(v, buffers) for k, v in kwargs.items()})
             for func, args, kwargs in calls]
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            for func, args, kwargs in ready:
                func(*args, **kwargs)
            _sync(device)
            if i:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor_seconds(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """The kernel floor of fn(): record its kernel calls once, replay them alone (median)."""
    return replay_seconds(record_kernels(fn), device, repeats)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
