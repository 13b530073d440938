"""tokenizers_vq: images <-> tokens.

One convolutional autoencoder (VQGAN), pluggable quantizers (single-scale VQ, VAR's multi-scale
residual VQ, FSQ, LFQ) and VQGAN's training losses.  Imports neither `train` nor `eval`.
"""

from .autoencoder import Decoder, Encoder
from .config import PRESETS, QUANTIZER_KINDS, TokenizerConfig, TokenizerSpec, get_preset, read_spec
from .discriminator import PatchDiscriminator
from .losses import (
    LOSS_PRESETS,
    LossConfig,
    TokenizerLoss,
    adaptive_weight,
    build_discriminator,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)
from .perceptual import LPIPS
from .quantizers import (
    QUANTIZERS,
    FSQQuantizer,
    LFQQuantizer,
    MultiScaleVQ,
    Quantizer,
    QuantizerOutput,
    VQ,
    build_quantizer,
    codebook_stats,
)
from .tokenizer import VQTokenizer, load_checked

__all__ = [
    "Decoder", "Encoder", "FSQQuantizer", "LFQQuantizer", "LOSS_PRESETS", "LPIPS", "LossConfig",
    "MultiScaleVQ", "PRESETS", "PatchDiscriminator", "QUANTIZERS", "QUANTIZER_KINDS", "Quantizer",
    "QuantizerOutput", "TokenizerConfig", "TokenizerLoss", "TokenizerSpec", "VQ", "VQTokenizer",
    "adaptive_weight", "build_discriminator", "build_quantizer", "codebook_stats", "get_preset",
    "hinge_d_loss", "hinge_g_loss", "load_checked", "read_spec", "reconstruction_loss",
]
