"""What a generator knows about its tokenizer (the spec) and the token-map checks built on it.

A generator is built from a tokenizer *spec*, never from the tokenizer: any object or dict with
`codebook_size`, `scales` (token-map sides, coarse to fine; single-scale: `[8]` for 8x8),
`image_size` and `channels`.  Token maps travel as the tokenizer's `encode` returns them: a list
of LongTensor `(B, s, s)`, one per scale.  Inside a generator the maps of all scales are one
sequence, coarse to fine, raster order within a scale (`flatten_tokens`).
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenSpec:
    codebook_size: int            # token ids are in [0, codebook_size)
    scales: tuple[int, ...]       # token-map sides, coarse to fine; single-scale: (h,)
    image_size: int               # square image side in pixels (for the record; generators ignore it)
    channels: int                 # image channels (for the record)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(int(s) for s in self.scales))
        if self.codebook_size < 2:
            raise ValueError(f"spec.codebook_size must be >= 2, got {self.codebook_size}")
        if not self.scales or any(s < 1 for s in self.scales):
            raise ValueError(f"spec.scales must be a non-empty list of positive map sides, got {self.scales}")

    @property
    def tokens_per_image(self) -> int:
        return sum(s * s for s in self.scales)

    @property
    def block_sizes(self) -> list[int]:
        """Tokens per scale, in sequence order (for block-causal masks)."""
        return [s * s for s in self.scales]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "scales": list(self.scales)}


_FIELDS = ("codebook_size", "scales", "image_size", "channels")


def as_spec(spec: Any) -> TokenSpec:
    """A `TokenSpec` from a dict or any object with the four fields (e.g. tokenizers_vq's
    `TokenizerSpec`); extra fields are ignored."""
    if isinstance(spec, TokenSpec):
        return spec
    get = spec.get if isinstance(spec, dict) else (lambda k, d=None: getattr(spec, k, d))
    missing = [f for f in _FIELDS if get(f) is None]
    if missing:
        raise ValueError(f"the tokenizer spec lacks {missing}: pass tokenizer.spec, read_spec(dir), or a dict "
                         f"with codebook_size, scales (e.g. [8] for 8x8 tokens), image_size and channels")
    scales = get("scales")
    if isinstance(scales, int):
        raise ValueError(f"spec scales must be a list of map sides, got the int {scales}: use [{scales}]")
    if not isinstance(scales, (list, tuple)) or not all(_is_int(s) for s in scales):
        raise ValueError(f"spec scales must be a list of ints (token-map sides, e.g. [8]), got {scales!r}: "
                         f"the spec (a config.json or meta.json 'spec' entry?) is damaged or hand-edited wrongly")
    for name in ("codebook_size", "image_size", "channels"):
        if not _is_int(get(name)):
            raise ValueError(f"spec {name} must be an int, got {type(get(name)).__name__} {get(name)!r}: the spec "
                             f"(a config.json or meta.json 'spec' entry?) is damaged or hand-edited wrongly")
    return TokenSpec(int(get("codebook_size")), tuple(int(s) for s in scales), int(get("image_size")),
                     int(get("channels")))


def _is_int(value: Any) -> bool:
    """An int-like value (int, numpy or 0-d torch integer), not a bool, float or string."""
    if isinstance(value, bool):
        return False
    if isinstance(value, Tensor):
        return value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool
    try:
        return operator.index(value) is not None
    except TypeError:
        return False


def flatten_tokens(tokens: Sequence[Tensor]) -> Tensor:
    """[(B, s_k, s_k) per scale] -> (B, N): scales coarse to fine, raster order within a scale."""
    return torch.cat([t.flatten(1) for t in tokens], dim=1)


def unflatten_tokens(seq: Tensor, scales: Sequence[int]) -> list[Tensor]:
    """(B, N) -> [(B, s_k, s_k) per scale]; the inverse of `flatten_tokens`."""
    parts = seq.split([s * s for s in scales], dim=1)
    return [p.reshape(seq.shape[0], s, s) for p, s in zip(parts, scales)]


def check_token_maps(tokens: Any, spec: TokenSpec, *, what: str = "tokens", check_range: bool = True,
                     where: Sequence[Tensor] | None = None) -> list[Tensor]:
    """Validate a list of token maps against the spec; returns it as a list.  `where` (masks of the
    same shapes) restricts the range check to those positions (e.g. known tokens);
    check_range=False validates shapes only and also accepts bool maps (masks)."""
    want = ", ".join(f"(B, {s}, {s})" for s in spec.scales)
    if isinstance(tokens, Tensor):
        raise ValueError(f"{what} must be a list of token maps [{want}] (what the tokenizer's encode "
                         f"returns), got one tensor of shape {tuple(tokens.shape)}: wrap it as [{what}]")
    if not isinstance(tokens, (list, tuple)) or len(tokens) != len(spec.scales):
        n = len(tokens) if isinstance(tokens, (list, tuple)) else type(tokens).__name__
        raise ValueError(f"{what} must be a list of {len(spec.scales)} token maps [{want}] (scales "
                         f"{list(spec.scales)}), got {n}: use tokens from a tokenizer with this spec")
    batch = None
    for k, (t, s) in enumerate(zip(tokens, spec.scales)):
        if not check_range and isinstance(t, Tensor) and t.dtype == torch.bool:
            pass                                                      # a mask map
        elif not isinstance(t, Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            nan = int((~torch.isfinite(t)).sum()) if isinstance(t, Tensor) and t.is_floating_point() else 0
            held = f" holding {nan} NaN/inf value(s), which are no token ids" if nan else ""
            raise ValueError(f"{what}[{k}] must be an integer (long) tensor of token ids, got "
                             f"{getattr(t, 'dtype', type(t).__name__)}{held}: pass the tokenizer's encode output")
        if t.dim() != 3 or tuple(t.shape[1:]) != (s, s) or (batch is not None and t.shape[0] != batch):
            raise ValueError(f"{what}[{k}] has shape {tuple(t.shape)}, expected (B, {s}, {s}) for scales "
                             f"{list(spec.scales)}: the tokens come from a tokenizer with another spec")
        batch = t.shape[0]
        if check_range and t.numel():
            vals = t[where[k]] if where is not None else t
            if vals.numel() and (int(vals.min()) < 0 or int(vals.max()) >= spec.codebook_size):
                bad = (t < 0) | (t >= spec.codebook_size)
                if where is not None:
                    bad &= where[k].bool()
                first = tuple(int(i) for i in bad.nonzero()[0])
                raise ValueError(f"{what}[{k}] has {int(bad.sum())} id(s) outside [0, {spec.codebook_size - 1}] "
                                 f"(codebook_size {spec.codebook_size}), the first {int(t[first])} at index "
                                 f"{first}; ids span [{int(vals.min())}, {int(vals.max())}]: the tokens come "
                                 f"from a tokenizer with another codebook size")
    return list(tokens)
