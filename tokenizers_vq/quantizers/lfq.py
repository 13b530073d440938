"""Lookup-free quantization.

Yu et al., "Language Model Beats Diffusion: Tokenizer is Key to Visual Generation" (MAGVIT-v2),
ICLR 2024: project to d dims and keep each sign, so the code is a d-bit integer and the
codebook (size 2^d) is never looked up.  An entropy penalty (low per-token entropy, high batch
entropy) keeps the bits in use.  vector-quantize-pytorch's `LFQ`.
"""

from __future__ import annotations

from torch import Tensor
from vector_quantize_pytorch import LFQ

from ..config import TokenizerConfig
from .base import Quantizer, QuantizerOutput, codebook_stats, full_precision, register_quantizer


@register_quantizer("lfq")
class LFQQuantizer(Quantizer):
    def __init__(
        self,
        dim: int,
        bits: int,
        token_size: int,
        *,
        entropy_loss_weight: float = 0.1,
        commitment_loss_weight: float = 0.25,
        diversity_gamma: float = 1.0,
    ):
        super().__init__()
        self.dim, self.scales, self.codebook_size = dim, [token_size], 2**bits
        self.lfq = LFQ(
            dim=dim,
            codebook_size=2**bits,
            entropy_loss_weight=entropy_loss_weight,
            commitment_loss_weight=commitment_loss_weight,
            diversity_gamma=diversity_gamma,
        )

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "LFQQuantizer":
        return cls(
            cfg.latent_dim, cfg.lfq_bits, cfg.token_size,
            entropy_loss_weight=cfg.lfq_entropy_weight,
            commitment_loss_weight=cfg.lfq_commitment_weight,
            diversity_gamma=cfg.lfq_diversity_gamma,
        )

    @classmethod
    def validate_config(cls, cfg: TokenizerConfig) -> None:
        super().validate_config(cfg)
        if not 1 <= cfg.lfq_bits <= 20:
            raise ValueError(f"lfq_bits must be in [1, 20] (codebook 2 ** bits), got {cfg.lfq_bits}")

    def forward(self, z: Tensor) -> QuantizerOutput:
        with full_precision(z.device):
            z_q, indices, loss = self.lfq(z.float())  # (B, C, h, w), (B, h, w), ()
        indices = indices.long()
        usage, perplexity = codebook_stats(indices, self.codebook_size)
        return QuantizerOutput(z_q, [indices], loss, {"usage": usage, "perplexity": perplexity})

    def indices_to_latent(self, indices: list[Tensor]) -> Tensor:
        (ids,) = indices
        with full_precision(ids.device):
            return self.lfq.indices_to_codes(ids)  # (B, C, h, w)
