"""Hyperparameters shared by every family, and named size presets.

Each family subclasses `GeneratorConfig` with its own fields (`ARConfig`, `MaskGITConfig`, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from tokgen.errors import ConfigValueError, at_least, check_ranges, in_range, positive
from tokgen.io import check_types

from .condition_kinds import condition_kind
from .core import POSITION_KINDS

# Size presets (DiT-style one-liners); `config_for("maskgit", "small", condition="text")`.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(width=64, depth=2, heads=4),        # tests, CPU smoke runs
    "mini": dict(width=128, depth=4, heads=4),       # CPU demos: learns the shapes in a few minutes (tokgen demo)
    "small": dict(width=256, depth=4, heads=8),      # the matched peer configuration (PEERS.md)
    "base": dict(width=512, depth=8, heads=8),
    "large": dict(width=1024, depth=16, heads=16),
}


@dataclass
class GeneratorConfig:
    width: int = 256                 # transformer width D
    depth: int = 4                   # transformer blocks
    heads: int = 8                   # attention heads (width // heads = head size)
    mlp_ratio: float = 4.0           # MLP hidden width / D
    dropout: float = 0.0             # attention and residual dropout
    positions: str = "learned_2d"    # image token positions: learned_1d | learned_2d | sinusoidal_2d
    condition: str = "class"         # what the model is conditioned on: none | class | text (condition_kinds.py)
    num_classes: int = 0             # condition="class": labels in [0, num_classes); -1 is the null label
    cond_dropout: float = 0.1        # training: probability of replacing the condition by the learned null (CFG)
    text_length: int = 32            # condition="text": caption tokens per sample (padded; longer is an error)
    text_vocab_size: int = 0         # condition="text": filled in from the text tokenizer
    text_pad_id: int = 0             # condition="text": filled in from the text tokenizer
    text_depth: int = 2              # condition="text": blocks of the learned text encoder (families that use one)
    text_encoder_path: str = ""      # condition="text": a LOCAL Hugging Face encoder dir -> frozen encoder instead

    def validate(self) -> None:
        check_types(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, type(self).__name__)
        check_ranges(self, [("width", at_least(1), "the transformer width must be >= 1"),
                            ("depth", at_least(1), "the number of blocks must be >= 1"),
                            ("heads", at_least(1), "the number of attention heads must be >= 1"),
                            ("mlp_ratio", positive, "the MLP ratio must be > 0"),
                            ("dropout", in_range(0, 1, high_open=True), "dropout must be in [0, 1)"),
                            ("text_depth", at_least(0), "the text encoder depth must be >= 0")])
        if self.width % self.heads:
            raise ConfigValueError("heads", self.heads, f"must divide the width {self.width} (width // heads is "
                                                        f"the head size)")
        condition_kind(self.condition).check_config(self)      # the kind's own fields (num_classes, text_length)
        if self.positions not in POSITION_KINDS:
            raise ValueError(f"positions must be one of {POSITION_KINDS}, got {self.positions!r}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(names)}")
        check_types(cls, data, "config")
        return cls(**data)


C = TypeVar("C", bound=GeneratorConfig)


def resolve_config(config_class: type[C], config: Any = None, **overrides: Any) -> C:
    """A `config_class` from None (defaults), a dict, or an instance; keyword overrides on top."""
    if config is None:
        config = config_class()
    elif isinstance(config, dict):
        config = config_class.from_dict(config)
    elif not isinstance(config, config_class):
        raise ValueError(f"expected a {config_class.__name__} (or a dict of its fields), got "
                         f"{type(config).__name__}: build it with {config_class.__name__}(...)")
    if overrides:
        config = config_class.from_dict({**config.to_dict(), **overrides})
    return config


def size_preset(size: str) -> dict[str, int]:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: choose one of {sorted(SIZES)}")
    return dict(SIZES[size])
