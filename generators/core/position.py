"""Positional embeddings: 1D learned, and 2D (row/col) learned or sinusoidal for token maps.

Image positions cover every scale of a spec, in sequence order (coarse to fine, raster within a
scale).  With several scales, each scale also gets a learned level embedding, and the 2D
coordinates are measured on the finest grid so that a coarse token sits where it covers
(VAR's position + level embeddings, Tian et al. 2024).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

POSITION_KINDS = ("learned_1d", "learned_2d", "sinusoidal_2d")


class LearnedPositions(nn.Module):
    """A learned (length, D) table."""

    def __init__(self, length: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(length, dim) * 0.02)

    def forward(self) -> Tensor:
        return self.weight                                     # (length, D)


def sincos_1d(pos: Tensor, dim: int) -> Tensor:
    """pos (N,) float -> (N, dim) [sin | cos] at frequencies 1 / 10000^(2i/dim) (Vaswani et al. 2017)."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = pos.double()[:, None] * freqs[None, :]           # (N, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def grid_coords(scales: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Row, column (on the finest grid's units) and level of every position: 3 x (N,)."""
    finest = max(scales)
    rows, cols, levels = [], [], []
    for level, s in enumerate(scales):
        centre = (torch.arange(s, dtype=torch.float64) + 0.5) * finest / s - 0.5   # (s,)
        rows.append(centre.repeat_interleave(s))
        cols.append(centre.repeat(s))
        levels.append(torch.full((s * s,), level))
    return torch.cat(rows), torch.cat(cols), torch.cat(levels)


class ImagePositions(nn.Module):
    """Positions of the tokens of all scales: forward() -> (N, D), N = sum(s * s)."""

    def __init__(self, scales: list[int] | tuple[int, ...], dim: int, kind: str = "learned_2d"):
        super().__init__()
        if kind not in POSITION_KINDS:
            raise ValueError(f"position kind must be one of {POSITION_KINDS}, got {kind!r}")
        if kind == "sinusoidal_2d" and dim % 4:
            raise ValueError(f"sinusoidal_2d positions need a width divisible by 4, got {dim}")
        self.kind, self.scales = kind, list(scales)
        n = sum(s * s for s in scales)
        rows, cols, levels = grid_coords(self.scales)
        self.register_buffer("levels", levels, persistent=False)
        self.level = nn.Parameter(torch.randn(len(scales), dim) * 0.02) if len(scales) > 1 and kind != "learned_1d" else None
        if kind == "learned_1d":
            self.table = nn.Parameter(torch.randn(n, dim) * 0.02)
        elif kind == "learned_2d":
            # one row table and one column table per scale, stacked: scale k uses entries [off_k, off_k + s_k)
            offsets = torch.tensor([0] + list(scales[:-1])).cumsum(0)
            self.register_buffer("row_idx", (torch.cat([torch.arange(s).repeat_interleave(s) for s in scales])
                                             + offsets[levels]), persistent=False)
            self.register_buffer("col_idx", (torch.cat([torch.arange(s).repeat(s) for s in scales])
                                             + offsets[levels]), persistent=False)
            self.rows = nn.Parameter(torch.randn(sum(scales), dim) * 0.02)
            self.cols = nn.Parameter(torch.randn(sum(scales), dim) * 0.02)
        else:
            table = torch.cat([sincos_1d(rows, dim // 2), sincos_1d(cols, dim // 2)], dim=1)   # (N, D)
            self.register_buffer("table", table, persistent=False)

    def forward(self) -> Tensor:
        if self.kind == "learned_2d":
            pos = self.rows[self.row_idx] + self.cols[self.col_idx]          # (N, D)
        else:
            pos = self.table
        if self.level is not None:
            pos = pos + self.level[self.levels]
        return pos
