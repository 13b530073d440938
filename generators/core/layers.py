"""MLP, adaptive LayerNorm and the transformer block (pre-norm, nanoGPT-style).

adaLN follows DiT (Peebles & Xie 2023, "adaLN-Zero") as VAR uses it: a condition vector gives a
shift, scale and gate for the attention and MLP branches; the projection starts at zero so every
block starts as the identity.
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import CrossAttention, KVCache, SelfAttention
from .config import TransformerConfig


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x (B, T, D) with shift/scale (B, 1, D)."""
    return x * (1 + scale) + shift


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        hidden = int(cfg.mlp_ratio * cfg.width)
        self.fc = nn.Linear(cfg.width, hidden, bias=cfg.bias)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(hidden, cfg.width, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))


class AdaLN(nn.Module):
    """cond (B, C) -> `chunks` modulation vectors (B, 1, D) each, zero at init."""

    def __init__(self, cond_dim: int, width: int, chunks: int):
        super().__init__()
        self.chunks = chunks
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, chunks * width))
        self.zero_()

    def zero_(self) -> None:
        nn.init.zeros_(self.proj[1].weight)
        nn.init.zeros_(self.proj[1].bias)

    def forward(self, cond: Tensor) -> tuple[Tensor, ...]:
        return self.proj(cond).unsqueeze(1).chunk(self.chunks, dim=-1)   # chunks x (B, 1, D)


class Block(nn.Module):
    """x + attn(norm(x)) [+ cross(norm(x), context)] + mlp(norm(x)); with adaLN when cond_dim > 0."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        affine = cfg.cond_dim == 0          # adaLN supplies shift/scale itself
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps, elementwise_affine=affine)
        self.attn = SelfAttention(cfg)
        self.cross = CrossAttention(cfg) if cfg.cross_attention else None
        self.norm_cross = nn.LayerNorm(cfg.width, eps=cfg.norm_eps) if cfg.cross_attention else None
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps, elementwise_affine=affine)
        self.mlp = MLP(cfg)
        self.ada = AdaLN(cfg.cond_dim, cfg.width, 6) if cfg.cond_dim else None
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, *, attn_mask: Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, layer: int = 0, start: int = 0, cond: Tensor | None = None,
                context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        attn = dict(attn_mask=attn_mask, is_causal=is_causal, cache=cache, layer=layer, start=start)
        if self.ada is None:
            x = x + self.drop(self.attn(self.norm1(x), **attn))
            x = self._cross(x, context, context_mask)
            return x + self.drop(self.mlp(self.norm2(x)))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond)    # 6 x (B, 1, D)
        x = x + gate1 * self.drop(self.attn(modulate(self.norm1(x), shift1, scale1), **attn))
        x = self._cross(x, context, context_mask)
        return x + gate2 * self.drop(self.mlp(modulate(self.norm2(x), shift2, scale2)))

    def _cross(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        if self.cross is None:
            return x
        return x + self.drop(self.cross(self.norm_cross(x), context, context_mask))
