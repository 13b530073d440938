"""The one interface every quantizer implements, the registry of quantizer kinds, and the codebook
statistics they all report.

A quantizer kind is one class in one file, registered by name with `@register_quantizer("kind")`
(and that file imported in quantizers/__init__.py).  The class owns everything about its kind:
building from a `TokenizerConfig` (`from_config`), checking the config (`validate_config`), and
what its tokens are (`codebook_size`, `scales`), which the tokenizer's spec reads off the built
quantizer.  Nothing elsewhere dispatches on the kind.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar

import torch
from torch import Tensor, nn
from vector_quantize_pytorch import VectorQuantize

if TYPE_CHECKING:  # the config module imports this package lazily (for validation): no cycle at runtime
    from ..config import TokenizerConfig


@dataclass
class QuantizerOutput:
    z_q: Tensor                 # (B, C, h, w) latent for the decoder; straight-through gradients in training
    indices: list[Tensor]       # one LongTensor (B, s, s) per scale, coarse to fine
    loss: Tensor                # scalar: the quantizer's own weighted terms (commitment, codebook, aux)
    stats: dict[str, Tensor] = field(default_factory=dict)  # detached 0-dim tensors for logging


class Quantizer(nn.Module):
    """Base class: `forward(z) -> QuantizerOutput` and `indices_to_latent(indices) -> z_q`.

    Subclasses set `codebook_size` (ids are in [0, codebook_size)), `scales` (token-map sides,
    coarse to fine; single-scale quantizers have `[h]`) and `dim` (latent channels C) when built,
    and implement `from_config`.  `indices_to_latent` assumes valid ids: `VQTokenizer.decode`
    checks them first.
    """

    kind: ClassVar[str] = ""             # the registered name (`TokenizerConfig.quantizer`); set by register_quantizer
    multi_scale: ClassVar[bool] = False  # True: takes `TokenizerConfig.scales` (several token maps per image)

    codebook_size: int
    scales: list[int]
    dim: int

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "Quantizer":  # pragma: no cover - interface
        raise NotImplementedError(f"{cls.__name__} must implement from_config(cfg) to be built by a VQTokenizer")

    @classmethod
    def validate_config(cls, cfg: TokenizerConfig) -> None:
        """Raise ValueError naming a setting of `cfg` this kind cannot be built with, and the fix
        (`TokenizerConfig` calls it at construction, before any weights exist).  The default suits
        single-scale kinds: `scales` must be unset (or the one full token map)."""
        if cfg.scales is not None and tuple(cfg.scales) != (cfg.token_size,):
            multi = " or ".join(f"quantizer={k!r}" for k, c in QUANTIZERS.items() if c.multi_scale)
            raise ValueError(f"scales={cfg.scales} only applies to {multi or 'a multi-scale quantizer'}; a "
                             f"single-scale {cfg.quantizer!r} tokenizer has scales ({cfg.token_size},): drop the field")

    @classmethod
    def token_layout(cls, cfg: TokenizerConfig) -> tuple[int, tuple[int, ...]]:
        """(codebook_size, scales) of the quantizer `cfg` builds, read off an instance built on the
        meta device (no memory, no init), so a config's spec needs no per-kind formula.  A kind whose
        construction reads tensor values (meta tensors have none) overrides this."""
        try:
            with torch.device("meta"):
                q = cls.from_config(cfg)
        except (RuntimeError, NotImplementedError) as err:
            raise RuntimeError(
                f"{cls.__name__} cannot be built on the meta device to read its token layout ({err}): "
                f"override {cls.__name__}.token_layout(cfg) to return (codebook_size, scales) from the config"
            ) from err
        return q.codebook_size, tuple(q.scales)

    def forward(self, z: Tensor) -> QuantizerOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def indices_to_latent(self, indices: list[Tensor]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


# kind -> class, filled by @register_quantizer as quantizers/__init__.py imports each file
QUANTIZERS: dict[str, type[Quantizer]] = {}


def register_quantizer(kind: str) -> Callable[[type[Quantizer]], type[Quantizer]]:
    """Class decorator: `@register_quantizer("fsq")` makes `TokenizerConfig(quantizer="fsq")` build
    the class."""
    def wrap(cls: type[Quantizer]) -> type[Quantizer]:
        if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
            raise TypeError(f"@register_quantizer({kind!r}) needs a Quantizer subclass, got {cls!r}")
        if kind in QUANTIZERS and QUANTIZERS[kind] is not cls:
            raise ValueError(f"quantizer kind {kind!r} is already registered by {QUANTIZERS[kind].__name__}: "
                             f"pick another name")
        cls.kind = kind
        QUANTIZERS[kind] = cls
        return cls
    return wrap


def quantizer_class(kind: str) -> type[Quantizer]:
    if kind not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {kind!r}; choose one of {tuple(QUANTIZERS)} (a new kind is a "
                         f"Quantizer subclass decorated with @register_quantizer)")
    return QUANTIZERS[kind]


def build_quantizer(cfg: TokenizerConfig) -> Quantizer:
    return quantizer_class(cfg.quantizer).from_config(cfg)


def check_vq_codebook(cfg: TokenizerConfig) -> None:
    """The checks of a vector-quantize-pytorch codebook (VQ and multi-scale VQ)."""
    if cfg.codebook_size < 2:
        raise ValueError(f"codebook_size must be >= 2, got {cfg.codebook_size}")
    if cfg.kmeans_init_vectors < 0 or (cfg.kmeans_init_vectors and not cfg.kmeans_init):
        raise ValueError(f"kmeans_init_vectors must be >= 0 and needs kmeans_init=True (0 = the first batch), "
                         f"got {cfg.kmeans_init_vectors} with kmeans_init={cfg.kmeans_init}")
    if cfg.use_cosine_sim and cfg.learnable_codebook:
        raise ValueError("use_cosine_sim needs the EMA codebook (vector-quantize-pytorch cannot learn "
                         "cosine codes by gradient); set learnable_codebook=False")


@contextlib.contextmanager
def full_precision(device: torch.device):
    """Nearest-code search and code arithmetic in float32, whatever autocast the caller runs under:
    distances in bf16 pick wrong codes, and vector-quantize-pytorch only disables CUDA autocast."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


@torch.no_grad()
def codebook_stats(indices: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """(usage, perplexity) of one batch of ids: the share of codes used at least once, and
    exp(entropy) of the code histogram (codebook_size when every code is equally used)."""
    flat = indices.reshape(-1)
    # scatter_add, not bincount: a fixed output shape (bincount's depends on the largest id), so
    # torch.compile traces it without a graph break
    counts = torch.zeros(codebook_size, device=indices.device).scatter_add_(
        0, flat, torch.ones(flat.shape, device=indices.device))
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
    return (counts > 0).float().mean(), entropy.exp()


def pass_through(quantizer: Quantizer, z: Tensor) -> QuantizerOutput:
    """The output of a quantizer whose codebook is still gathering vectors for its k-means init
    (`CodebookInit`): z unquantized, ids all 0, a zero loss that still reaches every parameter (so
    DDP's gradient bookkeeping sees a normal step)."""
    b = z.shape[0]
    indices = [torch.zeros(b, s, s, dtype=torch.long, device=z.device) for s in quantizer.scales]
    loss = z.new_zeros((), dtype=torch.float32)
    for p in quantizer.parameters():
        if p.requires_grad:
            loss = loss + 0.0 * p.sum()
    usage, perplexity = codebook_stats(indices[-1], quantizer.codebook_size)
    stats = {"usage": usage, "perplexity": perplexity}
    if len(indices) > 1:
        for s in quantizer.scales:
            stats[f"usage/{s}x{s}"], stats[f"perplexity/{s}x{s}"] = usage, perplexity
    return QuantizerOutput(z.float(), indices, loss, stats)


def vector_quantize(dim: int, codebook_size: int, *, learnable_codebook: bool, ema_decay: float,
                    **options) -> VectorQuantize:
    """vector-quantize-pytorch's `VectorQuantize` in our terms: EMA codes unless `learnable_codebook`
    (then learned by gradient), `ema_decay` as its `decay`; every other option passes through."""
    return VectorQuantize(dim=dim, codebook_size=codebook_size, learnable_codebook=learnable_codebook,
                          ema_update=not learnable_codebook, decay=ema_decay, **options)

