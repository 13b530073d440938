"""What machine a run ran on, and how fast it multiplies: the context every wall time needs.

Wall times differ between machines of the same kind (an AMX Xeon runs the demo in a fraction of
an AVX2 EPYC's time, and a shared host varies from minute to minute), so every reported time
comes with the CPU, its instruction set and the float32 matmul rate measured in the same run.
Two runs' times compare through the ratio of their rates.
"""
from __future__ import annotations

import datetime
import platform
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


def fp32_matmul_gflops(iterations: int = 20, shape: tuple[int, int, int] = MATMUL_SHAPE,
                       device: torch.device | str = "cpu") -> float:
    """GFLOP/s of `iterations` back-to-back float32 matmuls of `shape` (m, k, n) on the current
    thread count, after 3 warm-up ones: the machine's usable matmul rate at this moment (a loaded
    host reads lower; measure at the start and the end of a long run)."""
    m, k, n = shape
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(device)
    b = torch.randn(k, n, generator=g).to(device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        a @ b
    sync()
    return round(2 * m * k * n * iterations / (time.perf_counter() - start) / 1e9, 1)


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
