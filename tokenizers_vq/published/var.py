"""VAR's multi-scale VQVAE (`vae_ch160v4096z32.pth`).

Tian, Jiang, Yuan, Peng, Wang, "Visual Autoregressive Modeling: Scalable Image Generation via
Next-Scale Prediction", NeurIPS 2024 (FoundationVision/VAR, models/vqvae.py, quant.py, basic_vae.py).

The VQGAN autoencoder (ch 160, ch_mult (1, 1, 2, 2, 4), attention with one fused qkv conv in the
lowest level and the middle), 3x3 quant convs on 32 channels, and the residual quantizer over
scales (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) with one 4096 x 32 Euclidean codebook and 4 shared phi
convs (our `MultiScaleVQ`, whose phi choice is VAR's table).  The file is a plain state dict;
`quantize.ema_vocab_hit_SV` (code hits per scale in training) is skipped.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..config import TokenizerConfig
from .base import PublishedFormat, register_format, shape
from .keymap import Layout, Rule, codebook_rules

RELEASED_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)   # v_patch_nums of the released model, 256 px
PHIS = "quantize.quant_resi.qresi_ls"


@register_format("var-vqvae")
class VARVQVAE(PublishedFormat):
    released = "vae_ch160v4096z32.pth"
    layout = Layout(encoder_level="encoder.down.{i}", decoder_level="decoder.up.{i}", res="block",
                    middle=("block_1", "attn_1", "block_2"), fused_qkv=True)
    signature = ("encoder.down.0.block.0.conv1.weight", "quantize.embedding.weight", f"{PHIS}.0.weight")

    def skip(self, key: str) -> bool:
        return key == "quantize.ema_vocab_hit_SV"

    def quantizer_fields(self, state: dict[str, Tensor], scales: tuple[int, ...] | None,
                         token_size: int) -> dict[str, Any]:
        if scales is None:
            if RELEASED_SCALES[-1] != token_size:
                raise ValueError(f"VAR's released scales {RELEASED_SCALES} end at {RELEASED_SCALES[-1]} tokens "
                                 f"(256 px images); at this image size the token map is {token_size}: pass scales "
                                 f"(--scales) that end at {token_size}, e.g. 1,2,3,4,6,8 for 8")
            scales = RELEASED_SCALES
        size, _ = shape(state, "quantize.embedding.weight", self.name)
        # VAR: quant_resi=0.5, phi(h) = 0.5 h + 0.5 conv(h); share_quant_resi convs, picked per scale
        return dict(quantizer="msvq", codebook_size=size, scales=tuple(scales),
                    phi_count=self.layout.count(state, PHIS), phi_ratio=0.5)

    def quantizer_rules(self, config: TokenizerConfig) -> list[Rule]:
        phis = [Rule(f"quantizer.phis.{j}.conv.{p}", (f"{PHIS}.{j}.{p}",))
                for j in range(config.phi_count) for p in ("weight", "bias")]
        return codebook_rules("quantizer.vq._codebook", "quantize.embedding.weight") + phis
