"""taming-transformers' VQGAN (the Lightning `last.ckpt` of vqgan_imagenet_f16_16384 / f16_1024).

Esser, Rombach, Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021
(CompVis/taming-transformers, taming/models/vqgan.py `VQModel`).

The model our autoencoder follows, with 1x1 quant convs z_channels <-> embed_dim and a plain
Euclidean codebook (`VectorQuantizer2`).  Only `checkpoint["state_dict"]` is read; its `loss.*`
keys (LPIPS and the PatchGAN discriminator) are not needed to encode or decode and are skipped.
"""

from __future__ import annotations

from .base import PublishedFormat, register_format
from .keymap import Layout


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
