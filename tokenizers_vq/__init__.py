"""tokenizers_vq: images <-> tokens.

One convolutional autoencoder (VQGAN), pluggable quantizers (single-scale VQ, VAR's multi-scale
residual VQ, FSQ, LFQ; a registry, `register_quantizer`), VQGAN's training losses and the named
presets (model, loss and training settings in one `TokenizerPreset`).  Imports neither `train` nor `eval`.
"""

from .autoencoder import Decoder, Encoder
from .config import TokenizerConfig, TokenizerSpec, read_spec
from .discriminator import PatchDiscriminator
from .losses import (
    LossConfig,
    TokenizerLoss,
    adaptive_weight,
    build_discriminator,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)
from .perceptual import LPIPS
from .presets import (
    LOSS_PRESETS,
    PRESETS,
    TOKENIZER_PRESETS,
    TokenizerPreset,
    get_preset,
    get_tokenizer_preset,
    preset_name,
    register_preset,
)
from .quantizers import (
    QUANTIZER_KINDS,
    QUANTIZERS,
    FSQQuantizer,
    LFQQuantizer,
    MultiScaleVQ,
    Quantizer,
    QuantizerOutput,
    VQ,
    build_quantizer,
    codebook_stats,
    quantizer_class,
    register_quantizer,
)
from .tokenizer import VQTokenizer, load_checked

__all__ = [
    "Decoder", "Encoder", "FSQQuantizer", "LFQQuantizer", "LOSS_PRESETS", "LPIPS", "LossConfig",
    "MultiScaleVQ", "PRESETS", "PatchDiscriminator", "QUANTIZERS", "QUANTIZER_KINDS", "Quantizer",
    "QuantizerOutput", "TOKENIZER_PRESETS", "TokenizerConfig", "TokenizerLoss", "TokenizerPreset",
    "TokenizerSpec", "VQ", "VQTokenizer", "adaptive_weight", "build_discriminator", "build_quantizer",
    "codebook_stats", "get_preset", "get_tokenizer_preset", "hinge_d_loss", "hinge_g_loss", "load_checked",
    "preset_name", "quantizer_class", "read_spec", "reconstruction_loss", "register_preset", "register_quantizer",
]
