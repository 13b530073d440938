"""The one interface every quantizer implements, and the codebook statistics they all report."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from vector_quantize_pytorch import VectorQuantize


@dataclass
class QuantizerOutput:
    z_q: Tensor                 # (B, C, h, w) latent for the decoder; straight-through gradients in training
    indices: list[Tensor]       # one LongTensor (B, s, s) per scale, coarse to fine
    loss: Tensor                # scalar: the quantizer's own weighted terms (commitment, codebook, aux)
    stats: dict[str, Tensor] = field(default_factory=dict)  # detached 0-dim tensors for logging


class Quantizer(nn.Module):
    """Base class: `forward(z) -> QuantizerOutput` and `indices_to_latent(indices) -> z_q`.

    Subclasses set `codebook_size` (ids are in [0, codebook_size)), `scales` (token-map sides,
    coarse to fine; single-scale quantizers have `[h]`) and `dim` (latent channels C).
    `indices_to_latent` assumes valid ids: `VQTokenizer.decode` checks them first.
    """

    codebook_size: int
    scales: list[int]
    dim: int

    def forward(self, z: Tensor) -> QuantizerOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def indices_to_latent(self, indices: list[Tensor]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


@contextlib.contextmanager
def full_precision(device: torch.device):
    """Nearest-code search and code arithmetic in float32, whatever autocast the caller runs under:
    distances in bf16 pick wrong codes, and vector-quantize-pytorch only disables CUDA autocast."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


@torch.no_grad()
def codebook_stats(indices: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """(usage, perplexity) of one batch of ids: the share of codes used at least once, and
    exp(entropy) of the code histogram (codebook_size when every code is equally used)."""
    counts = torch.bincount(indices.reshape(-1), minlength=codebook_size).float()
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
    return (counts > 0).float().mean(), entropy.exp()


def vector_quantize(dim: int, codebook_size: int, *, learnable_codebook: bool, ema_decay: float,
                    **options) -> VectorQuantize:
    """vector-quantize-pytorch's `VectorQuantize` in our terms: EMA codes unless `learnable_codebook`
    (then learned by gradient), `ema_decay` as its `decay`; every other option passes through."""
    return VectorQuantize(dim=dim, codebook_size=codebook_size, learnable_codebook=learnable_codebook,
                          ema_update=not learnable_codebook, decay=ema_decay, **options)
