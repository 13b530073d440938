"""What machine a run ran on, and how fast it multiplies: the context every wall time needs.

Wall times differ between machines of the same kind (an AMX Xeon runs the demo in a fraction of
an AVX2 EPYC's time, and a shared host varies from minute to minute), so every reported time
comes with the CPU, its instruction set and the float32 matmul rate measured in the same run.
Two runs' times compare through the ratio of their rates.
"""
from __future__ import annotations

import datetime
import platform
import statistics
import time
from pathlib import Path

import torch

# The rate's workload: a (2048 x 256) @ (256 x 1024) float32 matmul, the size of a small
# transformer's projections over a batch of tokens.
MATMUL_SHAPE = (2048, 256, 1024)


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor() or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# The rate's GEMM: square, large enough that a 2-core AVX2 CPU spends ~0.1 s on it (17 GFLOP),
# so the kernel runs at its sustained rate rather than its start-up cost.
RATE_SHAPE = (2048, 2048, 2048)
RATE_RUNS = 5
# A dtype this device emulates (bfloat16 without AVX512-BF16/AMX: ~1 GFLOP/s) would take minutes
# at RATE_SHAPE; one GEMM slower than this at the probe size keeps the rate measured there.
SLOW_PROBE_S = 0.05
PROBE_SHAPE = (512, 512, 512)


def matmul_rate(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                shape: tuple[int, int, int] = RATE_SHAPE, runs: int = RATE_RUNS) -> dict:
    """GFLOP/s of an (m x k) @ (k x n) matmul, `shape` = (m, k, n), in `dtype` on the current
    thread count: the median of `runs` timed GEMMs after one warm-up.  A dtype this device runs
    slowly is measured at PROBE_SHAPE instead (the `shape` field says which)."""
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def times(mkn: tuple[int, int, int], count: int) -> list[float]:
        m, k, n = mkn
        g = torch.Generator().manual_seed(0)
        a = torch.randn(m, k, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(k, n, generator=g).to(device=device, dtype=dtype)
        out = []
        for i in range(count + 1):                      # the first is a warm-up
            sync()
            start = time.perf_counter()
            a @ b
            sync()
            if i:
                out.append(time.perf_counter() - start)
        return out

    probe = times(PROBE_SHAPE, 1)
    mkn, ts = (PROBE_SHAPE, probe) if probe[0] > SLOW_PROBE_S else (tuple(shape), times(tuple(shape), runs))
    flop = 2 * mkn[0] * mkn[1] * mkn[2]
    return {"dtype": str(dtype).removeprefix("torch."), "gflops": flop / statistics.median(ts) / 1e9,
            "shape": list(mkn), "runs": len(ts), "threads": torch.get_num_threads(),
            "spread_gflops": [flop / max(ts) / 1e9, flop / min(ts) / 1e9]}


def fp32_matmul_gflops(iterations: int = 20, shape: tuple[int, int, int] = MATMUL_SHAPE,
                       device: torch.device | str = "cpu") -> float:
    """GFLOP/s of float32 matmuls of `shape` (m, k, n) on the current thread count (the median of
    `iterations` after a warm-up): the machine's usable matmul rate at this moment (a loaded host
    reads lower; measure at the start and the end of a long run)."""
    return round(matmul_rate(torch.float32, device, shape=shape, runs=iterations)["gflops"], 1)


def describe(device: torch.device | str = "cpu", *, rate: bool = True) -> dict:
    """The machine as a dict for results files: torch, threads, CPU model and instruction set,
    the GPU where the device is one, the date, and (rate=True) the float32 matmul rate."""
    device = torch.device(device)
    info = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "device": str(device), "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if rate:
        info["fp32_matmul_gflops"] = fp32_matmul_gflops(device=device)
        info["matmul_shape"] = list(MATMUL_SHAPE)
    return info
