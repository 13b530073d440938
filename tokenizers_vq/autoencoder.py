"""Convolutional encoder and decoder of VQGAN.

Esser, Rombach, Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021
(the architecture of taming's `diffusionmodules/model.py`): ResNet blocks with GroupNorm + SiLU,
stride-2 convs down, nearest-neighbour + conv up, optional single-head self-attention at chosen
resolutions and in the middle.  The downsampling factor is 2 ** (len(channel_mults) - 1).

Both networks work on [-1, 1] tensors; `VQTokenizer` converts from and to [0, 1] images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def group_norm(channels: int, groups: int | None = None) -> nn.GroupNorm:
    # groups=None: 32 groups as in VQGAN, but at least 4 channels per group: with one channel per
    # group the norm erases the colour of flat regions (each channel is centred over the image),
    # which cripples narrow models on flat-coloured data.  The published tokenizers (taming,
    # LlamaGen, VAR) use exactly 32 groups: TokenizerConfig.norm_groups=32.
    if groups is None:
        groups = math.gcd(32, max(channels // 4, 1))
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, norm_groups: int | None = None):
        super().__init__()
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions of a feature map."""

    def __init__(self, channels: int, norm_groups: int | None = None):
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        qkv = rearrange(self.qkv(self.norm(x)), "b (three c) h w -> three b 1 (h w) c", three=3)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, 1, hw, C)
        return x + self.proj(rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad: exact halving, as in VQGAN


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _middle(channels: int, attention: bool, norm_groups: int | None) -> nn.Sequential:
    return nn.Sequential(
        ResnetBlock(channels, channels, norm_groups),
        AttnBlock(channels, norm_groups) if attention else nn.Identity(),
        ResnetBlock(channels, channels, norm_groups),
    )


class Encoder(nn.Module):
    """(B, channels, H, W) in [-1, 1] -> (B, z_channels, H/f, W/f)."""

    def __init__(
        self,
        *,
        in_channels: int,
        base_width: int,
        channel_mults: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        resolution: int,
        attn_resolutions: tuple[int, ...] = (),
        mid_attention: bool = True,
        norm_groups: int | None = None,
    ):
        super().__init__()
        widths = [base_width * m for m in channel_mults]
        self.conv_in = nn.Conv2d(in_channels, base_width, 3, padding=1)
        blocks: list[nn.Module] = []
        width, res = base_width, resolution
        for level, out_width in enumerate(widths):
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(width, out_width, norm_groups))
                width = out_width
                if res in attn_resolutions:
                    blocks.append(AttnBlock(width, norm_groups))
            if level != len(widths) - 1:
                blocks.append(Downsample(width))
                res //= 2
        self.down = nn.Sequential(*blocks)
        self.mid = _middle(width, mid_attention, norm_groups)
        self.norm_out = group_norm(width, norm_groups)
        self.conv_out = nn.Conv2d(width, z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, channels, h*f, w*f), float32, roughly in [-1, 1] (not clamped)."""

    def __init__(
        self,
        *,
        out_channels: int,
        base_width: int,
        channel_mults: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        resolution: int,
        attn_resolutions: tuple[int, ...] = (),
        mid_attention: bool = True,
        norm_groups: int | None = None,
    ):
        super().__init__()
        widths = [base_width * m for m in channel_mults]
        width = widths[-1]
        res = resolution // 2 ** (len(widths) - 1)
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = _middle(width, mid_attention, norm_groups)
        blocks: list[nn.Module] = []
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(width, widths[level], norm_groups))
                width = widths[level]
                if res in attn_resolutions:
                    blocks.append(AttnBlock(width, norm_groups))
            if level != 0:
                blocks.append(Upsample(width))
                res *= 2
        self.up = nn.Sequential(*blocks)
        self.norm_out = group_norm(width, norm_groups)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    @property
    def last_layer(self) -> Tensor:
        """Weight of the final conv: where VQGAN's adaptive GAN weight measures gradients."""
        return self.conv_out.weight

    def forward(self, z: Tensor) -> Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        # The output head runs in float32 even under fp16/bf16 autocast: a bf16 image has steps of
        # 1/128 near 1 (visible banding, biased losses) and fp16 activations here can overflow.
        with torch.autocast(device_type=h.device.type, enabled=False):
            h = F.silu(self.norm_out(h.float()))
            return self.conv_out(h)
