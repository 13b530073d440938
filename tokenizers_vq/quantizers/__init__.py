"""Quantizers behind one interface (`Quantizer`), one file per method, and the registry that
builds one from a `TokenizerConfig` (the only place that dispatches on the kind)."""

from __future__ import annotations

from ..config import QUANTIZER_KINDS, TokenizerConfig
from .base import Quantizer, QuantizerOutput, codebook_stats
from .fsq import FSQQuantizer
from .lfq import LFQQuantizer
from .msvq import MultiScaleVQ
from .vq import VQ

QUANTIZERS: dict[str, type[Quantizer]] = {
    "vq": VQ,
    "msvq": MultiScaleVQ,
    "fsq": FSQQuantizer,
    "lfq": LFQQuantizer,
}
assert tuple(QUANTIZERS) == QUANTIZER_KINDS


def build_quantizer(config: TokenizerConfig) -> Quantizer:
    return QUANTIZERS[config.quantizer].from_config(config)


__all__ = [
    "QUANTIZERS", "Quantizer", "QuantizerOutput", "VQ", "MultiScaleVQ", "FSQQuantizer",
    "LFQQuantizer", "build_quantizer", "codebook_stats",
]
