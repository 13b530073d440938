"""What a published tokenizer format is (`PublishedFormat`), the registry of them, and the
config inference the three share.

One format is one file (llamagen.py, var.py, taming.py) with one `PublishedFormat` subclass,
registered by name with `@register_format`: it knows where the state dict sits in the released
file, the keys that identify it, the keys it skips (loss, discriminator, training statistics), how
its config follows from the shapes, and its quantizer's keys.  The autoencoder's keys follow from
its `Layout` (keymap.py).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from torch import Tensor

from ..config import TokenizerConfig
from .keymap import Layout, Rule, codebook_rules

# Settings of every converted quantizer: the codebook is loaded, never k-means-initialised, and
# no code is restarted as "dead" if the tokenizer is fine-tuned; beta = 0.25 in all three papers.
CONVERTED_QUANTIZER = dict(kmeans_init=False, threshold_ema_dead_code=0.0, commitment_weight=0.25)


class PublishedFormat:
    name: ClassVar[str] = ""                     # the --from value, set by register_format
    released: ClassVar[str] = ""                 # the released file(s) this format reads
    layout: ClassVar[Layout]
    wrappers: ClassVar[tuple[str, ...]] = ()     # top-level entries that hold the state dict, preferred first
    signature: ClassVar[tuple[str, ...]] = ()    # keys every checkpoint of this format has
    foreign: ClassVar[tuple[str, ...]] = ()      # keys that show the file is another format
    cosine_codebook: ClassVar[bool] = False      # rows and inputs l2-normalised at every use (LlamaGen)

    # ------------------------------------------------------------------ per format

    def skip(self, key: str) -> bool:
        """True for a key the released file has but inference does not need."""
        return False

    def quantizer_fields(self, state: dict[str, Tensor], scales: tuple[int, ...] | None,
                         token_size: int) -> dict[str, Any]:
        """The quantizer's config fields.  By default one token map and one `quantize.embedding`
        codebook (LlamaGen, taming), l2-normalised when `cosine_codebook`; VAR overrides this."""
        if scales is not None:
            raise ValueError(f"scales only apply to the multi-scale var-vqvae format; {self.name} has one token map")
        size, _ = shape(state, "quantize.embedding.weight", self.name)
        return dict(quantizer="vq", codebook_size=size, use_cosine_sim=self.cosine_codebook)

    def quantizer_rules(self, config: TokenizerConfig) -> list[Rule]:
        """Rules filling our quantizer's keys (by default the single-scale VQ codebook)."""
        return codebook_rules("quantizer.vq._codebook", "quantize.embedding.weight", normalise=self.cosine_codebook)

    # ------------------------------------------------------------------ shared

    def matches(self, state: dict[str, Tensor]) -> bool:
        return all(k in state for k in self.signature) and not any(k in state for k in self.foreign)

    def config(self, state: dict[str, Tensor], image_size: int = 256,
               scales: tuple[int, ...] | None = None) -> TokenizerConfig:
        """The tokenizer config of this checkpoint: the architecture read off the shapes; the
        image size (no released file records it) and VAR's scales from the caller."""
        fields = autoencoder_fields(state, self.layout, image_size, self.name)
        token_size = image_size // 2 ** (len(fields["channel_mults"]) - 1)
        fields.update(self.quantizer_fields(state, scales, token_size))
        return TokenizerConfig(**fields, **CONVERTED_QUANTIZER)


def shape(state: dict[str, Tensor], key: str, fmt: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"the {fmt} checkpoint has no {key!r}, which its architecture needs: the file is "
                         f"damaged or of another format")
    return tuple(state[key].shape)


def autoencoder_fields(state: dict[str, Tensor], layout: Layout, image_size: int, fmt: str) -> dict[str, Any]:
    """TokenizerConfig fields of the shared VQGAN autoencoder, read off the encoder's shapes: width
    per level (conv1 of each level's first res block), res blocks per level, the levels that hold
    attention (at every image size the same levels), the latent and quant_conv sizes.  The decoder
    is assumed to mirror the encoder, as in all three; the key check then verifies it."""
    levels = layout.num_levels(state)
    if levels < 1:
        raise ValueError(f"the {fmt} checkpoint has no {layout.encoder_level.format(i=0)}.* keys")
    base = shape(state, "encoder.conv_in.weight", fmt)
    stage = [layout.level("encoder", i, levels) for i in range(levels)]
    widths = [shape(state, f"{s}.{layout.res}.0.conv1.weight", fmt)[0] for s in stage]
    if any(w % base[0] for w in widths):
        raise ValueError(f"the {fmt} encoder's level widths {widths} are not multiples of its base width {base[0]}")
    quant = shape(state, "quant_conv.weight", fmt)
    attn_key = "qkv" if layout.fused_qkv else "q"
    mid_attention = f"encoder.mid.{layout.middle[1]}.{attn_key}.weight" in state
    return dict(
        image_size=image_size,
        channels=base[1],
        base_width=base[0],
        channel_mults=tuple(w // base[0] for w in widths),
        num_res_blocks=layout.count(state, f"{stage[0]}.{layout.res}"),
        # attention where the peer has it: the resolution of level i is image_size / 2^i
        attn_resolutions=tuple(image_size // 2 ** i for i, s in enumerate(stage) if layout.count(state, f"{s}.attn")),
        mid_attention=mid_attention,
        z_channels=shape(state, "encoder.conv_out.weight", fmt)[0],
        norm_groups=32,                  # GroupNorm(32, eps=1e-6) in all three
        quant_conv_kernel=quant[-1],
        embed_dim=quant[0],
    )


# name -> format, filled by @register_format as published/__init__.py imports each file
FORMATS: dict[str, PublishedFormat] = {}


def register_format(name: str) -> Callable[[type[PublishedFormat]], type[PublishedFormat]]:
    def wrap(cls: type[PublishedFormat]) -> type[PublishedFormat]:
        cls.name = name
        FORMATS[name] = cls()
        return cls
    return wrap


def get_format(name: str) -> PublishedFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown tokenizer format {name!r}: choose one of {', '.join(FORMATS)}")
    return FORMATS[name]
