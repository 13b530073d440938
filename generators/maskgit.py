"""MaskGIT (Chang et al., "MaskGIT: Masked Generative Image Transformer", CVPR 2022) and its
caption-conditional form Muse (Chang et al., "Muse: Text-To-Image Generation via Masked
Generative Transformers", 2023).

A bidirectional transformer predicts masked tokens.  Training masks ceil(gamma(r) N) tokens,
r ~ U(0, 1), gamma the cosine schedule by default, and takes the cross-entropy on the masked
positions only (label smoothing 0.1 as in the official config).  Decoding runs T steps; at step t:

    predict every masked token and sample it;
    confidence = log p(sampled) + tau (1 - (t+1)/T) Gumbel, and +inf on tokens already fixed;
    keep n = floor(N gamma((t+1)/T)) tokens masked, clamped to [1, masked - 1] (none after the
    last step), the n lowest confidences; fix the rest.

N is the number of tokens unknown at the start (all of them without `known`).  Known tokens
(inpainting, outpainting) start fixed and are never changed.  Class conditioning by adaLN or a
prefix token, caption conditioning by cross-attention to the text encoder's states (Muse) plus
its pooled vector through adaLN.  Guidance runs the conditional and null rows in one batch,
with a constant or linearly growing scale (Muse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokgen.io import eval_mode

from .base import CondState, Generator, register_family
from .conditioning import Condition, drop_mask
from .config import GeneratorConfig
from .core import ImagePositions, Transformer, TransformerConfig
from .sampling import GUIDANCE_SCHEDULES, gumbel_noise, guidance_scale, guided, mix_guided, sample
from .schedules import check_schedule, num_masked_after_step, num_masked_for_training, planned_masked
from .spec import unflatten_tokens


@dataclass
class MaskGITConfig(GeneratorConfig):
    steps: int = 12                      # decoding steps T when generate(steps=None) (MaskGIT: 8-16); the family's default_steps
    mask_schedule: str = "cosine"        # gamma for training and decoding (schedules.MASK_SCHEDULES)
    choice_temperature: float = 4.5      # tau: Gumbel noise on the confidences, annealed by 1 - (t+1)/T
    label_smoothing: float = 0.1         # on the masked-token cross-entropy (official config 0.1)
    class_conditioning: str = "adaln"    # condition="class": "adaln" (DiT/VAR style) or "prefix" (a class token)
    text_pooled_adaln: bool = True       # condition="text": also feed the pooled caption vector to adaLN
    guidance_schedule: str = "constant"  # "constant" or "linear" (grows from 1 to cfg_scale over the steps; Muse)

    def validate(self) -> None:
        super().validate()
        check_schedule(self.mask_schedule)
        if self.class_conditioning not in ("adaln", "prefix"):
            raise ValueError(f"class_conditioning must be 'adaln' or 'prefix', got {self.class_conditioning!r}")
        if self.guidance_schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance_schedule must be one of {sorted(GUIDANCE_SCHEDULES)}, "
                             f"got {self.guidance_schedule!r}")
        if self.steps < 1 or self.choice_temperature < 0 or not 0 <= self.label_smoothing < 1:
            raise ValueError("need steps >= 1, choice_temperature >= 0 and label_smoothing in [0, 1)")


@register_family("maskgit")
class MaskGITGenerator(Generator):
    config_class = MaskGITConfig
    display_name = "MaskGIT"
    default_steps = MaskGITConfig.steps     # the config's default, one number
    compare_steps = (8,)                    # one point of the 8-16 MaskGIT works in: decoding costs a forward a step

    def __init__(self, spec: Any, config: MaskGITConfig | dict | None = None, *, text_tokenizer=None):
        super().__init__(spec, config, text_tokenizer=text_tokenizer)
        cfg, D, V = self.config, self.config.width, self.spec.codebook_size
        self.num_tokens = self.spec.tokens_per_image
        self.mask_id = V                                                        # one extra input id
        self.tok_emb = nn.Embedding(V + 1, D)
        self.pos = ImagePositions(self.spec.scales, D, cfg.positions)
        self._build_condition_embedders()
        adaln = self.condition_vector == "adaln"
        self.core = Transformer(TransformerConfig(width=D, depth=cfg.depth, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio,
                                                  dropout=cfg.dropout, cond_dim=D if adaln else 0,
                                                  cross_attention=self.conditioning.cross_attention))
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(D, V)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ network

    @property
    def condition_vector(self) -> str | None:
        """Where the condition's vector (class embedding, pooled caption) goes, by MaskGIT's options:
        "adaln"; "prefix", a class token in front of the sequence (class_conditioning="prefix"); or
        None: no condition, or a caption through cross-attention alone (text_pooled_adaln=False)."""
        kind, cfg = self.conditioning, self.config
        if not kind.adaln:
            return None
        if kind.uses_labels and cfg.class_conditioning == "prefix":
            return "prefix"
        if kind.uses_captions and not cfg.text_pooled_adaln:
            return None
        return "adaln"

    def _embed_condition(self, cond: Condition | None, batch: int, drop: Tensor | None) -> CondState:
        """The shared condition state with its vector where `condition_vector` says."""
        state, route = self._condition_state(cond, batch, drop), self.condition_vector
        if route == "prefix":
            return CondState(prefix=state.vector[:, None])                     # (B, 1, D)
        if route is None:
            state.vector = None
        return state

    def forward(self, seq: Tensor, state: CondState) -> Tensor:
        """seq (B, N) ids with mask_id at masked positions -> logits (B, N, V)."""
        x = self.tok_emb(seq) + self.pos()                                      # (B, N, D)
        if state.prefix is not None:
            x = torch.cat([state.prefix.to(x.dtype), x], dim=1)                 # (B, 1+N, D)
        h = self.core(self.drop(x), mask="full", cond=state.vector, context=state.context,
                      context_mask=state.context_mask)
        if state.prefix is not None:
            h = h[:, 1:]                                                        # (B, N, D)
        return self.head(h)

    def logits(self, tokens: list[Tensor], cond: Any = None, mask: list[Tensor] | None = None) -> Tensor:
        """Logits (B, N, V) with the positions in `mask` (bool maps; all when None) masked."""
        seq = self._tokens(tokens)
        cond = self._condition(cond, seq.shape[0])
        masked = torch.ones_like(seq, dtype=torch.bool) if mask is None else \
            torch.cat([m.flatten(1) for m in mask], dim=1).to(seq.device)
        with eval_mode(self), torch.no_grad():
            state = self._embed_condition(cond, seq.shape[0], None)
            return self(torch.where(masked, self.mask_id, seq), state).float()

    # ------------------------------------------------------------------ training

    def loss(self, tokens: list[Tensor], cond: Any = None) -> tuple[Tensor, dict[str, Tensor]]:
        seq = self._tokens(tokens)                                              # (B, N)
        B, N = seq.shape
        cond = self._condition(cond, B)
        drop = drop_mask(B, self.config.cond_dropout, seq.device, self.training) if cond is not None else None
        n_host = num_masked_for_training(self.config.mask_schedule, torch.rand(B), N)   # (B,), on the CPU
        n_mask = n_host.to(seq.device)
        ranks = torch.rand(B, N, device=seq.device).argsort(dim=1).argsort(dim=1)  # a random order per row
        masked = ranks < n_mask[:, None]                                        # (B, N), n_mask True per row
        logits = self(torch.where(masked, self.mask_id, seq), self._embed_condition(cond, B, drop))
        # logits[masked] without a device sync: the count of masked positions is known on the host,
        # so nonzero_static gives the same positions in the same (row-major) order
        where = torch.nonzero_static(masked.flatten(), size=int(n_host.sum())).squeeze(1)
        picked, target = logits.flatten(0, 1)[where], seq.flatten()[where]
        loss = F.cross_entropy(picked.float(), target, label_smoothing=self.config.label_smoothing)
        with torch.no_grad():
            acc = (picked.argmax(-1) == target).float().mean()
        # logs stay on the device (0-dim, detached): the loop reads them once per log_every steps
        return loss, {"loss": loss.detach(), "masked_accuracy": acc,
                      "mask_ratio": n_host.float().mean().double() / N}

    # ------------------------------------------------------------------ sampling

    @torch.inference_mode()
    def generate(self, cond: Any = None, *, num_samples: int | None = None, steps: int | None = None,
                 cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 known: Any = None) -> list[Tensor]:
        """Iterative parallel decoding (see the module docstring); one forward per step, the
        conditional and null rows batched together when cfg_scale != 1."""
        steps = self.sampling_steps(steps)
        self._check_sampling(cfg_scale, generator)
        known = self._known(known)
        cond = self._condition(cond)
        B = self._batch_size(cond, num_samples, known[0].shape[0] if known is not None else None)
        N = self.num_tokens
        if known is None:
            known = (torch.zeros(B, N, dtype=torch.long, device=self.device),
                     torch.zeros(B, N, dtype=torch.bool, device=self.device))
        with eval_mode(self):
            seq = self._decode(known, cond, steps, cfg_scale,
                               dict(temperature=temperature, top_k=top_k, top_p=top_p, generator=generator),
                               generator)
        return unflatten_tokens(seq, self.spec.scales)

    def sampling_steps(self, steps: int | None = None) -> int:
        steps = self.config.steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return steps

    def _decode(self, known: tuple[Tensor, Tensor], cond: Condition | None, steps: int, cfg_scale: float,
                sampling: dict, generator: torch.Generator | None,
                on_step: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
        """The decoding loop on flat (B, N) tokens; `on_step(t, tokens, fixed)` sees each step's result."""
        tokens, fixed = known[0].clone(), known[1].clone()                      # (B, N) each
        B = tokens.shape[0]
        unknown = (~fixed).sum(dim=1)                                           # (B,) N of the schedule
        doubled = guided(cfg_scale)
        state = self._embed_condition(cond, B, None)
        if doubled:                                                             # [cond rows; null rows]
            state = state.cat(self._embed_condition(None, B, None))
        tau = self.config.choice_temperature
        planned = planned_masked(self.config.mask_schedule, steps, unknown)     # (steps, B), read once
        for t in range(steps):
            seq = torch.where(fixed, tokens, self.mask_id)                      # (B, N)
            logits = self(torch.cat([seq, seq]) if doubled else seq, state)     # (B or 2B, N, V)
            scale = guidance_scale(self.config.guidance_schedule, cfg_scale, (t + 1) / steps)
            sampled, logp = sample(mix_guided(logits, scale, doubled), **sampling)   # (B, N) each
            sampled = torch.where(fixed, tokens, sampled)
            noise = gumbel_noise(logp.shape, generator=generator, device=logp.device)
            confidence = logp + tau * (1.0 - (t + 1) / steps) * noise
            confidence = confidence.masked_fill(fixed, float("inf"))
            masked_now = (~fixed).sum(dim=1)
            keep_masked = num_masked_after_step(self.config.mask_schedule, t, steps, unknown, masked_now,
                                                planned)                                          # (B,)
            ranks = confidence.argsort(dim=1).argsort(dim=1)                    # 0 = least confident
            fixed = ranks >= keep_masked[:, None]
            tokens = sampled
            if on_step is not None:
                on_step(t, torch.where(fixed, tokens, self.mask_id), fixed)
        return tokens
