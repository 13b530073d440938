"""taming-transformers' VQGAN (the Lightning `last.ckpt` of vqgan_imagenet_f16_16384 / f16_1024).

Esser, Rombach, Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021
(CompVis/taming-transformers, taming/models/vqgan.py `VQModel`).

The model our autoencoder follows, with 1x1 quant convs z_channels <-> embed_dim and a plain
Euclidean codebook (`VectorQuantizer2`).  Only `checkpoint["state_dict"]` is read; its `loss.*`
keys (LPIPS and the PatchGAN discriminator) are not needed to encode or decode and are skipped.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..config import TokenizerConfig
from .base import PublishedFormat, register_format, shape
from .keymap import Layout, Rule, codebook_rules


@register_format("taming-vqgan")
class TamingVQGAN(PublishedFormat):
    released = "vqgan_imagenet_f16_16384/checkpoints/last.ckpt"
    layout = Layout(encoder_level="encoder.down.{i}", decoder_level="decoder.up.{i}", res="block",
                    middle=("block_1", "attn_1", "block_2"), fused_qkv=False)
    wrappers = ("state_dict",)
    signature = ("encoder.down.0.block.0.conv1.weight", "quantize.embedding.weight", "quant_conv.weight")
    foreign = ("quantize.quant_resi.qresi_ls.0.weight",)   # VAR's names are taming's plus these

    def skip(self, key: str) -> bool:
        return key.startswith("loss.")             # LPIPS + discriminator, training only

    def quantizer_fields(self, state: dict[str, Tensor], scales: tuple[int, ...] | None,
                         token_size: int) -> dict[str, Any]:
        if scales is not None:
            raise ValueError("scales only apply to the multi-scale var-vqvae format; taming's VQGAN has one "
                             "token map")
        size, _ = shape(state, "quantize.embedding.weight", self.name)
        return dict(quantizer="vq", codebook_size=size)

    def quantizer_rules(self, config: TokenizerConfig) -> list[Rule]:
        return codebook_rules("quantizer.vq._codebook", "quantize.embedding.weight")
