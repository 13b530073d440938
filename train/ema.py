"""Exponential moving average (EMA) of a module's parameters, kept in fp32.

Polyak & Juditsky, "Acceleration of stochastic approximation by averaging" (1992); the decay
warm-up `min(decay, (1 + n) / (10 + n))` is TensorFlow's `ExponentialMovingAverage(num_updates=)`
(also timm's ModelEmaV2), so that a short run's average is not dominated by the initial weights.

Only parameters are averaged; buffers (BatchNorm statistics, an EMA codebook kept as a buffer)
stay the live ones, since they are already running statistics of the model being trained.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class EMA:
    """fp32 shadow copies of `module`'s floating parameters, updated with `update(module)`."""

    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}: use 0.999 or so, or turn EMA off")
        self.decay = decay
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().float().clone() for name, p in _float_params(module)
        }

    def current_decay(self) -> float:
        """The decay the next update uses (warmed up over the first updates)."""
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """shadow <- d * shadow + (1 - d) * param."""
        weight = 1.0 - self.current_decay()
        for name, p in _float_params(module):
            self.shadow[name].lerp_(p.detach().float(), weight)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the averaged weights into `module` (cast to each parameter's dtype)."""
        for name, p in _float_params(module):
            p.copy_(self.shadow[name])

    @contextlib.contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[nn.Module]:
        """Run a block with the averaged weights in `module`, then put the live ones back exactly."""
        live = {name: p.detach().clone() for name, p in _float_params(module)}
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for name, p in _float_params(module):
                    p.copy_(live[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(
                f"EMA state does not match the module: parameters {sorted(missing)[:5]} differ; "
                "resume with the same model configuration the checkpoint was written with"
            )
        self.num_updates = int(state["num_updates"])
        for name, t in state["shadow"].items():
            self.shadow[name].copy_(t)


def _float_params(module: nn.Module):
    return [(n, p) for n, p in module.named_parameters() if p.is_floating_point()]
