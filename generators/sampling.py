"""Sampling helpers shared by every family: temperature, top-k, top-p, Gumbel sampling with a
`torch.Generator`, and classifier-free guidance in logit space.

Classifier-free guidance (Ho & Salimans 2022) for discrete tokens mixes logits,
`l = l_u + s * (l_c - l_u)`.  The conditional and unconditional halves run as ONE batched
forward: the batch is `[conditional rows; unconditional rows]`, doubled only when guidance is
on (`guided(scale)`), and `mix_guided` splits and mixes the output.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """logits / temperature; temperature 0 means greedy (handled by `sample`)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    return logits if temperature in (0.0, 1.0) else logits / temperature


def top_k_filter(logits: Tensor, k: int | None) -> Tensor:
    """Keep the k largest logits of the last dim (ties with the k-th are kept too); -inf elsewhere."""
    if k is None or k >= logits.shape[-1]:
        return logits
    if k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no filter), got {k}")
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]                  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float | None) -> Tensor:
    """Nucleus filter (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probability sums to at least p; -inf elsewhere."""
    if p is None or p >= 1.0:
        return logits
    if not 0.0 < p:
        raise ValueError(f"top_p must be in (0, 1] (or None for no filter), got {p}")
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.float().softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs                              # mass of strictly more likely tokens
    drop_sorted = mass_before >= p                                          # the first token is always kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)                      # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> Tensor:
    """Temperature, then top-k, then top-p (the order of HF's and LlamaGen's samplers)."""
    return top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)


def gumbel_noise(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard Gumbel samples -log(-log(U)), U ~ U(0, 1) drawn from `generator`."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    # in place, the same six elementwise steps as -log(-log(u)) with clamps: no new (B, N, V)
    # buffer per step (on the CPU a fresh buffer of megabytes is page-faulted in on every draw)
    return u.clamp_min_(tiny).log_().neg_().clamp_min_(tiny).log_().neg_()    # Exp(1), then Gumbel


def sample(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw one token per row of the last dim by the Gumbel-max trick (one `torch.rand` call of
    logits' shape from `generator`).  Returns (ids (...,), log-prob of each id under the filtered
    distribution (...,)).  temperature 0 is greedy (no noise drawn)."""
    logits = logits.float()
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    logp = filtered.log_softmax(dim=-1)
    if temperature == 0:
        ids = filtered.argmax(dim=-1)
    else:
        ids = gumbel_noise(logp.shape, generator=generator, device=logp.device).add_(logp).argmax(dim=-1)
    return ids, logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


# ---------------------------------------------------------------------- classifier-free guidance

def guided(scale: float) -> bool:
    """Whether guidance needs the unconditional half at all (s = 1 is plain conditional sampling)."""
    return scale != 1.0


def cfg_mix(logits_cond: Tensor, logits_uncond: Tensor, scale: float) -> Tensor:
    """l = l_u + s (l_c - l_u), in float32."""
    lc, lu = logits_cond.float(), logits_uncond.float()
    return (lc - lu).mul_(scale).add_(lu)          # = lu + s (lc - lu), one new buffer instead of three


def mix_guided(logits: Tensor, scale: float, doubled: bool) -> Tensor:
    """Output of one batched forward over [cond; uncond] rows -> guided logits for the B rows."""
    if not doubled:
        return logits.float()
    cond, uncond = logits.chunk(2, dim=0)
    return cfg_mix(cond, uncond, scale)


def cfg_constant(scale: float, progress: float) -> float:
    """The same scale at every step."""
    return scale


def cfg_linear(scale: float, progress: float) -> float:
    """Grows linearly from 1 (no guidance) at progress 0 to `scale` at progress 1 (Muse's rising
    guidance; VAR's ratio k / (K - 1))."""
    return 1.0 + (scale - 1.0) * progress


GUIDANCE_SCHEDULES: dict[str, Callable[[float, float], float]] = {"constant": cfg_constant, "linear": cfg_linear}


def guidance_scale(schedule: str, scale: float, progress: float) -> float:
    """The scale at `progress` in [0, 1] of the sampling run."""
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"guidance schedule must be one of {sorted(GUIDANCE_SCHEDULES)}, got {schedule!r}")
    if not math.isfinite(scale):
        raise ValueError(f"cfg_scale must be finite, got {scale}")
    return GUIDANCE_SCHEDULES[schedule](scale, progress)
