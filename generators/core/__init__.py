"""The shared transformer core used by every generator family (AR, MaskGIT/Muse, VAR, D3PM)."""

from .attention import (
    CrossAttention,
    KVCache,
    Mask,
    SelfAttention,
    block_causal_mask,
    causal_mask,
    padding_mask,
    resolve_mask,
)
from .config import TransformerConfig
from .layers import MLP, AdaLN, Block, modulate
from .position import POSITION_KINDS, ImagePositions, LearnedPositions, grid_coords, sincos_1d
from .transformer import Transformer

__all__ = [
    "AdaLN", "Block", "CrossAttention", "ImagePositions", "KVCache", "LearnedPositions", "MLP", "Mask",
    "POSITION_KINDS", "SelfAttention", "Transformer", "TransformerConfig", "block_causal_mask",
    "causal_mask", "grid_coords", "modulate", "padding_mask", "resolve_mask", "sincos_1d",
]
