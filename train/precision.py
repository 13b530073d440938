"""Which floating-point precision to compute in, chosen per device: the one place every command
(training, sampling, token extraction, the benchmark) turns a precision flag into a choice.

    choice = resolve_precision("auto", torch.device("cpu"))    # Choice(chosen="bf16" | "fp32", why=...)
    with autocast(choice, device):                              # bf16/fp16 autocast, or nothing for fp32
        ...
    Accelerator(mixed_precision=choice.accelerate_mixed_precision)

"auto" picks bfloat16 where the device runs it fast and float32 elsewhere, because bfloat16 on a
CPU without native support (AVX2-only, many AMD EPYC and laptop parts) is emulated and makes
matmuls 100-300x slower. CUDA: bf16 where the device supports it natively. CPU: bf16 only when
the CPU reports native bfloat16 (Linux /proc/cpuinfo: amx_bf16 or avx512_bf16) *and* a short
matmul probe (once per process) finds it at least MIN_SPEEDUP times faster than float32: the
flags alone are not enough, since the kernels may still be limited to an older instruction set
(ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY). Where the flags are unknown (not Linux) the probe
alone decides. An explicit "bf16" is honoured everywhere but warns once where it is slow; "fp16"
needs CUDA. "no" is accepted as "fp32" (the old --mixed-precision vocabulary).

TOKGEN_CPU_BF16=1 or 0 forces the CPU answer without reading flags or timing anything (the test
suite sets 0, so that its numbers do not depend on the machine); tests may also monkeypatch
`cpu_bf16_flags` / `probe_bf16_matmul` and call `clear_cache()`.
"""
from __future__ import annotations

import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "CHOICES", "SAMPLING_CHOICES", "Choice", "resolve_precision", "autocast",
           "cpu_bf16_flags", "probe_bf16_matmul", "clear_cache"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ALIASES = {"no": "fp32"}                          # accelerate's word for full precision
CHOICES = PRECISIONS + tuple(ALIASES)             # what a --mixed-precision flag accepts
SAMPLING_CHOICES = ("auto", "fp32", "bf16")       # forwards only (sampling, likelihoods, encoding)
MIN_SPEEDUP = 1.3                                 # bf16 must beat float32 by this much for auto to pick it
FORCE_ENV = "TOKGEN_CPU_BF16"
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class Choice:
    requested: str                  # "auto" | "fp32" | "bf16" | "fp16" ("no" is stored as "fp32")
    chosen: str                     # "fp32" | "bf16" | "fp16"
    why: str                        # a short sentence, for logs and reports
    device: str = "cpu"
    probe: dict | None = field(default=None, compare=False)  # measured GFLOP/s, where the probe ran
    source: str = field(default="", compare=False)  # where `requested` came from (the trainer fills it: a flag, ACCELERATE_MIXED_PRECISION, auto)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.chosen]

    @property
    def accelerate_mixed_precision(self) -> str:
        """The same choice in accelerate's words: "no" | "bf16" | "fp16"."""
        return _ACCELERATE[self.chosen]

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.chosen} ({'auto: ' if self.requested == 'auto' else ''}{self.why})"


def resolve_precision(requested: str, device: torch.device | str, flag: str = "--precision") -> Choice:
    """The precision to run `requested` in on `device`; `flag` names the option in messages."""
    device = torch.device(device)
    name = ALIASES.get(str(requested).lower(), str(requested).lower())
    if name not in PRECISIONS:
        raise ValueError(f"{flag} {requested!r}: choose one of {', '.join(CHOICES)} ('no' = fp32)")

    def make(chosen: str, why: str, probe: dict | None = None) -> Choice:
        return Choice(name, chosen, why, str(device), probe)

    if name == "fp32":
        return make("fp32", "requested")
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        if name == "auto":
            return make("bf16", "CUDA device supports bfloat16") if native else \
                make("fp32", "CUDA device without native bfloat16")
        if name == "bf16" and not native:
            _warn_once(f"{flag} bf16: this CUDA device has no native bfloat16 (emulated, slow); "
                       f"pass {flag} fp32 or auto")
            return make("bf16", "requested, though the CUDA device has no native bfloat16")
        return make(name, "requested")
    if device.type != "cpu":                      # mps, xpu, ...: no check of our own, so no guess
        return make(name, "requested") if name != "auto" else \
            make("fp32", f"no bfloat16 check for {device.type} devices")
    if name == "fp16":
        raise ValueError(f"{flag} fp16 needs a CUDA device (float16 on a CPU is slow and needs a loss "
                         f"scaler): pass {flag} bf16, fp32 or auto")
    fast, why, probe = _cpu_bf16(measure=name == "bf16")
    if name == "auto":
        return make("bf16" if fast else "fp32", why, probe)
    if not fast:
        _warn_once(f"{flag} bf16: {why}; pass {flag} fp32 (or auto)")
        return make("bf16", f"requested, though {why}", probe)
    return make("bf16", "requested", probe)


def autocast(precision: Choice | str, device: torch.device | str):
    """A context computing in `precision` on `device`: bf16/fp16 autocast, or nothing for fp32.
    A string is resolved first ("auto", "bf16", ...)."""
    device = torch.device(device)
    choice = precision if isinstance(precision, Choice) else resolve_precision(precision, device)
    if choice.chosen == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=choice.dtype)


# ---------------------------------------------------------------------------- the CPU's answer

def cpu_bf16_flags() -> list[str] | None:
    """The native-bfloat16 flags this CPU reports (amx_bf16, avx512_bf16): [] when it reports
    none, None where that is unknown (no /proc/cpuinfo, or no x86 flags line in it)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return sorted(set(line.partition(":")[2].split()) & {"amx_bf16", "avx512_bf16"})
    return None


def probe_bf16_matmul(shape: tuple[int, int, int] = (512, 512, 512), rounds: int = 10,
                      budget_s: float = 0.05) -> dict:
    """GFLOP/s of a float32 and a bfloat16 (m x k) @ (k x n) matmul on the current thread count.
    Each dtype runs up to `rounds` times, until it has used half of `budget_s`, and keeps its best
    time (load from other processes only ever slows a run down); the rounds alternate the two, so
    both see the same load. Emulated bfloat16 (~2.5 GFLOP/s: ~0.1 s a matmul) thus runs once,
    its one-time set-up included, which only makes a slow result look slower."""
    m, k, n = shape
    g = torch.Generator().manual_seed(0)
    operands = {dt: (torch.randn(m, k, generator=g).to(dt), torch.randn(k, n, generator=g).to(dt))
                for dt in (torch.float32, torch.bfloat16)}
    operands[torch.float32][0] @ operands[torch.float32][1]     # warm-up: float32 is cheap everywhere
    times: dict = {dt: [] for dt in operands}
    for _ in range(rounds):
        for dt, (a, b) in operands.items():
            if sum(times[dt]) < budget_s / 2:
                t = time.perf_counter()
                a @ b
                times[dt].append(time.perf_counter() - t)
    best = {dt: min(ts) for dt, ts in times.items()}
    flops = 2 * m * k * n
    fp32, bf16 = flops / best[torch.float32] / 1e9, flops / best[torch.bfloat16] / 1e9
    sig = lambda x: float(f"{x:.4g}")             # noqa: E731  (4 significant digits: never 0)
    return {"shape": list(shape), "threads": torch.get_num_threads(), "fp32_gflops": sig(fp32),
            "bf16_gflops": sig(bf16), "speedup": sig(bf16 / fp32), "isa": torch.backends.cpu.get_cpu_capability()}


_probe_cache: dict | None = None
_warned: set[str] = set()


def clear_cache() -> None:
    """Forget the probe's measurement and which warnings were given (tests)."""
    global _probe_cache
    _probe_cache = None
    _warned.clear()


def _measured() -> dict:
    global _probe_cache
    if _probe_cache is None:
        _probe_cache = probe_bf16_matmul()
    return _probe_cache


def _cpu_bf16(measure: bool) -> tuple[bool, str, dict | None]:
    """(does this CPU run bfloat16 fast, why, the probe's figures). `measure`: probe even when the
    flags already say no, to put a figure on the slowdown (an explicit bf16 request)."""
    forced = os.environ.get(FORCE_ENV)
    if forced in ("0", "1"):
        return forced == "1", f"{FORCE_ENV}={forced}", None
    flags = cpu_bf16_flags()
    if flags == [] and not measure:
        return False, "CPU without native bfloat16", None
    probe = _measured()
    speedup, isa = probe["speedup"], probe["isa"]
    if flags != [] and speedup >= MIN_SPEEDUP:
        has = f"CPU with {', '.join(flags)}" if flags else "CPU"
        return True, f"{has}: bfloat16 matmul measured {speedup:.1f}x faster than float32", probe
    ratio = f"{1 / speedup:.0f}x slower" if speedup < 1 else f"only {speedup:.2f}x faster"
    why = f"bfloat16 matmul measured {ratio} than float32 on this CPU ({isa})"
    if flags:
        why += f" despite its {', '.join(flags)} flags"
    elif flags == []:
        why = f"CPU without native bfloat16: {why}"
    return False, why, probe


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)
