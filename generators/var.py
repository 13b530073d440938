"""VAR: next-scale prediction on a multi-scale residual tokenizer.

Tian, Jiang, Yuan, Peng, Wang, "Visual Autoregressive Modeling: Scalable Image Generation via
Next-Scale Prediction", NeurIPS 2024 (FoundationVision/VAR `models/var.py`).

One transformer predicts the token maps r_1..r_K of K scales, coarse to fine, each in one step:
p(r_1..r_K) = prod_k p(r_k | r_<k, c), the tokens of a scale independent given the coarser ones.

    input of scale 1      the start token (the class embedding / pooled caption / a learned
                          vector), repeated over scale 1's positions
    input of scale k > 1  f_hat_{k-1} = sum_{j<k} phi_j(up(lookup(r_j))), area-downsampled to
                          s_k x s_k and projected to the width (the tokenizer's codebook and phi)
    + learned position (2D) and level embeddings; block-causal attention: scale k sees scales <= k
    cross-entropy over every position of every scale

Conditioning: class labels and the pooled caption through adaLN (DiT's adaLN-Zero), captions
also through cross-attention; a learned null condition for guidance.  Sampling runs K steps, one
block per step through the core's KV cache; guidance mixes [conditional; null] rows of one
forward with a scale that grows linearly with the scale index (k / (K - 1), VAR) or stays constant.

The scale inputs need the tokenizer's codebook and phi, but the generator never holds the
tokenizer: it takes anything with `ScaleInputs`' three methods (tokenizers_vq's MultiScaleVQ,
i.e. `tokenizer.quantizer`) through `attach_tokenizer(tokenizer)` / `attach_scale_inputs(q)`,
kept out of the weights.  After `from_pretrained` attach it again.  Without a tokenizer,
`scale_inputs="learned"` builds the same sum from a learned token embedding (no phi).

`known` (inpainting, outpainting): {"tokens": [one map per scale], "mask": [bool map per
scale]}, e.g. the encode of the partly known image and `known_region(tokens, region)` for its
masks; at scale k the known tokens replace the sampled ones before the next scale's input is
built, so every later scale sees them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokgen.io import eval_mode

from .base import CondState, Generator, register_family
from .conditioning import Condition, drop_mask
from .config import GeneratorConfig
from .core import ImagePositions, Transformer, TransformerConfig, block_causal_mask
from .sampling import GUIDANCE_SCHEDULES, guidance_scale, mix_guided, sample
from .spec import unflatten_tokens

SCALE_INPUTS = ("tokenizer", "learned")


@runtime_checkable
class ScaleInputs(Protocol):
    """The three steps of a multi-scale residual tokenizer that next-scale inputs need (what
    tokenizers_vq's MultiScaleVQ provides; scales s_0 < ... < s_{K-1} = S, latent channels C)."""

    def lookup(self, ids: Tensor) -> Tensor:
        """Token map (B, s_k, s_k) -> its code vectors (B, C, s_k, s_k)."""

    def upsample_and_refine(self, latent: Tensor, k: int) -> Tensor:
        """Scale k's code vectors (B, C, s_k, s_k) -> its contribution h_k (B, C, S, S)."""

    def downsample(self, f_hat: Tensor, k: int) -> Tensor:
        """(B, C, S, S) -> scale k's size (B, C, s_k, s_k)."""


class LearnedScaleInputs(nn.Module):
    """`ScaleInputs` without a tokenizer: a learned embedding of the tokens, upsampled bicubically
    to the finest map (no phi) and area-downsampled, as the tokenizer's steps are."""

    def __init__(self, codebook_size: int, dim: int, scales: Sequence[int]):
        super().__init__()
        self.scales = list(scales)
        self.embed = nn.Embedding(codebook_size, dim)
        nn.init.normal_(self.embed.weight, std=0.02)

    def lookup(self, ids: Tensor) -> Tensor:
        return self.embed(ids).permute(0, 3, 1, 2).float()                    # (B, s, s, C) -> (B, C, s, s)

    def upsample_and_refine(self, latent: Tensor, k: int) -> Tensor:
        full = self.scales[-1]
        if latent.shape[-1] == full:
            return latent
        return F.interpolate(latent, size=(full, full), mode="bicubic", align_corners=False)

    def downsample(self, f_hat: Tensor, k: int) -> Tensor:
        s = self.scales[k]
        return f_hat if f_hat.shape[-1] == s else F.interpolate(f_hat, size=(s, s), mode="area")


def known_region(tokens: list[Tensor], region: Tensor) -> dict[str, list[Tensor]]:
    """`known` for VAR from the tokens of a partly known image (its encode: one map per scale) and
    the known region on the finest map (B, S, S) bool: a token of scale k is known when every
    finest-map token under it is (area average 1)."""
    if region.dtype != torch.bool or region.dim() != 3 or region.shape[1:] != tokens[-1].shape[1:]:
        raise ValueError(f"region must be a bool map (B, S, S) of the finest scale {tuple(tokens[-1].shape[1:])}, "
                         f"got {tuple(region.shape)} {region.dtype}")
    masks = []
    for t in tokens:
        s = t.shape[-1]
        cover = F.interpolate(region[:, None].float(), size=(s, s), mode="area")[:, 0]   # (B, s, s) in [0, 1]
        masks.append(cover > 1 - 1e-6)
    return {"tokens": list(tokens), "mask": masks}


@dataclass
class VARConfig(GeneratorConfig):
    scale_inputs: str = "tokenizer"      # next-scale inputs from "tokenizer" (its codebook + phi, attach_tokenizer) or "learned"
    latent_dim: int = 0                  # scale_inputs="tokenizer": the quantizer's latent channels C; 0 = read when attached
    guidance_schedule: str = "linear"    # guidance grows with the scale index k / (K - 1) (VAR), or "constant"

    def validate(self) -> None:
        super().validate()
        if self.scale_inputs not in SCALE_INPUTS:
            raise ValueError(f"scale_inputs must be one of {SCALE_INPUTS}, got {self.scale_inputs!r}")
        if self.latent_dim < 0:
            raise ValueError(f"latent_dim must be >= 0 (0 = read from the attached quantizer), got {self.latent_dim}")
        if self.guidance_schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance_schedule must be one of {sorted(GUIDANCE_SCHEDULES)}, "
                             f"got {self.guidance_schedule!r}")


@register_family("var")
class VARGenerator(Generator):
    config_class = VARConfig
    display_name = "VAR"
    fixed_steps = "one step per scale"       # each step draws a whole scale's map
    likelihood = "exact"                     # the scales factorise the joint: `nll_bits`
    # next-scale prediction needs scales to predict: a single-scale spec still builds (one
    # parallel step, as the contract tests use), but the method is made for multi-scale tokenizers
    needs_multiscale = True

    def __init__(self, spec: Any, config: VARConfig | dict | None = None, *, text_tokenizer=None):
        super().__init__(spec, config, text_tokenizer=text_tokenizer)
        cfg, D, V = self.config, self.config.width, self.spec.codebook_size
        self.scales = list(self.spec.scales)
        self.num_tokens = self.spec.tokens_per_image
        self._build_condition_embedders()
        # without a condition vector, scale 1 starts from a learned token instead
        self.start = nn.Parameter(torch.randn(1, 1, D) * 0.02) if not self.conditioning.adaln else None
        self.pos = ImagePositions(self.scales, D, cfg.positions)               # positions + level embeddings
        multi = len(self.scales) > 1                                            # one scale: nothing to feed forward
        self.learned_inputs = LearnedScaleInputs(V, D, self.scales) if multi and cfg.scale_inputs == "learned" else None
        self.input_proj = None
        if multi and (cfg.scale_inputs == "learned" or cfg.latent_dim):
            self._build_input_proj(D if cfg.scale_inputs == "learned" else cfg.latent_dim)
        self.core = Transformer(TransformerConfig(width=D, depth=cfg.depth, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio,
                                                  dropout=cfg.dropout, cond_dim=D if self.conditioning.adaln else 0,
                                                  cross_attention=self.conditioning.cross_attention))
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(D, V)
        self.register_buffer("attn_mask", block_causal_mask(self.spec.block_sizes), persistent=False)   # (N, N)
        self._attached: tuple[Any, ...] = ()                                    # (quantizer,): not a submodule, never saved
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def _build_input_proj(self, dim: int) -> None:
        self.input_proj = nn.Linear(dim, self.config.width)
        nn.init.normal_(self.input_proj.weight, std=0.02)
        nn.init.zeros_(self.input_proj.bias)

    # ------------------------------------------------------------------ the scale interface

    def attach_tokenizer(self, tokenizer) -> "VARGenerator":
        """The trainer's hook: use `tokenizer.quantizer` (a multi-scale quantizer) for the scale
        inputs.  A model with scale_inputs="learned" (or one scale) needs nothing and keeps none."""
        super().attach_tokenizer(tokenizer)                                    # the spec check
        if self.config.scale_inputs == "learned" or len(self.scales) == 1:
            return self
        quantizer = getattr(tokenizer, "quantizer", None)
        if quantizer is None:
            raise ValueError(f"{type(tokenizer).__name__} has no .quantizer: pass a tokgen VQTokenizer with "
                             f"quantizer='msvq', or call attach_scale_inputs(q) with the multi-scale quantizer")
        return self.attach_scale_inputs(quantizer)

    def attach_scale_inputs(self, quantizer: ScaleInputs) -> "VARGenerator":
        """Build scale inputs with `quantizer` (lookup / upsample_and_refine / downsample, see
        `ScaleInputs`), e.g. `tokenizer.quantizer`.  Kept by reference, outside the weights; the
        first attach of a new model also sizes the input projection (config.latent_dim)."""
        if self.config.scale_inputs == "learned":
            raise ValueError("this VAR generator was built with scale_inputs='learned' and uses no tokenizer; "
                             "build it with scale_inputs='tokenizer' to use the tokenizer's codebook")
        missing = [m for m in ("lookup", "upsample_and_refine", "downsample") if not callable(getattr(quantizer, m, None))]
        if missing:
            raise ValueError(f"{type(quantizer).__name__} lacks {missing}: attach a multi-scale quantizer "
                             f"(tokenizer.quantizer of a tokenizer built with quantizer='msvq')")
        scales = getattr(quantizer, "scales", None)
        if scales is not None and list(scales) != self.scales:
            raise ValueError(f"the quantizer has scales {list(scales)} but this generator was built for {self.scales}: "
                             f"attach the quantizer of the tokenizer whose tokens it models")
        if len(self.scales) > 1:
            dim = _latent_dim(quantizer, self.scales[0], self.device)
            if self.config.latent_dim and dim != self.config.latent_dim:
                raise ValueError(f"the quantizer's latents have {dim} channels but this generator was trained on "
                                 f"{self.config.latent_dim}: attach the tokenizer it was trained with")
            if self.input_proj is None:
                self.config = replace(self.config, latent_dim=dim)
                self._build_input_proj(dim)
                self.input_proj.to(device=self.device, dtype=self.dtype)
        self._attached = (quantizer,)
        return self

    def _source(self) -> ScaleInputs:
        if self.learned_inputs is not None:
            return self.learned_inputs
        if not self._attached:
            raise ValueError("this VAR generator builds each scale's input from the tokenizer's codebook and phi: "
                             "call gen.attach_tokenizer(tokenizer) (or gen.attach_scale_inputs(tokenizer.quantizer)) "
                             "after building or loading it, or build it with scale_inputs='learned'")
        quantizer = self._attached[0]
        p = next(quantizer.parameters(), None) if isinstance(quantizer, nn.Module) else None
        if p is not None and p.device != self.device:
            raise ValueError(f"the attached quantizer is on {p.device} but the generator on {self.device}: move "
                             f"the tokenizer there too (tokenizer.to(device))")
        return quantizer

    def _next_input(self, src: ScaleInputs, f_hat: Tensor | None, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Add scale k's tokens (B, s_k, s_k) to f_hat (B, C, S, S) float32; return it and the raw
        input of scale k + 1 (B, s_{k+1}^2, C)."""
        grad = torch.enable_grad() if src is self.learned_inputs and torch.is_grad_enabled() else torch.no_grad()
        with grad:                                                              # the tokenizer is frozen here
            h = src.upsample_and_refine(src.lookup(ids), k).float()            # (B, C, S, S)
            f_hat = h if f_hat is None else f_hat + h
            return f_hat, src.downsample(f_hat, k + 1).flatten(2).transpose(1, 2)   # (B, s_{k+1}^2, C)

    def _project(self, x: Tensor) -> Tensor:
        return self.input_proj(x.to(self.input_proj.weight.dtype))

    # ------------------------------------------------------------------ network

    def _start(self, state: CondState, batch: int) -> Tensor:
        """The start token over scale 1's positions: (B, s_1^2, D)."""
        vec = self.start.expand(batch, -1, -1) if state.vector is None else state.vector[:, None]   # (B, 1, D)
        return vec.expand(-1, self.scales[0] ** 2, -1)

    def _hidden(self, maps: list[Tensor], state: CondState) -> Tensor:
        """Teacher-forced pass over all scales: (B, N, D)."""
        B = maps[0].shape[0]
        x = self._start(state, B)                                               # (B, s_1^2, D)
        if len(self.scales) > 1:
            src, f_hat, parts = self._source(), None, []
            for k in range(len(self.scales) - 1):
                f_hat, nxt = self._next_input(src, f_hat, maps[k], k)
                parts.append(nxt)
            x = torch.cat([x, self._project(torch.cat(parts, dim=1)).to(x.dtype)], dim=1)   # (B, N, D)
        mask = self.attn_mask if len(self.scales) > 1 else "full"
        return self.core(self.drop(x + self.pos()), mask=mask, cond=state.vector, context=state.context,
                         context_mask=state.context_mask)

    def logits(self, tokens: list[Tensor], cond: Any = None) -> Tensor:
        """Teacher-forced logits (B, N, V): position i of scale k predicts r_k given r_<k."""
        seq = self._tokens(tokens)
        maps = unflatten_tokens(seq, self.scales)
        cond = self._condition(cond, seq.shape[0])
        with eval_mode(self), torch.no_grad():
            return self.head(self._hidden(maps, self._condition_state(cond, seq.shape[0], None))).float()

    # ------------------------------------------------------------------ training

    def loss(self, tokens: list[Tensor], cond: Any = None) -> tuple[Tensor, dict[str, Tensor]]:
        seq = self._tokens(tokens)                                              # (B, N), checked
        maps = unflatten_tokens(seq, self.scales)
        B = seq.shape[0]
        cond = self._condition(cond, B)
        drop = drop_mask(B, self.config.cond_dropout, seq.device, self.training) if cond is not None else None
        logits = self.head(self._hidden(maps, self._condition_state(cond, B, drop)))   # (B, N, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), seq.flatten())
        with torch.no_grad():
            last = logits[:, -self.scales[-1] ** 2:]
            acc = (last.argmax(-1) == seq[:, -self.scales[-1] ** 2:]).float().mean()
        # logs stay on the device (0-dim, detached): the loop reads them once per log_every steps
        return loss, {"loss": loss.detach(), "bits_per_token": loss.detach().double() / math.log(2),
                      "finest_accuracy": acc}

    @torch.no_grad()
    def nll_bits(self, tokens: list[Tensor], cond: Any = None) -> Tensor:
        """Exact negative log-likelihood of each image in bits per token (B,) (the scales factorise
        the joint exactly, as AR's raster order does)."""
        return self._factorised_nll_bits(tokens, cond)

    # ------------------------------------------------------------------ sampling

    @torch.inference_mode()
    def generate(self, cond: Any = None, *, num_samples: int | None = None, steps: int | None = None,
                 cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 known: Any = None) -> list[Tensor]:
        """Sample one scale per step with a KV cache; known tokens replace the sampled ones at
        every scale (see the module docstring)."""
        K = self.sampling_steps(steps)                                          # one step per scale
        self._check_sampling(cfg_scale, generator)
        known = self._known(known)
        cond = self._condition(cond)
        B = self._batch_size(cond, num_samples, known[0].shape[0] if known is not None else None)
        src = self._source() if K > 1 else None                                 # fail before any work
        with eval_mode(self):
            seq = self._decode(B, cond, known, src, cfg_scale,
                               dict(temperature=temperature, top_k=top_k, top_p=top_p, generator=generator))
        return unflatten_tokens(seq, self.scales)

    def sampling_steps(self, steps: int | None = None) -> int:
        return self._fixed_step_count(steps, len(self.scales), "the number of scales")

    def _decode(self, B: int, cond: Condition | None, known: tuple[Tensor, Tensor] | None, src: ScaleInputs | None,
                cfg_scale: float, sampling: dict) -> Tensor:
        K, N = len(self.scales), self.num_tokens
        state, doubled = self._guided_state(cond, B, cfg_scale)
        pos = self.pos()                                                        # (N, D), once
        x = self._start(state, 2 * B if doubled else B)
        x = x + pos[: x.shape[1]].to(x.dtype)                                   # (B or 2B, s_1^2, D)
        cache = self.core.new_cache(x.shape[0], N, like=x)
        out = torch.zeros(B, N, dtype=torch.long, device=self.device)
        f_hat, lo = None, 0
        for k, s in enumerate(self.scales):
            hi = lo + s * s
            # one new block attends to every cached block: exactly the block-causal row, no mask needed
            h = self.core(x, mask="full", cond=state.vector, context=state.context, context_mask=state.context_mask,
                          cache=cache)                                          # (B or 2B, s^2, D)
            scale = guidance_scale(self.config.guidance_schedule, cfg_scale, k / (K - 1) if K > 1 else 1.0)
            ids, _ = sample(mix_guided(self.head(h), scale, doubled), **sampling)   # (B, s^2)
            if known is not None:
                ids = torch.where(known[1][:, lo:hi], known[0][:, lo:hi], ids)
            out[:, lo:hi] = ids
            if k + 1 < K:
                f_hat, nxt = self._next_input(src, f_hat, ids.view(B, s, s), k)
                e = self._project(nxt).to(x.dtype) + pos[hi: hi + self.scales[k + 1] ** 2].to(x.dtype)
                x = torch.cat([e, e]) if doubled else e                         # both halves see the same tokens
            lo = hi
        return out


def _latent_dim(quantizer: Any, side: int, device: torch.device) -> int:
    """C of the quantizer's latents: its `dim`, or read off one lookup."""
    dim = getattr(quantizer, "dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    p = next(quantizer.parameters(), None) if isinstance(quantizer, nn.Module) else None
    with torch.no_grad():
        probe = quantizer.lookup(torch.zeros(1, side, side, dtype=torch.long, device=p.device if p is not None else device))
    return int(probe.shape[1])
