"""Tokenizer hyperparameters (`TokenizerConfig`) and what generators are built from (`TokenizerSpec`).

A config is frozen and JSON-round-trips through `to_dict` / `from_dict`; `VQTokenizer`'s
`save_pretrained` writes it next to the weights.  Invalid combinations raise `ValueError` at
construction, before any weights are built: the autoencoder's checks are here, the quantizer's
are its class's (`Quantizer.validate_config`), so this file has no branch per quantizer kind.
The named presets (model, loss and training together) are in presets.py.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    z_channels: int = 16                      # channels of the encoder's output (and the decoder's input)
    norm_groups: int | None = None            # GroupNorm groups; None = gcd(32, channels // 4); 32 = VQGAN, LlamaGen, VAR
    # a conv between the encoder and the quantizer and its mirror before the decoder (VQGAN's quant_conv /
    # post_quant_conv): kernel 1 or 3 (VAR), 0 = none (the encoder's output is quantized directly)
    quant_conv_kernel: int = 0
    embed_dim: int | None = None              # channels the quantizer sees (quant_conv's output); None = z_channels
    # --- quantizer ---
    quantizer: str = "vq"                     # a registered kind (QUANTIZERS): vq, msvq (VAR multi-scale), fsq, lfq
    codebook_size: int = 256                  # vq / msvq: number of codes (fsq / lfq derive theirs)
    scales: tuple[int, ...] | None = None     # msvq: token-map sides, increasing, last = image_size // factor
    # vq / msvq codebook options (vector-quantize-pytorch's VectorQuantize)
    codebook_dim: int | None = None           # factorised lookup in this many dims (ViT-VQGAN); None = latent_dim
    use_cosine_sim: bool = False              # l2-normalised codes and inputs (cosine lookup); vq only
    learnable_codebook: bool = False          # codes learned by gradient; False = EMA updates
    ema_decay: float = 0.99                   # EMA decay of the codebook statistics
    kmeans_init: bool = True                  # k-means init of the codebook (see kmeans_init_vectors)
    kmeans_iters: int = 10                    # Lloyd iterations of that init
    # vectors that init sees, gathered over as many training batches as it takes (summed over
    # processes under DDP), the quantizer passing its input through until then; 0 = the first batch
    kmeans_init_vectors: int = 0
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
    def latent_dim(self) -> int:
        """Channels C of the latent the quantizer sees: `embed_dim` when there is a quant_conv, else
        the encoder's `z_channels`.  Quantizers read this, never z_channels."""
        return self.embed_dim if self.embed_dim is not None else self.z_channels

    @property
    def token_size(self) -> int:
        """Side of the finest token map."""
        return self.image_size // self.factor

    @property
    def spec(self) -> "TokenizerSpec":
        """The spec of the tokenizer this config builds, without building it: the quantizer's class
        reports its codebook size and scales (`Quantizer.token_layout`), as the built model's
        `VQTokenizer.spec` reads them off its quantizer."""
        from .quantizers import quantizer_class  # the quantizers import this module

        codebook_size, scales = quantizer_class(self.quantizer).token_layout(self)
        return TokenizerSpec.of(self, codebook_size, scales)

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "TokenizerConfig") -> "TokenizerConfig":
        """The config of a dict read from JSON; `source` (e.g. the config.json path) is named in the
        errors for unknown fields and for values of the wrong type (`tokgen.io.check_types`)."""
        from tokgen.io import check_types

        check_types(cls, data, source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown TokenizerConfig fields {unknown}: the config was written by another "
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
        if self.quant_conv_kernel not in (0, 1, 3):
            fail(f"quant_conv_kernel must be 0 (no quant_conv), 1 or 3, got {self.quant_conv_kernel}")
        if self.embed_dim is not None and self.embed_dim < 1:
            fail(f"embed_dim must be >= 1 or None (= z_channels), got {self.embed_dim}")
        if self.latent_dim != self.z_channels and not self.quant_conv_kernel:
            fail(f"embed_dim {self.embed_dim} differs from z_channels {self.z_channels}: only a quant_conv maps "
                 f"one to the other; set quant_conv_kernel=1 (or 3), or embed_dim=None")
        if self.norm_groups is not None:
            widths = sorted({self.base_width * m for m in self.channel_mults})
            bad = [w for w in widths if w % self.norm_groups] if self.norm_groups >= 1 else widths
            if bad:
                fail(f"norm_groups {self.norm_groups} must divide every level's width {widths} (not {bad}); "
                     f"pick a divisor or None (the default rule)")
        # The quantizer's own settings are checked by its class: a new kind brings its checks along.
        from .quantizers import QUANTIZERS  # the quantizers import this module

        if self.quantizer not in QUANTIZERS:
            fail(f"unknown quantizer {self.quantizer!r}; choose one of {tuple(QUANTIZERS)}")
        try:
            QUANTIZERS[self.quantizer].validate_config(self)
        except ValueError as err:
            raise ValueError(f"TokenizerConfig: {err}") from None


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

    @classmethod
    def of(cls, config: TokenizerConfig, codebook_size: int, scales: tuple[int, ...] | list[int]) -> "TokenizerSpec":
        """The spec of a tokenizer with this config whose quantizer has these codebook size and scales."""
        return cls(int(codebook_size), tuple(scales), config.image_size, config.channels, config.factor)

    @property
    def tokens_per_image(self) -> int:
        return sum(s * s for s in self.scales)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "TokenizerSpec") -> "TokenizerSpec":
        from tokgen.io import check_types

        check_types(cls, data, source)
        known = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = sorted(known - set(data)), sorted(set(data) - known)
        if missing or unknown:
            raise ValueError(f"{source}: a TokenizerSpec needs exactly the fields {sorted(known)}; "
                             + ("missing " + str(missing) if missing else "")
                             + ("; " if missing and unknown else "")
                             + ("unknown " + str(unknown) if unknown else "")
                             + ": write the tokenizer again with save_pretrained")
        return cls(**data)


def read_spec(directory: str | Path) -> TokenizerSpec:
    """The spec of a saved tokenizer, without building it (for generators and their trainers)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer config at {path}: pass a directory written by save_pretrained")
    from tokgen.io import read_json

    meta = read_json(path, damaged=f"the tokenizer folder {path.parent} is damaged")
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        raise ValueError(f"{path} has no 'spec' object: not a tokenizer folder written by save_pretrained, "
                         f"or a damaged one; save or download it again")
    return TokenizerSpec.from_dict(meta["spec"], source=f"{path} (spec)")


# Moved to presets.py (one object per preset: model, loss, training) and the quantizer registry;
# these names still import from here for existing callers.
_MOVED = {"PRESETS": ".presets", "get_preset": ".presets", "QUANTIZER_KINDS": ".quantizers"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name], __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
