"""Reconstruction metrics for tokenizers: PSNR, SSIM, codebook usage and perplexity.

SSIM follows Wang et al., "Image Quality Assessment: From Error Visibility to Structural
Similarity" (IEEE TIP 2004): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, per
channel, averaged (the same constants as scikit-image's `gaussian_weights=True` variant).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"expected two image batches of one shape (B, C, H, W), got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB: 10 log10(range^2 / MSE); inf when equal."""
    _check_pair(x, y)
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    window = torch.outer(g, g).float()  # (size, size), sums to 1
    return window.expand(channels, 1, size, size).contiguous()  # depthwise conv weight


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity per image (valid-region windows, as scikit-image does)."""
    _check_pair(x, y)
    x, y = x.float(), y.float()
    c = x.shape[1]
    if min(x.shape[-2:]) < window:
        raise ValueError(f"images of {tuple(x.shape[-2:])} px are smaller than the {window} px SSIM window")
    w = _gaussian_window(window, sigma, c, x.device)
    blur = lambda t: F.conv2d(t, w, groups=c)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    # covariances with the unbiased-per-window correction scikit-image applies (N / (N - 1))
    n = window * window
    cov_norm = n / (n - 1)
    var_x = cov_norm * (blur(x * x) - mu_x**2)
    var_y = cov_norm * (blur(y * y) - mu_y**2)
    cov_xy = cov_norm * (blur(x * y) - mu_x * mu_y)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def codebook_stats(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Share of the codebook used and perplexity (exp of the code distribution's entropy).

    Perplexity equals the number of codes when all are used equally, 1 when one code is used.
    """
    flat = indices.reshape(-1).long()
    if flat.numel() == 0:
        raise ValueError("no token ids given")
    if flat.min() < 0 or flat.max() >= codebook_size:
        raise ValueError(f"token ids must lie in [0, {codebook_size}), got [{flat.min()}, {flat.max()}]")
    counts = torch.bincount(flat, minlength=codebook_size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"usage": (counts > 0).double().mean().item(), "perplexity": math.exp(entropy)}
