"""Mask schedules gamma(r): the fraction of tokens masked at progress r in [0, 1], with
gamma(0) = 1 (all masked) and gamma(1) = 0 (none).  MaskGIT (Chang et al., CVPR 2022, Sec. 3.3
and its `mask_schedule.py`) trains with gamma(r), r ~ U(0, 1), and decodes keeping
floor(N gamma((t+1)/T)) tokens masked after step t; D3PM's absorbing chain masks gamma(1 - t/T)
of the tokens at step t (linear for beta_t = 1 / (T - t + 1)).

Discrete diffusion (D3PM) keeps a token with probability alpha_bar_t after t forward steps;
`diffusion_alpha_bar` gives alpha_bar_0..T for the schedules in DIFFUSION_SCHEDULES.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


def _pow(exponent: float) -> Callable[[Tensor], Tensor]:
    return lambda r: 1.0 - r ** exponent


_SCHEDULES: dict[str, Callable[[Tensor], Tensor]] = {
    "cosine": lambda r: torch.cos(math.pi / 2 * r),   # MaskGIT's default
    "linear": lambda r: 1.0 - r,
    "square": _pow(2.0),
    "cubic": _pow(3.0),
    "sqrt": _pow(0.5),
}
MASK_SCHEDULES = (*_SCHEDULES, "pow<p>", "log", "exp")


def mask_ratio(schedule: str, r: Tensor | float, total: int | Tensor | None = None) -> Tensor:
    """gamma(r) for `schedule` in MASK_SCHEDULES ("pow2.5" = 1 - r^2.5); "log" and "exp" (MaskGIT's
    -log2(r)/log2(N) and 1 - 2^(-log2(N)(1 - r))) need the token count `total`: an int, or a tensor
    of per-row counts (broadcast against r), as MaskGIT's `mask_schedule.schedule` takes
    `total_unknown` per row.  Clipped to [0, 1]."""
    r = torch.as_tensor(r, dtype=torch.float64)
    if schedule in _SCHEDULES:
        out = _SCHEDULES[schedule](r)
    elif schedule.startswith("pow"):
        try:
            out = _pow(float(schedule[3:]))(r)
        except ValueError:
            raise ValueError(f"a pow schedule needs an exponent, e.g. 'pow2' or 'pow0.5', got {schedule!r}") from None
    elif schedule in ("log", "exp"):
        tot = None if total is None else torch.as_tensor(total, dtype=torch.float64)
        if tot is None or tot.numel() == 0 or bool((tot < 2).any()):
            raise ValueError(f"the {schedule!r} schedule needs the token count `total` >= 2")
        lg = torch.log2(tot)
        out = -torch.log2(r.clamp_min(1e-12)) / lg if schedule == "log" else 1.0 - torch.exp2(-lg * (1.0 - r))
    else:
        raise ValueError(f"unknown mask schedule {schedule!r}: use one of {MASK_SCHEDULES}")
    out = torch.where(r <= 0, torch.ones_like(out), torch.where(r >= 1, torch.zeros_like(out), out))   # exact ends
    return out.clamp(0.0, 1.0)


def check_schedule(schedule: str) -> None:
    """Fail early (e.g. in a config) on a schedule name mask_ratio would reject."""
    mask_ratio(schedule, 0.5, total=16)


def num_masked_for_training(schedule: str, r: Tensor, total: int) -> Tensor:
    """ceil(gamma(r) N) clamped to [1, N] (at least one token to learn from), for r (B,)."""
    n = torch.ceil(mask_ratio(schedule, r, total) * total - 1e-9).long()
    return n.clamp(1, total)


def planned_masked(schedule: str, steps: int, unknown: Tensor) -> Tensor:
    """floor(N gamma((t+1)/T)) for every step t of `steps`, per row: (steps, B) long on `unknown`'s
    device, computed once per decode (one host read of the fixed counts N, not one per step)."""
    # Rows with N < 2 (log2(N) = 0) are decided by the clamp in num_masked_after_step whatever
    # gamma is: use N = 2 there.
    n = unknown.detach().cpu()
    r = torch.arange(1, steps + 1, dtype=torch.float64)[:, None] / steps                    # (steps, 1)
    ratio = mask_ratio(schedule, r, n.clamp_min(2)[None])                                   # (steps, B)
    return torch.floor(n.double()[None] * ratio).long().to(unknown.device)


def num_masked_after_step(schedule: str, t: int, steps: int, unknown: Tensor, masked_now: Tensor,
                          planned: Tensor | None = None) -> Tensor:
    """MaskGIT decoding: tokens left masked after step t (0-based) of `steps`:
    floor(N gamma((t+1)/T)) clamped to [1, masked_now - 1], and 0 after the last step.
    `unknown` (B,) is N, the tokens unknown at the start; `masked_now` (B,) those masked before t.
    N is per row, also inside gamma for "log" / "exp" (which depend on N): MaskGIT's
    `parallel_decode.decode` passes `unknown_number_in_the_beginning` (one count per row) to
    `mask_schedule.schedule` and takes floor(that count * ratio) per row.  A decoder passes
    `planned` (`planned_masked`, made once) so that no step reads the device."""
    if t == steps - 1:
        return torch.zeros_like(masked_now)
    n = (planned if planned is not None else planned_masked(schedule, steps, unknown))[t]   # `planned`: the decode's own
    n = torch.maximum(torch.ones_like(n), torch.minimum(masked_now - 1, n))
    return torch.minimum(n, masked_now)     # nothing to unmask in a row that is already complete


# ---------------------------------------------------------------------- discrete diffusion

DIFFUSION_SCHEDULES = ("linear", "cosine")
COSINE_OFFSET = 0.008      # s of the cosine schedule (Nichol & Dhariwal 2021; Hoogeboom et al. 2021)


def diffusion_alpha_bar(schedule: str, timesteps: int) -> Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s) for t = 0..T: (T+1,) float64, decreasing from
    alpha_bar_0 = 1 to alpha_bar_T = 0 exactly (so x_T carries nothing of x_0).
      "linear": alpha_bar_t = 1 - t/T, i.e. beta_t = 1 / (T - t + 1) (D3PM's absorbing schedule:
                a fraction t/T of the tokens is masked at step t);
      "cosine": alpha_bar_t = f(t) / f(0), f(t) = cos^2(pi/2 (t/T + s) / (1 + s)), s = 0.008
                (multinomial diffusion, Hoogeboom et al. 2021)."""
    if timesteps < 1:
        raise ValueError(f"the diffusion needs timesteps >= 1, got {timesteps}")
    r = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    if schedule == "linear":
        out = 1.0 - r
    elif schedule == "cosine":
        f = lambda x: torch.cos(math.pi / 2 * (x + COSINE_OFFSET) / (1 + COSINE_OFFSET)) ** 2
        out = f(r) / f(torch.zeros(()))
    else:
        raise ValueError(f"unknown diffusion schedule {schedule!r}: use one of {DIFFUSION_SCHEDULES}")
    out[0], out[-1] = 1.0, 0.0
    return out
