"""Finite scalar quantization.

Mentzer, Minnen, Agustsson, Tschannen, "Finite Scalar Quantization: VQ-VAE Made Simple",
ICLR 2024: project to d = len(levels) dims, bound each with tanh, round to `levels[i]` values
(straight-through); the implicit codebook is their product grid, so there is no codebook to
learn, collapse or restart, and no auxiliary loss.  vector-quantize-pytorch's `FSQ`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from vector_quantize_pytorch import FSQ

from ..config import TokenizerConfig
from .base import Quantizer, QuantizerOutput, codebook_stats, full_precision, register_quantizer


@register_quantizer("fsq")
class FSQQuantizer(Quantizer):
    def __init__(self, dim: int, levels: tuple[int, ...], token_size: int):
        super().__init__()
        self.dim, self.scales = dim, [token_size]
        self.codebook_size = math.prod(levels)
        self.fsq = FSQ(levels=list(levels), dim=dim)

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "FSQQuantizer":
        return cls(cfg.latent_dim, cfg.fsq_levels, cfg.token_size)

    @classmethod
    def validate_config(cls, cfg: TokenizerConfig) -> None:
        super().validate_config(cfg)
        if not cfg.fsq_levels or min(cfg.fsq_levels) < 3:
            raise ValueError(f"fsq_levels must all be >= 3 (FSQ paper, e.g. (8, 5, 5, 5)), got {cfg.fsq_levels}")

    @classmethod
    def token_layout(cls, cfg: TokenizerConfig) -> tuple[int, tuple[int, ...]]:
        # vector-quantize-pytorch's FSQ reads its levels' product with .item() when built, which the
        # meta device of the default cannot give; the product is the codebook size __init__ sets.
        return math.prod(cfg.fsq_levels), (cfg.token_size,)

    def forward(self, z: Tensor) -> QuantizerOutput:
        with full_precision(z.device):
            z_q, indices = self.fsq(z.float())  # (B, C, h, w), (B, h, w) int32
        indices = indices.long()
        usage, perplexity = codebook_stats(indices, self.codebook_size)
        loss = torch.zeros((), device=z.device)
        return QuantizerOutput(z_q, [indices], loss, {"usage": usage, "perplexity": perplexity})

    def indices_to_latent(self, indices: list[Tensor]) -> Tensor:
        (ids,) = indices
        with full_precision(ids.device):
            return self.fsq.indices_to_codes(ids)  # (B, C, h, w)
