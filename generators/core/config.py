"""The shared transformer core's hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TransformerConfig:
    width: int = 256            # model width D (residual stream)
    depth: int = 4              # number of blocks
    heads: int = 8              # attention heads; width must divide evenly (head dim = width // heads)
    mlp_ratio: float = 4.0      # MLP hidden width = mlp_ratio * width
    dropout: float = 0.0        # dropout on attention probabilities and on each residual branch
    bias: bool = True           # biases in the linear layers
    norm_eps: float = 1e-6      # LayerNorm epsilon
    cond_dim: int = 0           # > 0: adaptive LayerNorm (shift/scale/gate, DiT's adaLN-Zero) from a (B, cond_dim) vector
    cross_attention: bool = False   # a cross-attention sub-layer in every block (to text states)
    context_dim: int = 0        # width of the cross-attention context; 0 = same as width

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}: "
                             f"pick heads so that width // heads is a whole head size (e.g. 32 or 64)")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads
