"""Published image tokenizers, loaded into tokgen's own `VQTokenizer`.

- `llamagen-vq16`: LlamaGen's VQ-16 (Sun et al. 2024), `vq_ds16_c2i.pt`;
- `var-vqvae`: VAR's multi-scale VQVAE (Tian et al. 2024), `vae_ch160v4096z32.pth`;
- `taming-vqgan`: taming-transformers' VQGAN (Esser et al. 2021), vqgan_imagenet_f16_16384 `last.ckpt`.

One file per format (a `PublishedFormat`, registered by name), the key mapping they share
(keymap.py: walks our modules in construction order), and the conversion to a tokenizer folder
(convert.py, `tokgen convert-tokenizer`).  Importing a format's file registers it.
"""

from __future__ import annotations

from .base import FORMATS, PublishedFormat, get_format, register_format
# one line per format; this order is the --from choices'
from .llamagen import LlamaGenVQ  # noqa: I001
from .var import RELEASED_SCALES, VARVQVAE
from .taming import TamingVQGAN
from .convert import ConvertResult, convert_state, convert_tokenizer, load_checkpoint, state_dict_of

__all__ = [
    "FORMATS", "RELEASED_SCALES", "ConvertResult", "LlamaGenVQ", "PublishedFormat", "TamingVQGAN", "VARVQVAE",
    "convert_state", "convert_tokenizer", "get_format", "load_checkpoint", "register_format", "state_dict_of",
]
