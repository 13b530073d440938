"""generators: tokens -> tokens.

One shared transformer core (`generators.core`), one interface (`Generator`: `loss`, `generate`,
`save_pretrained` / `from_pretrained`), a registry of families (`FAMILIES`, `build_generator`),
shared sampling helpers, mask schedules and conditioning.  Families: "ar" (DALL-E / LlamaGen
style autoregression), "maskgit" (MaskGIT / Muse), "var" (next-scale prediction on a multi-scale
tokenizer), "d3pm" (discrete diffusion: absorbing D3PM, uniform multinomial diffusion).
Each family declares what it is as class attributes (`default_steps`, `fixed_steps`,
`compare_steps`, `likelihood`, `needs_multiscale`, `known_support`, `default_cfg_scale`,
`default_top_p`; see `Generator`), and each kind of condition ("none", "class", "text") is a
class that owns its checks, embedding and null condition (`condition_kind(name)`, a model's
`gen.conditioning`; condition_kinds.py).
Imports neither `train`, `eval` nor `tokenizers_vq`: a generator is built from a tokenizer *spec*
(VAR takes the tokenizer's multi-scale quantizer through a narrow interface, `ScaleInputs`).
"""

from .ar import ARConfig, ARGenerator            # importing a family module registers it
from .base import FAMILIES, CondState, Generator, build_generator, family_class, load_generator, register_family
from .condition_kinds import (CONDITION_KINDS, CONDITIONS, ClassCondition, ConditionKind, NoCondition, TextCondition,
                              condition_kind, register_condition)
from .conditioning import NULL_LABEL, ClassEmbedder, Condition, TextConditioner, as_condition
from .config import SIZES, GeneratorConfig, size_preset
from .core import Transformer, TransformerConfig, block_causal_mask, causal_mask
from .d3pm import D3PMConfig, D3PMGenerator, DiscreteDiffusion
from .maskgit import MaskGITConfig, MaskGITGenerator
from .sampling import (GUIDANCE_SCHEDULES, cfg_mix, filter_logits, guidance_scale, gumbel_noise, sample,
                       top_k_filter, top_p_filter)
from .schedules import DIFFUSION_SCHEDULES, MASK_SCHEDULES, diffusion_alpha_bar, mask_ratio
from .spec import TokenSpec, as_spec, flatten_tokens, unflatten_tokens
from .text import (FrozenHFTextEncoder, TextEncoder, decode_captions, encode_captions, max_caption_tokens,
                   train_text_tokenizer)
from .var import LearnedScaleInputs, ScaleInputs, VARConfig, VARGenerator, known_region

__all__ = [
    "ARConfig", "ARGenerator", "CONDITIONS", "CONDITION_KINDS", "ClassCondition", "ClassEmbedder", "CondState",
    "Condition", "ConditionKind", "D3PMConfig",
    "D3PMGenerator", "DIFFUSION_SCHEDULES", "DiscreteDiffusion", "FAMILIES", "FrozenHFTextEncoder",
    "GUIDANCE_SCHEDULES", "Generator", "GeneratorConfig", "LearnedScaleInputs", "MASK_SCHEDULES", "MaskGITConfig",
    "MaskGITGenerator", "NULL_LABEL", "NoCondition", "SIZES", "ScaleInputs", "TextCondition", "TextConditioner", "TextEncoder", "TokenSpec",
    "Transformer", "TransformerConfig", "VARConfig", "VARGenerator",
    "as_condition", "as_spec", "block_causal_mask", "build_generator", "causal_mask", "cfg_mix", "condition_kind",
    "decode_captions", "diffusion_alpha_bar", "encode_captions", "family_class", "filter_logits", "flatten_tokens",
    "guidance_scale", "gumbel_noise", "known_region", "load_generator", "mask_ratio", "max_caption_tokens",
    "register_condition", "register_family", "sample", "size_preset", "top_k_filter", "top_p_filter", "train_text_tokenizer",
    "unflatten_tokens",
]
