"""Tokenizer hyperparameters (`TokenizerConfig`), what generators are built from (`TokenizerSpec`),
and the named size presets.

A config is frozen and JSON-round-trips through `to_dict` / `from_dict`; `VQTokenizer`'s
`save_pretrained` writes it next to the weights.  Invalid combinations raise `ValueError` at
construction, before any weights are built.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUANTIZER_KINDS = ("vq", "msvq", "fsq", "lfq")


@dataclass(frozen=True)
class TokenizerConfig:
    # --- images ---
    image_size: int = 32                      # square input side in pixels; must be divisible by factor
    channels: int = 3                         # image channels (grey data is repeated to 3 upstream)
    # --- convolutional autoencoder (VQGAN-style) ---
    base_width: int = 32                      # channels of the first ResNet level
    channel_mults: tuple[int, ...] = (1, 2, 2)  # width multiplier per level; factor = 2 ** (levels - 1)
    num_res_blocks: int = 1                   # ResNet blocks per level (decoder uses one more, as in VQGAN)
    attn_resolutions: tuple[int, ...] = ()    # feature-map sides (pixels) that get a self-attention block
    mid_attention: bool = True                # self-attention block in the middle of encoder and decoder
    z_channels: int = 16                      # latent dim C of the token map the quantizer sees
    # --- quantizer ---
    quantizer: str = "vq"                     # "vq" | "msvq" (VAR multi-scale) | "fsq" | "lfq"
    codebook_size: int = 256                  # vq / msvq: number of codes (fsq / lfq derive theirs)
    scales: tuple[int, ...] | None = None     # msvq: token-map sides, increasing, last = image_size // factor
    # vq / msvq codebook options (vector-quantize-pytorch's VectorQuantize)
    codebook_dim: int | None = None           # factorised lookup in this many dims (ViT-VQGAN); None = z_channels
    use_cosine_sim: bool = False              # l2-normalised codes and inputs (cosine lookup); vq only
    learnable_codebook: bool = False          # codes learned by gradient; False = EMA updates
    ema_decay: float = 0.99                   # EMA decay of the codebook statistics
    kmeans_init: bool = True                  # k-means init of the codebook on the first batch
    kmeans_iters: int = 10                    # Lloyd iterations of that init
    threshold_ema_dead_code: float = 2.0      # codes whose EMA usage falls below this are restarted; 0 = off
    commitment_weight: float = 0.25           # beta of the commitment term ||z_e - sg[z_q]||^2
    rotation_trick: bool = False              # vq: rotation-trick gradients (Fifty 2024) instead of straight-through
    sync_codebook: bool | None = None         # all-reduce codebook statistics under DDP; None = auto when built
    # msvq (VAR) options
    phi_count: int = 4                        # phi convs shared across scales, picked by relative scale position
    phi_ratio: float = 0.5                    # r in h = (1 - r) h + r conv(h); 0 turns phi off
    # fsq options
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)  # levels per dim (each >= 3); codebook = product
    # lfq options
    lfq_bits: int = 10                        # d: codebook size 2 ** d
    lfq_entropy_weight: float = 0.1           # weight of LFQ's entropy penalty
    lfq_commitment_weight: float = 0.25       # weight of LFQ's commitment term
    lfq_diversity_gamma: float = 1.0          # weight of the batch (codebook) entropy inside the penalty

    def __post_init__(self) -> None:
        for name in ("channel_mults", "attn_resolutions", "scales", "fsq_levels"):
            value = getattr(self, name)
            if isinstance(value, list):  # JSON gives lists; keep the config hashable
                object.__setattr__(self, name, tuple(value))
        self._validate()

    # ------------------------------------------------------------------ derived

    @property
    def factor(self) -> int:
        """Downsampling factor of the autoencoder (pixels per token side)."""
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def token_size(self) -> int:
        """Side of the finest token map."""
        return self.image_size // self.factor

    @property
    def token_scales(self) -> tuple[int, ...]:
        """Sides of the token maps, coarse to fine; single-scale quantizers have one."""
        return self.scales if self.quantizer == "msvq" else (self.token_size,)

    @property
    def effective_codebook_size(self) -> int:
        if self.quantizer == "fsq":
            return math.prod(self.fsq_levels)
        if self.quantizer == "lfq":
            return 2**self.lfq_bits
        return self.codebook_size

    @property
    def spec(self) -> "TokenizerSpec":
        return TokenizerSpec(
            codebook_size=self.effective_codebook_size,
            scales=self.token_scales,
            image_size=self.image_size,
            channels=self.channels,
            factor=self.factor,
        )

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown TokenizerConfig fields {unknown}: the config was written by another "
                f"version of tokgen or edited by hand; remove them (known fields: {sorted(known)})"
            )
        return cls(**data)

    # ------------------------------------------------------------------ validation

    def _validate(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"TokenizerConfig: {msg}")

        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            fail(f"channel_mults must be a non-empty tuple of positive ints, got {self.channel_mults}")
        if self.image_size % self.factor:
            fail(
                f"image_size {self.image_size} is not divisible by the downsampling factor "
                f"{self.factor} (= 2 ** (len(channel_mults) - 1)); pick an image_size that is a "
                f"multiple of {self.factor} or change channel_mults"
            )
        if self.channels < 1 or self.base_width < 1 or self.z_channels < 1 or self.num_res_blocks < 1:
            fail("channels, base_width, z_channels and num_res_blocks must be >= 1")
        if self.quantizer not in QUANTIZER_KINDS:
            fail(f"unknown quantizer {self.quantizer!r}; choose one of {QUANTIZER_KINDS}")
        if self.quantizer in ("vq", "msvq") and self.codebook_size < 2:
            fail(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.use_cosine_sim and self.learnable_codebook:
            fail("use_cosine_sim needs the EMA codebook (vector-quantize-pytorch cannot learn "
                 "cosine codes by gradient); set learnable_codebook=False")
        if self.quantizer == "msvq":
            self._validate_scales(fail)
            if self.use_cosine_sim:
                fail("msvq quantizes residuals, whose norms matter; cosine lookup discards them. "
                     "Set use_cosine_sim=False (codebook_dim still gives a factorised lookup)")
            if self.phi_count < 1 or not 0.0 <= self.phi_ratio <= 1.0:
                fail(f"phi_count must be >= 1 and phi_ratio in [0, 1], got {self.phi_count}, {self.phi_ratio}")
        elif self.scales is not None and tuple(self.scales) != (self.token_size,):
            fail(f"scales={self.scales} only applies to quantizer='msvq'; a single-scale "
                 f"{self.quantizer!r} tokenizer has scales ({self.token_size},): drop the field")
        if self.quantizer == "fsq" and (not self.fsq_levels or min(self.fsq_levels) < 3):
            fail(f"fsq_levels must all be >= 3 (FSQ paper, e.g. (8, 5, 5, 5)), got {self.fsq_levels}")
        if self.quantizer == "lfq" and not 1 <= self.lfq_bits <= 20:
            fail(f"lfq_bits must be in [1, 20] (codebook 2 ** bits), got {self.lfq_bits}")

    def _validate_scales(self, fail) -> None:
        scales = self.scales
        if not scales:
            fail(f"quantizer='msvq' needs scales, e.g. (1, 2, 3, 4, 6, {self.token_size})")
        if any(s < 1 for s in scales) or any(a >= b for a, b in zip(scales, scales[1:])):
            fail(f"scales must be positive and strictly increasing, got {scales}")
        if scales[-1] != self.token_size:
            fail(
                f"the last scale must be the full token map {self.token_size} "
                f"(= image_size {self.image_size} // factor {self.factor}), got scales {scales}"
            )


@dataclass(frozen=True)
class TokenizerSpec:
    """What a generator needs to know about a tokenizer, and nothing more."""

    codebook_size: int          # token ids are in [0, codebook_size)
    scales: tuple[int, ...]     # token-map sides, coarse to fine; single-scale: (h,)
    image_size: int             # square image side in pixels
    channels: int               # image channels
    factor: int                 # pixels per token side at the finest scale

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(int(s) for s in self.scales))

    @property
    def tokens_per_image(self) -> int:
        return sum(s * s for s in self.scales)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizerSpec":
        return cls(**data)


def read_spec(directory: str | Path) -> TokenizerSpec:
    """The spec of a saved tokenizer, without building it (for generators and their trainers)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer config at {path}: pass a directory written by save_pretrained")
    return TokenizerSpec.from_dict(json.loads(path.read_text())["spec"])


# ---------------------------------------------------------------------------- presets

# Thin at full resolution, wide at the token map (16 -> 32 -> 64 channels at 32 -> 16 -> 8 px), no
# middle attention, 1024 codes: on 2 CPU cores for 5 minutes this reconstructed the shapes best.
# The full-resolution convs dominate the cost, so halving their width about doubles the steps a
# budget buys; attention at 8x8 cost steps and bought nothing; 256 codes were all in use and rounded
# small diamonds into circles. See the README's tokenizer table for the measured runs.
_SHAPES_TINY = TokenizerConfig(
    image_size=32, base_width=16, channel_mults=(1, 2, 4), num_res_blocks=1, mid_attention=False,
    z_channels=16, quantizer="vq", codebook_size=1024, kmeans_init=True, threshold_ema_dead_code=2.0,
)

# VQGAN f16 (Esser et al. 2021, taming's imagenet f16 config) with the ViT-VQGAN / LlamaGen codebook:
# 16384 codes looked up in 8 l2-normalised dims.
_IMAGENET_256 = TokenizerConfig(
    image_size=256, base_width=128, channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2,
    attn_resolutions=(16,), mid_attention=True, z_channels=256, quantizer="vq",
    codebook_size=16384, codebook_dim=8, use_cosine_sim=True, kmeans_init=True,
    threshold_ema_dead_code=2.0,
)

# VAR's tokenizer (Tian et al. 2024, vqvae.py: ch 160, z 32, V 4096, f16, 10 scales, 4 shared phis).
_IMAGENET_256_VAR = TokenizerConfig(
    image_size=256, base_width=160, channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2,
    attn_resolutions=(16,), mid_attention=True, z_channels=32, quantizer="msvq",
    codebook_size=4096, scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), phi_count=4, phi_ratio=0.5,
    kmeans_init=True, threshold_ema_dead_code=2.0,
)

PRESETS: dict[str, TokenizerConfig] = {
    # 32x32 shapes -> 8x8 tokens; trains on 2 CPU cores in minutes.
    "shapes-tiny": _SHAPES_TINY,
    # z 32: residuals of six scales need a roomier latent than one map (80% vs 62% judged, README)
    "shapes-tiny-msvq": dataclasses.replace(_SHAPES_TINY, quantizer="msvq", scales=(1, 2, 3, 4, 6, 8), z_channels=32),
    "shapes-tiny-fsq": dataclasses.replace(_SHAPES_TINY, quantizer="fsq", fsq_levels=(8, 5, 5, 5)),
    "shapes-tiny-lfq": dataclasses.replace(_SHAPES_TINY, quantizer="lfq", lfq_bits=8),
    "imagenet-256": _IMAGENET_256,
    "imagenet-256-var": _IMAGENET_256_VAR,
}


def get_preset(name: str, **overrides: Any) -> TokenizerConfig:
    """A preset by name, with optional field overrides (`get_preset("shapes-tiny", codebook_size=512)`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown tokenizer preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
