"""Quantizers behind one interface (`Quantizer`), one file per kind.  Importing a file registers
its kind (`@register_quantizer`); a new kind is one new file plus its import line here."""

from __future__ import annotations

from .base import (QUANTIZERS, Quantizer, QuantizerOutput, build_quantizer, codebook_stats, quantizer_class,
                   register_quantizer)
# one line per kind; this order is QUANTIZER_KINDS's
from .vq import VQ  # noqa: I001
from .msvq import MultiScaleVQ
from .fsq import FSQQuantizer
from .lfq import LFQQuantizer

# The kinds tokgen ships, in registration order (tests run over them); QUANTIZERS also holds any
# kind registered later.
QUANTIZER_KINDS: tuple[str, ...] = tuple(QUANTIZERS)

__all__ = [
    "QUANTIZERS", "QUANTIZER_KINDS", "Quantizer", "QuantizerOutput", "VQ", "MultiScaleVQ", "FSQQuantizer",
    "LFQQuantizer", "build_quantizer", "codebook_stats", "quantizer_class", "register_quantizer",
]
