"""Attention for every generator family, on `torch.nn.functional.scaled_dot_product_attention`.

Masks come in three kinds: `"causal"` (AR), `"full"` (MaskGIT, text encoder) and a boolean
tensor (True = may attend), e.g. `block_causal_mask(block_sizes)` for VAR's next-scale
prediction, where a token of block k sees every token of blocks <= k.

`KVCache` holds static key/value buffers sized for the longest sequence and largest batch,
filled by position: prefill writes positions [0, P), each later call writes the next ones.
Nothing is re-allocated per step.  A cached call attends to everything written so far, which is
exactly right for one new token under a causal mask and for one new block under a block-causal
mask, so neither needs a mask tensor while decoding.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TransformerConfig

Mask = Union[str, Tensor]   # "causal" | "full" | bool tensor (T, T) or broadcastable to (B, H, T, S)


def causal_mask(n: int, device: torch.device | str | None = None) -> Tensor:
    """(n, n) bool, True where query i may see key j: j <= i."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def block_causal_mask(block_sizes: list[int], device: torch.device | str | None = None) -> Tensor:
    """(N, N) bool with N = sum(block_sizes): a token in block k sees every token of blocks <= k
    (VAR, Tian et al. 2024: a scale sees itself and all coarser scales)."""
    block_id = torch.repeat_interleave(torch.arange(len(block_sizes), device=device),
                                       torch.tensor(block_sizes, device=device))   # (N,)
    return block_id[:, None] >= block_id[None, :]


def padding_mask(key_mask: Tensor) -> Tensor:
    """(B, S) bool key mask (True = real token) -> (B, 1, 1, S), broadcast over heads and queries."""
    return key_mask[:, None, None, :]


def resolve_mask(mask: Mask, start: int, length: int, device: torch.device) -> tuple[Tensor | None, bool]:
    """What SDPA needs for `length` new queries at positions [start, start+length) against keys
    [0, start+length): (attn_mask, is_causal)."""
    if isinstance(mask, str):
        if mask == "full":
            return None, False
        if mask != "causal":
            raise ValueError(f"mask must be 'causal', 'full' or a bool tensor, got {mask!r}")
        if start == 0:
            return None, length > 1          # queries == keys: SDPA's own causal path
        if length == 1:
            return None, False               # one new token sees the whole cache
        q = torch.arange(start, start + length, device=device)
        return q[:, None] >= torch.arange(start + length, device=device)[None, :], False
    if mask.dim() == 2:                      # a (T_max, T_max) mask in absolute positions
        return mask[start:start + length, :start + length], False
    if start:
        raise ValueError("a per-batch (B, 1, T, S) mask cannot be combined with a KV cache offset; "
                         "pass a (T, T) mask in absolute positions instead")
    return mask, False


class KVCache:
    """Static key/value buffers for all layers: (layers, B_max, heads, T_max, head_dim) each."""

    def __init__(self, num_layers: int, batch_size: int, max_len: int, heads: int, head_dim: int,
                 *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (num_layers, batch_size, heads, max_len, head_dim)
        # uninitialised: a position is read only after it is written (update returns [0, start+T)),
        # and zero-filling VAR's 2 x 22 MB cache cost 3.5% of a guided sample on 2 CPU cores
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0        # positions [0, length) are filled

    @classmethod
    def for_model(cls, config: TransformerConfig, batch_size: int, max_len: int, *, dtype, device) -> "KVCache":
        return cls(config.depth, batch_size, max_len, config.heads, config.head_dim, dtype=dtype, device=device)

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def reset(self, length: int = 0) -> None:
        """Forget positions >= length (buffers stay; later writes overwrite them)."""
        self.length = length

    def update(self, layer: int, k: Tensor, v: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """Write k, v (B, H, T, hd) at [start, start+T); return views of [0, start+T)."""
        b, t = k.shape[0], k.shape[2]
        if start > self.length:    # the buffers are uninitialised: a gap would be read as garbage
            raise ValueError(f"KV cache holds positions [0, {self.length}), asked to write at {start}: writes must "
                             f"continue from the filled length (or reset(length) to rewrite from there)")
        if start + t > self.max_len or b > self.k.shape[1]:
            raise ValueError(f"KV cache holds {self.k.shape[1]} x {self.max_len} positions, asked to write "
                             f"batch {b} at [{start}, {start + t}): allocate a larger cache")
        self.k[layer, :b, :, start:start + t] = k
        self.v[layer, :b, :, start:start + t] = v
        return self.k[layer, :b, :, :start + t], self.v[layer, :b, :, :start + t]


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=cfg.bias)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, layer: int = 0, start: int = 0) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        if cache is not None:
            k, v = cache.update(layer, k, v, start)                                          # (B, H, start+T, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class CrossAttention(nn.Module):
    """Queries from the image stream, keys/values from text states (Muse's text conditioning)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        ctx = cfg.context_dim or cfg.width
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.q = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.kv = nn.Linear(ctx, 2 * cfg.width, bias=cfg.bias)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        B, T, D = x.shape
        S, H = context.shape[1], self.heads
        q = self.q(x).view(B, T, H, D // H).transpose(1, 2)                                # (B, H, T, hd)
        k, v = self.kv(context).view(B, S, 2, H, D // H).permute(2, 0, 3, 1, 4)            # 2 x (B, H, S, hd)
        mask = padding_mask(context_mask) if context_mask is not None else None           # (B, 1, 1, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))
