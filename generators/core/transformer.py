"""The one transformer every generator family runs on: a stack of `Block`s and a final norm.

    core = Transformer(TransformerConfig(width=256, depth=4, heads=8))
    h = core(x, mask="causal")                                   # training: (B, T, D) -> (B, T, D)
    cache = core.new_cache(batch_size=B, max_len=T, like=x)
    h = core(prefix, mask="causal", cache=cache)                 # prefill positions [0, P)
    h = core(next_token, mask="causal", cache=cache)             # then one position per call

Embeddings and output heads belong to the families; the core maps a sequence of vectors to a
sequence of vectors, given a mask, an optional condition vector (adaLN) and optional
cross-attention context.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import KVCache, Mask, resolve_mask
from .config import TransformerConfig
from .layers import AdaLN, Block, modulate


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps, elementwise_affine=cfg.cond_dim == 0)
        self.ada_out = AdaLN(cfg.cond_dim, cfg.width, 2) if cfg.cond_dim else None
        self.apply(_init_weights)
        for m in self.modules():        # adaLN-Zero: every block starts as the identity
            if isinstance(m, AdaLN):
                m.zero_()

    def new_cache(self, batch_size: int, max_len: int, *, like: Tensor) -> KVCache:
        """A static cache for `batch_size` sequences of up to `max_len` positions, in `like`'s
        dtype and device (the compute dtype: bf16 under bf16 weights)."""
        return KVCache.for_model(self.config, batch_size, max_len, dtype=like.dtype, device=like.device)

    def forward(self, x: Tensor, *, mask: Mask = "causal", cond: Tensor | None = None,
                context: Tensor | None = None, context_mask: Tensor | None = None,
                cache: KVCache | None = None, start: int | None = None) -> Tensor:
        """x (B, T, D) -> (B, T, D).  With a cache, x holds positions [start, start+T) (start
        defaults to what the cache already holds) and attends to the cached keys before it."""
        if (cond is None) != (self.ada_out is None):
            raise ValueError("this transformer was built with cond_dim > 0 and needs `cond` (B, cond_dim)"
                             if cond is None else "`cond` given but the transformer has no adaLN (cond_dim=0)")
        if (context is None) != (self.blocks[0].cross is None):
            raise ValueError("this transformer has cross-attention and needs `context` (B, S, D)"
                             if context is None else "`context` given but the transformer has no cross-attention")
        if cache is None:
            start = 0
        elif start is None:
            start = cache.length
        attn_mask, is_causal = resolve_mask(mask, start, x.shape[1], x.device)
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            raise ValueError(f"attention masks must be bool (True = may attend), got {attn_mask.dtype}")
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask=attn_mask, is_causal=is_causal, cache=cache, layer=i, start=start,
                      cond=cond, context=context, context_mask=context_mask)
        if cache is not None:
            cache.length = start + x.shape[1]
        x = self.norm(x)
        if self.ada_out is not None:
            shift, scale = self.ada_out(cond)       # 2 x (B, 1, D)
            x = modulate(x, shift, scale)
        return x


def _init_weights(module: nn.Module) -> None:
    """GPT-2 style: normal(0, 0.02) linears with zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
