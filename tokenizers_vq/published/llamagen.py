"""LlamaGen's VQ-16 tokenizer (`vq_ds16_c2i.pt`).

Sun, Jiang, Chen, Zhang, Peng, Luo, Yuan, "Autoregressive Model Beats Diffusion: Llama for
Scalable Image Generation", 2024 (FoundationVision/LlamaGen, tokenizer/tokenizer_image/vq_model.py).

The VQGAN autoencoder with ch 128, ch_mult (1, 1, 2, 2, 4), attention in the lowest level and the
middle, 1x1 quant convs z 256 <-> 8, and an l2-normalised 16384 x 8 codebook: the latent and the
codebook rows are normalised at every use, so the nearest code is the one of largest cosine.
Our `use_cosine_sim` VQ normalises the input and uses its rows as stored: the rows are stored
normalised here.  The decoder's stages are listed lowest resolution first (`conv_blocks.0` is the
level next to the latent).
"""

from __future__ import annotations

from .base import PublishedFormat, register_format
from .keymap import Layout


@register_format("llamagen-vq16")
class LlamaGenVQ(PublishedFormat):
    released = "vq_ds16_c2i.pt"
    layout = Layout(encoder_level="encoder.conv_blocks.{i}", decoder_level="decoder.conv_blocks.{j}",
                    res="res", middle=("0", "1", "2"), fused_qkv=False)
    # LlamaGen's sampling and code-extraction scripts read "model"; its demo prefers "ema"
    wrappers = ("model", "ema", "state_dict")
    signature = ("encoder.conv_blocks.0.res.0.conv1.weight", "quantize.embedding.weight", "quant_conv.weight")
    cosine_codebook = True    # stored normalised: our cosine codebook uses its rows as stored

    def skip(self, key: str) -> bool:
        return key == "quantize.codebook_used"     # training-time usage counts
