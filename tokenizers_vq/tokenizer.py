"""`VQTokenizer`: images <-> token maps, with one conv autoencoder and a pluggable quantizer.

    tok = VQTokenizer(get_preset("shapes-tiny"))
    tokens = tok.encode(images)          # list of LongTensor (B, s, s), one per scale
    images = tok.decode(tokens)          # (B, 3, H, W) in [0, 1]
    recon, qout = tok(images)            # training: unclamped recon, QuantizerOutput
    tok.save_pretrained("ckpt/tok");  tok = VQTokenizer.from_pretrained("ckpt/tok")
    tok.push_to_hub("me/my-tokenizer");  tok = VQTokenizer.from_pretrained("me/my-tokenizer")

Checkpoints are a directory with `config.json` (the config and the spec), `model.safetensors` and
a model card `README.md` (tokgen/hub.py); nothing is pickled.  The spec (codebook size, token-map
scales) is read off the built quantizer, so every quantizer kind reports its own.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from tokgen.hub import HubMixin
from tokgen.io import check_state, eval_mode, read_model, write_model, writing_dir

from .autoencoder import Decoder, Encoder
from .config import TokenizerConfig, TokenizerSpec
from .presets import preset_name
from .quantizers import QuantizerOutput, build_quantizer

FORMAT = "tokgen.VQTokenizer"
FORMAT_VERSION = 1
IMAGE_TOLERANCE = 1e-3  # how far outside [0, 1] check_images lets values be (resampling overshoot)


class VQTokenizer(
    nn.Module, HubMixin,
    loader="tokgen.tokenizers_vq:VQTokenizer.from_pretrained",
    tags=("image-tokenizer", "vector-quantization"),
    card_fields=("preset", "quantizer", "codebook_size", "scales", "z_channels"),
    tag_fields=("quantizer",),
    card_title="tokgen image tokenizer ({preset}, {quantizer})",
    card_summary="A VQGAN-style convolutional autoencoder with the {quantizer} quantizer: it turns "
                 "{image_size}x{image_size} images into token maps of sides {scales} (ids in "
                 "[0, {codebook_size}), {tokens_per_image} tokens per image) and back.",
):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        arch = dict(
            base_width=config.base_width, channel_mults=config.channel_mults,
            num_res_blocks=config.num_res_blocks, z_channels=config.z_channels,
            resolution=config.image_size, attn_resolutions=config.attn_resolutions,
            mid_attention=config.mid_attention, norm_groups=config.norm_groups,
        )
        self.encoder = Encoder(in_channels=config.channels, **arch)
        # VQGAN's quant_conv / post_quant_conv (z_channels <-> the quantizer's latent_dim); Identity
        # when the config has none, so those models' state-dict keys are what they always were.
        k, z, c = config.quant_conv_kernel, config.z_channels, config.latent_dim
        self.quant_conv = nn.Conv2d(z, c, k, padding=k // 2) if k else nn.Identity()
        self.quantizer = build_quantizer(config)
        self.post_quant_conv = nn.Conv2d(c, z, k, padding=k // 2) if k else nn.Identity()
        self.decoder = Decoder(out_channels=config.channels, **arch)
        # where converted weights came from ({"format", "file", "sha256", "image_size"}), kept in config.json
        self.origin: dict | None = None

    # ------------------------------------------------------------------ description

    @property
    def spec(self) -> TokenizerSpec:
        """What generators need: the built quantizer's codebook size and scales, with the image size."""
        return TokenizerSpec.of(self.config, self.quantizer.codebook_size, self.quantizer.scales)

    @property
    def preset(self) -> str:
        """The registered preset this model's config is, or "custom"."""
        return preset_name(self.config) or "custom"

    @property
    def last_layer(self) -> Tensor:
        """The decoder's last weight, for VQGAN's adaptive GAN weight."""
        return self.decoder.last_layer

    # ------------------------------------------------------------------ model

    def forward(self, images: Tensor) -> tuple[Tensor, QuantizerOutput]:
        """Training path: images (B, C, H, W) in [0, 1] -> (recon, quantizer output).

        `recon` is float32 and not clamped (clamping would cut gradients at the borders)."""
        images = self._as_model_dtype(images)
        qout = self.quantizer(self.latent(images))
        recon = (self.decode_latent(qout.z_q) + 1) / 2
        return recon, qout

    def latent(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> what the quantizer sees (B, latent_dim, h, w).  All the
        published tokenizers tokgen loads take x * 2 - 1 as input (LlamaGen's Normalize(0.5, 0.5),
        VAR's x * 2 - 1, taming's x / 127.5 - 1 on 0..255), as ours do."""
        return self.quant_conv(self.encoder(images * 2 - 1))

    def decode_latent(self, z_q: Tensor) -> Tensor:
        """Quantized latent (B, latent_dim, h, w) -> the decoder's raw output, about [-1, 1], not clamped."""
        # contiguous: the decoder then sees one memory layout on every path, so decode(encode(x))
        # matches forward bit for bit (convs round differently in channels-last layout).
        return self.decoder(self.post_quant_conv(z_q.contiguous()))

    @torch.no_grad()
    def encode(self, images: Tensor) -> list[Tensor]:
        """Images (B, C, H, W) in [0, 1] -> one LongTensor (B, s, s) per scale, coarse to fine.

        Runs in inference mode (eval, no grad): encoding never updates the codebook.  Float images
        of another dtype (float64 from numpy, float16, bfloat16) are converted to the model's."""
        images = self._as_model_dtype(images)
        with eval_mode(self):
            return self.quantizer(self.latent(images)).indices

    @torch.no_grad()
    def decode(self, tokens: list[Tensor]) -> Tensor:
        """One LongTensor (B, s, s) per scale -> images (B, C, H, W) in [0, 1], float32."""
        self.check_tokens(tokens)
        with eval_mode(self):
            z_q = self.quantizer.indices_to_latent(list(tokens))
            return ((self.decode_latent(z_q) + 1) / 2).clamp(0, 1)

    # ------------------------------------------------------------------ input checks

    def check_images(self, images: Tensor) -> None:
        """Refuse, with the fix, what `encode` / `forward` cannot take: a wrong shape, integer
        images (uint8: divide by 255), NaN or inf values (counted), values outside [0, 1] (beyond
        IMAGE_TOLERANCE).  Any float dtype passes: `encode` and `forward` convert it."""
        c, size = self.config.channels, self.config.image_size
        expected = f"(B, {c}, {size}, {size})"
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"expected a batch of images {expected}, got {shape}: add the batch "
                             f"dimension with images.unsqueeze(0) for a single image")
        if images.shape[1] != c:
            fix = "repeat grey images to RGB with x.repeat(1, 3, 1, 1)" if images.shape[1] == 1 else \
                f"this tokenizer was built for {c} channels (TokenizerConfig.channels)"
            raise ValueError(f"expected images of shape {expected}, got {tuple(images.shape)}: {fix}")
        h, w = images.shape[-2:]
        if h % self.config.factor or w % self.config.factor:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the tokenizer's downsampling factor "
                f"{self.config.factor}; resize or crop to {size}x{size}"
            )
        if (h, w) != (size, size):
            raise ValueError(f"expected images of shape {expected}, got {tuple(images.shape)}: this "
                             f"tokenizer was configured for {size}x{size}; resize or crop the images")
        if not images.is_floating_point():
            fix = "images.float() / 255" if images.dtype == torch.uint8 else \
                "images.float() / 65535 for 16-bit data, or images.float() / images.max() for other integers"
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}: convert with {fix}")
        if torch.compiler.is_compiling():
            # The value checks below read the batch back to the host: a sync and a graph break.
            # A compiled training step leaves them to the data pipeline (tokgen.data's to_pixels
            # refuses NaN and out-of-range values) and to the trainer's non-finite loss check.
            return
        x = images.detach()
        lo, hi = torch.aminmax(x)
        lo_v, hi_v = torch.stack([lo, hi]).float().tolist()  # one sync (NaN and inf show up here)
        if not (math.isfinite(lo_v) and math.isfinite(hi_v)):
            finite = torch.isfinite(x)
            nan, n = int(torch.isnan(x).sum()), x.numel()
            inf = n - nan - int(finite.sum())
            first = tuple(int(i) for i in (~finite).nonzero()[0])
            raise ValueError(f"images hold {nan} NaN and {inf} inf value(s) of {n} (the first at index {first}): "
                             f"the data is corrupt; find the bad images with torch.isfinite(images).all(dim=(1, 2, 3))")
        if lo_v < -IMAGE_TOLERANCE or hi_v > 1 + IMAGE_TOLERANCE:
            raise ValueError(f"expected images in [0, 1], got values in [{lo_v:.3g}, {hi_v:.3g}]: "
                             f"convert from [-1, 1] with (x + 1) / 2, from 0..255 with x / 255, or clamp with "
                             f"x.clamp(0, 1)")

    def _as_model_dtype(self, images: Tensor) -> Tensor:
        """check_images, then float images of another dtype in the model's (float64 -> float32)."""
        self.check_images(images)
        dtype = self.decoder.last_layer.dtype
        return images if images.dtype == dtype else images.to(dtype)

    def check_tokens(self, tokens: list[Tensor]) -> None:
        scales, v = self.spec.scales, self.spec.codebook_size
        want = ", ".join(f"(B, {s}, {s})" for s in scales)
        if isinstance(tokens, Tensor) or not isinstance(tokens, (list, tuple)):
            raise ValueError(f"expected a list of {len(scales)} token maps [{want}], got "
                             f"{type(tokens).__name__}: wrap a single map as [tokens]")
        if len(tokens) != len(scales):
            raise ValueError(f"expected {len(scales)} token maps (scales {list(scales)}), got "
                             f"{len(tokens)}: pass every scale, coarse to fine, as encode returns them")
        batch = tokens[0].shape[0] if isinstance(tokens[0], Tensor) and tokens[0].ndim else None
        for k, (t, s) in enumerate(zip(tokens, scales)):
            if not isinstance(t, Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                nan = int((~torch.isfinite(t)).sum()) if isinstance(t, Tensor) and t.is_floating_point() else 0
                raise ValueError(f"token map {k} must be an integer tensor, got "
                                 f"{getattr(t, 'dtype', type(t).__name__)}"
                                 + (f" holding {nan} NaN/inf value(s): these are not token ids" if nan else
                                    ": convert with .long()"))
            if t.ndim != 3 or t.shape[1:] != (s, s) or t.shape[0] != batch:
                raise ValueError(f"token map {k} has shape {tuple(t.shape)}, expected ({batch}, {s}, {s}): "
                                 f"expected maps [{want}] with one batch size")
            if not t.numel():
                continue
            lo, hi = torch.aminmax(t)
            if lo < 0 or hi >= v:
                bad = (t < 0) | (t >= v)
                first = tuple(int(i) for i in bad.nonzero()[0])
                raise ValueError(f"token map {k} has {int(bad.sum())} id(s) outside [0, {v - 1}] (codebook_size "
                                 f"{v}), the first {t[first].item()} at index {first}; ids span [{lo.item()}, "
                                 f"{hi.item()}]: the tokens come from another tokenizer or a generator built "
                                 f"with a different codebook size")

    # ------------------------------------------------------------------ checkpoints

    def save_pretrained(self, save_directory: str | os.PathLike, *, training: dict | None = None,
                        license: str | None = None) -> Path:
        """Write config.json + model.safetensors + README.md (the model card) to `save_directory`,
        atomically (temp dir, then rename), replacing a previous checkpoint there.  `training`:
        facts for the card (e.g. {"steps": 5000, "images_seen": 160000, "dataset": "shapes"});
        `license`: the weights' license for the card's metadata, when known."""
        with writing_dir(save_directory) as tmp:
            # sync_codebook is how this process trained (DDP or not), not part of the model: a
            # checkpoint loads as "auto" so it works in a single process and under DDP alike.
            config = {**self.config.to_dict(), "sync_codebook": None}
            meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config, "spec": self.spec.to_dict()}
            if self.origin:
                meta["origin"] = self.origin
                # the card's facts name the source file, unless the caller records a training run
                training = training or {f"converted from {k}": v for k, v in self.origin.items()}
            write_model(tmp, meta, self.state_dict())
            self.write_model_card(tmp, load_from=save_directory, training=training, license=license)
        return Path(save_directory)

    # from_pretrained(folder or hub id, *, revision=, cache_dir=, token=, local_files_only=, config=,
    # device=) is HubMixin's: it finds the folder, then calls this.
    @classmethod
    def _from_folder(
        cls,
        directory: str | os.PathLike,
        *,
        config: TokenizerConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> "VQTokenizer":
        """Load a directory written by `save_pretrained`.  `config` replaces the stored config
        (e.g. to change `sync_codebook`); the weights must fit it.  Returns the model in eval mode."""
        meta, state = read_model(directory, FORMAT, "generators load with generators.load_generator")
        source = str(Path(directory) / "config.json")
        model = cls(config if config is not None else TokenizerConfig.from_dict(meta["config"], source=source))
        load_checked(model, state, source=str(directory))
        model.origin = meta.get("origin") if isinstance(meta.get("origin"), dict) else None
        return model.to(device).eval()


def load_checked(model: nn.Module, state: dict[str, Tensor], source: str = "checkpoint") -> None:
    """`load_state_dict(strict=True)`, raising one ValueError that names every missing,
    unexpected and mis-shaped key."""
    check_state(model.state_dict(), state, source, "the tokenizer config",
                "Load it with the config it was saved with (omit `config=`) or retrain.")
    model.load_state_dict(state, strict=True)
