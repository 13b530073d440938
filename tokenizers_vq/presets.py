"""Named tokenizer presets: one `TokenizerPreset` per name holds everything that goes together --
the model (`TokenizerConfig`), its loss (`LossConfig`) and the training settings `tokgen
train-tokenizer` defaults to -- in one registry, `TOKENIZER_PRESETS`.

    preset = get_tokenizer_preset("shapes-tiny-msvq")
    tokenizer = VQTokenizer(preset.model);  loss = TokenizerLoss(preset.loss)
    preset.training                      # {"batch_size": 32, "lr": 2e-3, ...}

`PRESETS` (name -> model config), `LOSS_PRESETS` (name -> loss config) and `get_preset(name,
**overrides)` are views of that registry for existing callers.  A new preset is one
`register_preset(TokenizerPreset(...))`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, TypeVar

from .config import TokenizerConfig
from .losses import LossConfig

V = TypeVar("V")


@dataclass(frozen=True)
class TokenizerPreset:
    name: str
    model: TokenizerConfig                 # the architecture and quantizer
    loss: LossConfig                       # the training objective
    # `tokgen train-tokenizer`'s defaults for this preset: TrainConfig / ScheduleConfig fields (flags win)
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model, TokenizerConfig) or not isinstance(self.loss, LossConfig):
            raise TypeError(f"preset {self.name!r}: model must be a TokenizerConfig and loss a LossConfig, got "
                            f"{type(self.model).__name__} and {type(self.loss).__name__}")
        # read-only, so the registry's presets cannot be changed by a caller that edits what it got
        object.__setattr__(self, "training", MappingProxyType(dict(self.training)))


TOKENIZER_PRESETS: dict[str, TokenizerPreset] = {}


def register_preset(preset: TokenizerPreset) -> TokenizerPreset:
    if preset.name in TOKENIZER_PRESETS:
        raise ValueError(f"tokenizer preset {preset.name!r} is already registered: pick another name")
    TOKENIZER_PRESETS[preset.name] = preset
    return preset


def get_tokenizer_preset(name: str) -> TokenizerPreset:
    if name not in TOKENIZER_PRESETS:
        raise ValueError(f"unknown tokenizer preset {name!r}; choose one of {sorted(TOKENIZER_PRESETS)}")
    return TOKENIZER_PRESETS[name]


def get_preset(name: str, **overrides: Any) -> TokenizerConfig:
    """A preset's model config, with optional field overrides (`get_preset("shapes-tiny", codebook_size=512)`)."""
    return dataclasses.replace(get_tokenizer_preset(name).model, **overrides)


def preset_name(config: TokenizerConfig) -> str | None:
    """The name of the registered preset whose model is `config` (how a process syncs its codebook
    aside, which is not part of the model), or None for a config of one's own."""
    def plain(c: TokenizerConfig) -> TokenizerConfig:
        return dataclasses.replace(c, sync_codebook=None)

    return next((p.name for p in TOKENIZER_PRESETS.values() if plain(p.model) == plain(config)), None)


class _View(Mapping[str, V]):
    """name -> one part of each registered preset, read live from the registry."""

    def __init__(self, part: Callable[[TokenizerPreset], V]):
        self._part = part

    def __getitem__(self, name: str) -> V:
        return self._part(TOKENIZER_PRESETS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(TOKENIZER_PRESETS)

    def __len__(self) -> int:
        return len(TOKENIZER_PRESETS)

    def __repr__(self) -> str:
        return repr(dict(self))


PRESETS: Mapping[str, TokenizerConfig] = _View(lambda p: p.model)
LOSS_PRESETS: Mapping[str, LossConfig] = _View(lambda p: p.loss)


# ---------------------------------------------------------------------------- the presets

# --- shapes: 32x32 synthetic shapes, trained on 2 CPU cores in minutes

# Thin at full resolution, wide at the token map (16 -> 32 -> 64 channels at 32 -> 16 -> 8 px), no
# middle attention, 1024 codes: on 2 CPU cores for 5 minutes this reconstructed the shapes best.
# The full-resolution convs dominate the cost, so halving their width about doubles the steps a
# budget buys; attention at 8x8 cost steps and bought nothing; 256 codes were all in use and rounded
# small diamonds into circles. See the README's tokenizer table for the measured runs.
_SHAPES_TINY = TokenizerConfig(
    image_size=32, base_width=16, channel_mults=(1, 2, 4), num_res_blocks=1, mid_attention=False,
    z_channels=16, quantizer="vq", codebook_size=1024, kmeans_init=True, threshold_ema_dead_code=2.0,
)

# Small images, minutes of CPU: pixels + quantizer only (a GAN needs longer runs to help).
# L2, not L1: on mostly black images L1 pulls an undecided pixel to the per-channel median, so
# while the encoder still lumps cyan, purple and blue together the L1-optimal output is blue and
# the decoder's gradients cancel; L2 (the conditional mean, as LlamaGen's VQ trainer uses) keeps
# a pull towards each hue. Multi-scale `--seed 1` sat with cyan and purple reconstructed as blue
# until step ~2,800 under L1 (66.35% judged at 5 minutes); under L2 it was past PSNR 26 by step
# 550 and ended at 100% (README, "The tokenizer").
_SHAPES_LOSS = LossConfig(reconstruction="l2", disc_weight=0.0, disc_channels=32, disc_layers=2)

# batch 32 at lr 2e-3 took the most steps and the best reconstructions out of a 5-minute CPU
# budget. A linear warm-up over the first 300 steps: straight at 2e-3 some initialisations sat for
# hundreds to thousands of steps at PSNR ~16 (a near-black output) with 5-15% of the codes in use
# (one 5-minute single-scale run got out only at step ~2,500: 35% judged); warmed up, three such
# seeds were past PSNR 21 by step 600 where the straight runs were at 16-19. The weights' EMA
# (0.995, a horizon of ~200 steps) evens out where a constant-rate run happens to stop (and the
# background tint that halved SSIM). float32 even where bf16 is fast: bf16 autocast bought steps on
# the measuring CPU but ruined the codebook assignment (README).
_SHAPES_TRAINING = {"batch_size": 32, "lr": 2e-3, "warmup_steps": 300, "ema_decay": 0.995, "mixed_precision": "fp32"}


def _shapes(name: str, **model: Any) -> TokenizerPreset:
    return register_preset(TokenizerPreset(name, dataclasses.replace(_SHAPES_TINY, **model), _SHAPES_LOSS,
                                           _SHAPES_TRAINING))


_shapes("shapes-tiny")
# z 32: residuals of six scales need a roomier latent than one map (80% vs 62% judged, README)
_shapes("shapes-tiny-msvq", quantizer="msvq", scales=(1, 2, 3, 4, 6, 8), z_channels=32)
_shapes("shapes-tiny-fsq", quantizer="fsq", fsq_levels=(8, 5, 5, 5))
_shapes("shapes-tiny-lfq", quantizer="lfq", lfq_bits=8)

# --- imagenet: 256x256, for GPUs

# LlamaGen's tokenizer recipe (Sun et al., "Autoregressive Model Beats Diffusion: Llama for Scalable
# Image Generation", 2024; FoundationVision/LlamaGen @ce98ec4, tokenizer/tokenizer_image/vq_train.py,
# "vq_train.py:N" below; vq_loss.py for what vq_train.py leaves at VQLoss's defaults).
_IMAGENET_LOSS = LossConfig(
    reconstruction="l2",          # vq_train.py:290 --reconstruction-loss l2
    reconstruction_weight=1.0,    # vq_train.py:289 --reconstruction-weight 1.0
    perceptual_weight=1.0,        # vq_train.py:291 --perceptual-weight 1.0 (lpips.py: VGG16 + vgg_lpips lin layers)
    require_perceptual=True,      # the recipe has no run without LPIPS: refuse to start without its weights
    quantizer_weight=1.0,         # vq_train.py:286 --codebook-weight 1.0 (commitment beta: TokenizerConfig, :288)
    disc_weight=0.5,              # vq_train.py:292 --disc-weight 0.5
    disc_start=20_000,            # vq_train.py:293 --disc-start 20000
    adaptive_disc_weight=False,   # vq_loss.py:51 disc_adaptive_weight=False (vq_train.py:92-103 leaves it)
    disc_loss_weight=0.5,         # vq_loss.py:160 the discriminator's hinge loss times disc_weight
    disc_channels=64,             # vq_loss.py:50 disc_dim=64, PatchGAN (vq_train.py:294), hinge (:295, :296)
    disc_layers=3,                # vq_loss.py:51 disc_num_layers=3
)

# Per process: 16 x 8 GPUs = vq_train.py:308's global batch 128 (scripts/tokenizer/train_vq.sh runs
# torchrun with one process per GPU); on fewer GPUs raise --grad-accum (or --batch-size) to keep 128.
_IMAGENET_TRAINING = {
    "batch_size": 16,
    "lr": 1e-4,                   # vq_train.py:303 --lr 1e-4, constant (no scheduler in vq_train.py)
    "lr_schedule": "constant", "warmup_steps": 0,
    # vq_train.py:110-111 torch.optim.Adam(betas=(0.9, 0.95)) for the autoencoder and discriminator
    # (:305-306). Its --weight-decay 5e-2 (:304) is parsed but never used; the paper's text says AdamW
    # with weight decay 0.05: pass weight_decay=0.05 for that.
    "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.0,
    "grad_clip": 1.0,             # vq_train.py:307 --max-grad-norm 1.0
    "mixed_precision": "auto",    # vq_train.py:314 bf16: auto picks bf16 where the GPU runs it
    "ema_decay": 0.0,             # vq_train.py:282 --ema is off unless asked for
    "max_steps": 400_000,         # vq_train.py:302 40 epochs x 1,281,167 images / 128 ~ 400k steps
    "save_every": 5000,           # vq_train.py:312 --ckpt-every 5000
    "log_every": 100,             # vq_train.py:311 --log-every 100
    "sample_every": 2000,
    # vq_train.py:114-116: random crop (dataset/augmentation.py:29 random_crop_arr) and horizontal
    # flip; image folders and hub datasets take it as their `augment` option
    "augment": "crop_flip",
}

# LlamaGen VQ-16 (vq_model.py VQ_16: ch 128, ch_mult 1,1,2,2,4, 2 res blocks, attention at 16x16 and
# in the middle, z 256) with its codebook (vq_train.py:283-285, :288: 16384 codes, 8 l2-normalised
# dims, beta 0.25).  Unlike LlamaGen (codes learned by gradient from a uniform init) the codes
# are EMA-updated, k-means initialised on 20 vectors per code (327,680: 80 batches of 16 x 256 tokens
# on one process, 10 on eight) and dead codes restarted.
register_preset(TokenizerPreset("imagenet-256", TokenizerConfig(
    image_size=256, base_width=128, channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2,
    attn_resolutions=(16,), mid_attention=True, z_channels=256, quantizer="vq",
    codebook_size=16384, codebook_dim=8, use_cosine_sim=True, kmeans_init=True,
    kmeans_init_vectors=20 * 16384, threshold_ema_dead_code=2.0, commitment_weight=0.25,
), _IMAGENET_LOSS, _IMAGENET_TRAINING))

# VAR's tokenizer (Tian et al. 2024, vqvae.py: ch 160, z 32, V 4096, f16, 10 scales, 4 shared phis,
# beta 0.25).  VAR released no tokenizer training code; its paper (Sec. 3.2) trains it with "L2
# reconstruction + ||f - f_hat|| + perceptual (LPIPS) + GAN" without weights, so the weights and
# the training settings are LlamaGen's above.  k-means on 20 vectors per code (each image gives
# 680, one per token of its residual pyramid: 8 batches of 16).
register_preset(TokenizerPreset("imagenet-256-var", TokenizerConfig(
    image_size=256, base_width=160, channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2,
    attn_resolutions=(16,), mid_attention=True, z_channels=32, quantizer="msvq",
    codebook_size=4096, scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), phi_count=4, phi_ratio=0.5,
    kmeans_init=True, kmeans_init_vectors=20 * 4096, threshold_ema_dead_code=2.0, commitment_weight=0.25,
), _IMAGENET_LOSS, _IMAGENET_TRAINING))
