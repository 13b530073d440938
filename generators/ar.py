"""Autoregressive image-token generation, one token at a time in raster order.

- Caption-conditional, two ways (`text_conditioning`):
  "encoder" (the default): the caption goes through the text encoder every other family uses
  and reaches each block by adaLN (pooled) and cross-attention, with a BOS token in front of the
  image tokens, as Parti does with its encoder (Yu et al., "Scaling Autoregressive Models for
  Content-Rich Text-to-Image Generation", 2022).  "sequence", DALL-E style (Ramesh et al.,
  "Zero-Shot Text-to-Image Generation", ICML 2021): one decoder-only transformer over [BOS,
  caption tokens (BPE, padded to a fixed length), image tokens]; cross-entropy on caption and
  image tokens weighted 1/8 and 7/8.  Why "encoder" is the default: with the caption only in the
  causal sequence, teacher forcing lets every image token after the first object token copy the
  shape from its predecessors, so little gradient teaches the model to read the caption; at
  600 steps on the shapes (mini, batch 16) DALL-E style read the shape right in 24% of samples
  (chance: 25%) and matched 10.5% of captions, with the encoder 71.5% and 68.5% (README).  It
  also makes the comparison with MaskGIT, VAR and D3PM one of the generative process alone.
- Class-conditional (Esser et al., "Taming Transformers", CVPR 2021; Sun et al., "LlamaGen",
  2024): a class token in front instead of the caption; a learned null class for guidance.
- Unconditional: a learned start token.

Multi-scale token lists are one sequence, coarse scales first (spec.py).  Sampling prefills the
prefix into a static KV cache, then feeds one token per step (no re-encoding); classifier-free
guidance runs the conditional and null rows in the same batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokgen.io import eval_mode

from .base import CondState, Generator, register_family
from .conditioning import Condition, drop_mask
from .config import GeneratorConfig
from .core import ImagePositions, LearnedPositions, Transformer, TransformerConfig
from .sampling import guided, mix_guided, sample
from .spec import unflatten_tokens


TEXT_CONDITIONING = ("sequence", "encoder")


@dataclass
class ARConfig(GeneratorConfig):
    text_conditioning: str = "encoder"   # condition="text": "encoder" (the text encoder the other families use: adaLN + cross-attention) or "sequence" (DALL-E: caption tokens in the causal sequence)
    text_loss_weight: float = 0.125    # text_conditioning="sequence": caption-token loss weight (DALL-E 1/8); 0 = no text loss
    image_loss_weight: float = 0.875   # text_conditioning="sequence": image-token loss weight (DALL-E 7/8)

    def validate(self) -> None:
        super().validate()
        if self.text_conditioning not in TEXT_CONDITIONING:
            raise ValueError(f"text_conditioning must be one of {TEXT_CONDITIONING}, got {self.text_conditioning!r}")
        if self.text_loss_weight < 0 or self.image_loss_weight <= 0:
            raise ValueError(f"loss weights must be text >= 0 and image > 0, got {self.text_loss_weight}, "
                             f"{self.image_loss_weight}")


@register_family("ar")
class ARGenerator(Generator):
    config_class = ARConfig
    display_name = "AR"
    uses_text_encoder = False    # a frozen encoder is refused (its learned text encoder is built in __init__)
    fixed_steps = "one step per token (KV cache)"   # the cached decoder draws the N tokens one at a time
    likelihood = "exact"                     # the raster order factorises the joint: `nll_bits`
    known_support = "raster-prefix"          # given tokens are teacher-forced, so they must come first
    # Guidance acts on each of the N sequential token choices and compounds: at 3.0 the shapes
    # model lost a fifth of its caption matches, at 1.5 it gained (README, "The generators");
    # LlamaGen (Sun et al. 2024) likewise reports its best FID at scales 1.5-2.0.
    default_cfg_scale = 1.5
    # One token at a time at temperature 1, an under-trained model's long tail of unlikely codes
    # is drawn again and again and each draw stays in the image (MaskGIT's confidence decoding and
    # VAR's per-scale guidance filter theirs out); AR samplers truncate it (nucleus sampling,
    # Holtzman et al. 2020; top-k in VQGAN and DALL-E). On the demo's shapes the same AR models read
    # 83% -> 91% and 93.6% -> 98.4% (README, "Why AR and D3PM learned slowly"). top_p=1.0 turns it off.
    default_top_p = 0.9

    def __init__(self, spec: Any, config: ARConfig | dict | None = None, *, text_tokenizer=None):
        super().__init__(spec, config, text_tokenizer=text_tokenizer)
        cfg, D, V = self.config, self.config.width, self.spec.codebook_size
        self.num_tokens = self.spec.tokens_per_image                            # N
        in_sequence = self.caption_in_sequence
        self.prefix_len = cfg.text_length + 1 if in_sequence else 1             # P
        self.tok_emb = nn.Embedding(V, D)
        self.img_pos = ImagePositions(self.spec.scales, D, cfg.positions)
        if not self.class_token:
            self.bos = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        if in_sequence:
            self.class_emb, self.text = None, None                              # the caption is embedded here
            self.null_text_id = cfg.text_vocab_size                             # one extra learned id
            self.text_emb = nn.Embedding(cfg.text_vocab_size + 1, D)
            self.text_pos = LearnedPositions(self.prefix_len, D)
            self.text_head = nn.Linear(D, cfg.text_vocab_size) if cfg.text_loss_weight > 0 else None
            nn.init.normal_(self.text_emb.weight, std=0.02)
        else:
            # the class token's embedding; or "encoder": the caption reaches every block through the
            # pooled vector (adaLN) and cross-attention, exactly as in MaskGIT, VAR and D3PM, after BOS
            self._build_condition_embedders()
        encoded = self.text is not None
        self.core = Transformer(TransformerConfig(width=D, depth=cfg.depth, heads=cfg.heads,
                                                  mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout,
                                                  cond_dim=D if encoded else 0, cross_attention=encoded))
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(D, V)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ how the condition enters

    @property
    def class_token(self) -> bool:
        """Class labels start the sequence as a class token in place of BOS (LlamaGen)."""
        return self.conditioning.uses_labels

    @property
    def caption_in_sequence(self) -> bool:
        """Caption tokens are the first positions of the causal sequence (text_conditioning="sequence",
        DALL-E), not encoded beside it."""
        return self.conditioning.uses_captions and self.config.text_conditioning == "sequence"

    # ------------------------------------------------------------------ network

    def _prefix(self, cond: Condition | None, batch: int, drop: Tensor | None) -> Tensor:
        """The condition as the first P positions: (B, P, D)."""
        if self.class_token:
            return self._condition_state(cond, batch, drop).vector[:, None]     # (B, 1, D)
        bos = self.bos.expand(batch, -1, -1)                                    # (B, 1, D)
        if not self.caption_in_sequence:
            return bos
        if cond is None:
            ids = torch.full((batch, self.config.text_length), self.null_text_id, device=self.device)
        else:
            ids = cond.text_ids if drop is None else torch.where(drop[:, None], self.null_text_id, cond.text_ids)
        return torch.cat([bos, self.text_emb(ids)], dim=1) + self.text_pos()   # (B, 1+L, D)

    def _encoded(self, state: CondState | None) -> dict:
        """The core's condition arguments: the encoded caption (text_conditioning="encoder"), else none."""
        if state is None:
            return {}
        return dict(cond=state.vector, context=state.context, context_mask=state.context_mask)

    def _hidden(self, seq: Tensor, cond: Condition | None, drop: Tensor | None) -> Tensor:
        """Teacher-forced pass: [prefix, image tokens 0..N-2] -> (B, P+N-1, D)."""
        B = seq.shape[0]
        prefix = self._prefix(cond, B, drop)
        state = self._condition_state(cond, B, drop) if self.text is not None else None
        image = self.tok_emb(seq[:, :-1]) + self.img_pos()[: self.num_tokens - 1]   # (B, N-1, D)
        return self.core(self.drop(torch.cat([prefix, image], dim=1)), mask="causal", **self._encoded(state))

    def _image_logits(self, h: Tensor) -> Tensor:
        return self.head(h[:, self.prefix_len - 1:])                            # (B, N, V); row i predicts token i

    def logits(self, tokens: list[Tensor], cond: Any = None) -> Tensor:
        seq = self._tokens(tokens)
        cond = self._condition(cond, seq.shape[0])
        with eval_mode(self), torch.no_grad():
            return self._image_logits(self._hidden(seq, cond, None)).float()

    # ------------------------------------------------------------------ training

    def loss(self, tokens: list[Tensor], cond: Any = None) -> tuple[Tensor, dict[str, Tensor]]:
        seq = self._tokens(tokens)                                              # (B, N)
        B = seq.shape[0]
        cond = self._condition(cond, B)
        drop = drop_mask(B, self.config.cond_dropout, seq.device, self.training) if cond is not None else None
        h = self._hidden(seq, cond, drop)
        logits = self._image_logits(h)                                          # (B, N, V)
        loss_image = F.cross_entropy(logits.flatten(0, 1).float(), seq.flatten())
        # logs stay on the device (0-dim, detached): the loop reads them once per log_every steps
        logs = {"loss_image": loss_image.detach(), "bits_per_token": loss_image.detach().double() / math.log(2)}
        loss = loss_image
        if cond is not None and self.caption_in_sequence and self.text_head is not None:
            loss_text = self._text_loss(h, cond, drop)
            wt, wi = self.config.text_loss_weight, self.config.image_loss_weight
            loss = (wt * loss_text + wi * loss_image) / (wt + wi)
            logs["loss_text"] = loss_text.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    def _text_loss(self, h: Tensor, cond: Condition, drop: Tensor | None) -> Tensor:
        """Next-token loss on the real caption tokens (outputs at BOS..t_{L-1} predict t_1..t_L)."""
        keep = cond.text_mask if drop is None else cond.text_mask & ~drop[:, None]   # (B, L)
        logits = self.text_head(h[:, : self.prefix_len - 1])                        # (B, L, V_text)
        # the mean over the kept positions without a host sync (no keep.any(), no logits[keep]);
        # no kept position (every caption dropped) gives an exact 0 that still has a graph
        target = torch.where(keep, cond.text_ids, 0)                                 # padding may be any id
        ce = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="none").view_as(keep)
        return torch.where(keep, ce, 0.0).sum() / keep.sum().clamp(min=1)

    @torch.no_grad()
    def nll_bits(self, tokens: list[Tensor], cond: Any = None) -> Tensor:
        """Exact negative log-likelihood of each image, in bits per image token: (B,)."""
        return self._factorised_nll_bits(tokens, cond)

    # ------------------------------------------------------------------ sampling

    @torch.inference_mode()
    def generate(self, cond: Any = None, *, num_samples: int | None = None, steps: int | None = None,
                 cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 known: Any = None) -> list[Tensor]:
        """Sample token maps one token at a time with a KV cache.  `known` must be a raster prefix
        (the first rows; coarse scales first): those tokens are teacher-forced and kept."""
        N = self.sampling_steps(steps)                                          # one step per token
        self._check_sampling(cfg_scale, generator)
        known = self._known(known)
        cond = self._condition(cond)
        B = self._batch_size(cond, num_samples, known[0].shape[0] if known is not None else None)
        start = self._known_prefix(known) if known is not None else 0
        out = torch.zeros(B, N, dtype=torch.long, device=self.device)
        if known is not None:
            out[:, :start] = known[0][:, :start]
        if start == N:
            return unflatten_tokens(out, self.spec.scales)
        with eval_mode(self):
            out = self._decode(out, start, cond, known, cfg_scale, dict(temperature=temperature, top_k=top_k,
                                                                         top_p=top_p, generator=generator))
        return unflatten_tokens(out, self.spec.scales)

    def _decode(self, out: Tensor, start: int, cond: Condition | None, known: tuple[Tensor, Tensor] | None,
                cfg_scale: float, sampling: dict) -> Tensor:
        # Why this loop stays eager: at batch 8 a step is 17 matmuls of 8 rows against each weight
        # (width 256, depth 4, codebook 1024), and those kernels, not Python, take most of the time:
        # on a 2-core AVX2 EPYC (2026-12-02) they ran 0.62 s of a 1.0 s sample, 7x the FLOP limit
        # (bench/kernels.py; the 13.7 MB of weights fit in L3, so the 8-row GEMM itself is slow).
        # A torch.compile'd one-token step (inductor, static full-length cache; 1 thread) took
        # 2.5-2.9 s of CPU time for 256 steps against 2.9 s eager, for 37 s of compilation.
        B, N = out.shape
        doubled = guided(cfg_scale)
        prefix = self._prefix(cond, B, None)                                    # (B, P, D)
        if doubled:                                                             # [cond rows; null rows]
            prefix = torch.cat([prefix, self._prefix(None, B, None)])          # (2B, P, D)
        encoded = self._encoded(self._guided_state(cond, B, cfg_scale)[0] if self.text is not None else None)
        pos = self.img_pos()                                                    # (N, D), once
        cache = self.core.new_cache(prefix.shape[0], self.prefix_len + N - 1, like=prefix)
        x = prefix
        if start:                                                               # teacher-force the known prefix
            given = self.tok_emb(out[:, :start]) + pos[:start]                  # (B, start, D)
            x = torch.cat([prefix, torch.cat([given, given]) if doubled else given], dim=1)
        h = self.core(x, mask="causal", cache=cache, **encoded)[:, -1]          # (B or 2B, D)
        for i in range(start, N):
            logits = mix_guided(self.head(h), cfg_scale, doubled)              # (B, V)
            tok, _ = sample(logits, **sampling)                                 # (B,)
            if known is not None:
                tok = torch.where(known[1][:, i], known[0][:, i], tok)
            out[:, i] = tok
            if i + 1 < N:
                e = self.tok_emb(tok) + pos[i]                                  # (B, D)
                e = torch.cat([e, e]) if doubled else e
                h = self.core(e[:, None], mask="causal", cache=cache, **encoded)[:, 0]   # one position
        return out

    def sampling_steps(self, steps: int | None = None) -> int:
        return self._fixed_step_count(steps, self.num_tokens, "tokens per image")

    def _known_prefix(self, known: tuple[Tensor, Tensor]) -> int:
        """Length of the known raster prefix shared by every row (`_known` checked that each row's
        is a prefix); rows with a longer prefix are teacher-forced during decoding."""
        return int(known[1].sum(dim=1).min())
