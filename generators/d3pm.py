"""Discrete denoising diffusion on token maps.

- D3PM: Austin, Johnson, Ho, Tarlow, van den Berg, "Structured Denoising Diffusion Models in
  Discrete State-Spaces", NeurIPS 2021 (absorbing-state transitions, the x0-parameterisation,
  the hybrid loss).
- Multinomial diffusion: Hoogeboom, Nielsen, Jaini, Forre, Welling, "Argmax Flows and
  Multinomial Diffusion: Learning Categorical Distributions", NeurIPS 2021 (uniform transitions,
  cosine schedule).

Both transitions have the form Q_t = (1 - beta_t) I + beta_t 1 pi^T with a stationary row pi
(uniform: pi = 1/K over the K codes; absorbing: pi = e_mask over K + 1 states, the mask being id
K), so every product of them keeps the form: Qbar_t = alpha_bar_t I + (1 - alpha_bar_t) 1 pi^T
and Q_{s+1} ... Q_t = (alpha_bar_t / alpha_bar_s) I + (...) 1 pi^T.  Nothing here builds a
K x K matrix (`DiscreteDiffusion`):

    q(x_t | x_0)          = alpha_bar_t onehot(x_0) + (1 - alpha_bar_t) pi
    q(x_s | x_t, x_0)     ∝ q(x_t | x_s) q(x_s | x_0)                          (s < t; s = t-1 is the posterior)
    p(x_s | x_t)          ∝ sum_x0 q(x_s, x_t | x_0) p(x_0 | x_t) = q(x_t | x_s) (p(x_0 | x_t) Qbar_s)

the last because q(x_t | x_s) does not depend on x_0: the model's step is the posterior formula
with the predicted distribution of x_0 in place of the one-hot, O(K) per token.  Sampling with
fewer steps than T jumps t -> s through the same formula.  For absorbing transitions both reduce to closed
forms costing O(1) per token beyond the x_0 draw (`DiscreteDiffusion.sample_step`, `vb_terms`).

Training (hybrid loss): t ~ U{1..T}, x_t ~ q(x_t | x_0), loss = L_{t-1} + lambda CE(x_0), with
L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 1 and -log p(x_0 | x_1) for t = 1,
each averaged over tokens (D3PM's lambda 0.01; 1.0 here, see `D3PMConfig.hybrid_weight`).
`elbo_bits` sums all T terms and the prior term: an upper bound on the NLL in bits per token,
comparable with AR's exact `nll_bits`.

The network is the shared core with full attention, the timestep through adaLN (its sinusoidal
embedding and an MLP, DiT-style, added to the class embedding or pooled caption), captions also
through cross-attention.  Guidance mixes the x_0 logits of [conditional; null] rows of one
batched forward.  Known tokens (inpainting, outpainting) are clamped into x_t at every step.
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
from .core import ImagePositions, Transformer, TransformerConfig, sincos_1d
from .sampling import GUIDANCE_SCHEDULES, filter_logits, guidance_scale, mix_guided, sample
from .schedules import DIFFUSION_SCHEDULES, diffusion_alpha_bar
from .spec import unflatten_tokens

TRANSITIONS = ("absorbing", "uniform")


@dataclass
class D3PMConfig(GeneratorConfig):
    # "absorbing" (a mask state; D3PM-absorbing) or "uniform" (multinomial diffusion).  In the demo's
    # setting (mini, 1,000 steps of 16, 16 sampling steps, 200 captions, 130 tokens) absorbing matched
    # 63.0% and uniform 53.5% at hybrid_weight 0.01 (README, "Why AR and D3PM learned slowly").
    transition: str = "absorbing"
    timesteps: int = 100                 # T forward steps (D3PM uses 1000 on images; elbo_bits runs T forwards)
    # "cosine" (more of training at high masking ratios, as MaskGIT's: 85.5% of the demo's captions
    # against linear's 82% in a paired run, both at hybrid_weight 1 with the x_0 cross-entropy on every
    # token) or "linear" (beta_t = 1/(T-t+1), D3PM's absorbing schedule);
    # "auto", the default of checkpoints before 2026-12: linear if absorbing, cosine if uniform
    noise_schedule: str = "cosine"
    # lambda of L_vb + lambda CE(x_0).  D3PM used 0.01 (0.001 in some image runs) for long trainings; on
    # short ones the bound's gradient is too noisy to learn from alone (its 1/t weights put a step's
    # signal on a few masked tokens): at the demo's budget 0.01 matched 55% of the captions, 1.0 85.5%
    # (README, "Why AR and D3PM learned slowly").
    hybrid_weight: float = 1.0
    steps: int = 0                       # generate(steps=None): sampling steps in [1, T], skipping by the closed form; 0 = T
    guidance_schedule: str = "constant"  # "constant" or "linear" (grows from 1 to cfg_scale over the steps)

    def validate(self) -> None:
        super().validate()
        if self.transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}, got {self.transition!r}")
        if self.noise_schedule != "auto" and self.noise_schedule not in DIFFUSION_SCHEDULES:
            raise ValueError(f"noise_schedule must be 'auto' or one of {DIFFUSION_SCHEDULES}, "
                             f"got {self.noise_schedule!r}")
        if self.timesteps < 1 or not 0 <= self.steps <= self.timesteps:
            raise ValueError(f"need timesteps >= 1 and steps in [0, timesteps] (0 = timesteps), got "
                             f"timesteps={self.timesteps}, steps={self.steps}")
        if self.hybrid_weight < 0:
            raise ValueError(f"hybrid_weight must be >= 0, got {self.hybrid_weight}")
        if self.guidance_schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance_schedule must be one of {sorted(GUIDANCE_SCHEDULES)}, "
                             f"got {self.guidance_schedule!r}")

    @property
    def schedule(self) -> str:
        if self.noise_schedule != "auto":
            return self.noise_schedule
        return "linear" if self.transition == "absorbing" else "cosine"


class DiscreteDiffusion:
    """The forward process of K codes and its closed forms, in log space over S states (S = K,
    or K + 1 with the mask id K for the absorbing kind).  Times are LongTensors (B,) in [0, T]."""

    def __init__(self, kind: str, num_codes: int, timesteps: int, schedule: str):
        if kind not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}, got {kind!r}")
        self.kind, self.K, self.T = kind, num_codes, timesteps
        self.num_states = num_codes + 1 if kind == "absorbing" else num_codes
        self.mask_id = num_codes if kind == "absorbing" else None
        self.alpha_bar = diffusion_alpha_bar(schedule, timesteps)              # (T+1,) float64
        self._alpha_bar_cache: dict[torch.device, Tensor] = {}                 # alpha_bar per device (_alpha_bar_on)

    def pi(self, device: torch.device | None = None) -> Tensor:
        """The stationary row pi (S,) float64: where the chain ends."""
        if self.kind == "uniform":
            return torch.full((self.K,), 1.0 / self.K, dtype=torch.float64, device=device)
        pi = torch.zeros(self.num_states, dtype=torch.float64, device=device)
        pi[self.mask_id] = 1.0                          # one-hot at the mask, with no copy from the host
        return pi

    def beta(self, t: int) -> float:
        """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, t in [1, T]."""
        return 1.0 - float(self.alpha_bar[t] / self.alpha_bar[t - 1])

    def _ab(self, t: Tensor) -> Tensor:
        return self._alpha_bar_on(t.device)[t]                                # (B,) float64

    def _alpha_bar_on(self, device: torch.device) -> Tensor:
        """alpha_bar on `device`, copied there once: a copy from host memory at every step would
        wait for the device (a sync per training step and per sampling step)."""
        device = torch.device(device)
        if self.alpha_bar.device == device:
            return self.alpha_bar
        if device not in self._alpha_bar_cache:
            self._alpha_bar_cache[device] = self.alpha_bar.to(device)
        return self._alpha_bar_cache[device]

    def q_probs(self, x0: Tensor, t: Tensor) -> Tensor:
        """q(x_t | x_0) = alpha_bar_t onehot(x_0) + (1 - alpha_bar_t) pi: (B, N, S) float64."""
        ab = self._ab(t)[:, None, None]
        return ab * F.one_hot(x0, self.num_states).double() + (1 - ab) * self.pi(x0.device)

    def q_sample(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_t ~ q(x_t | x_0): keep each token with prob. alpha_bar_t, else draw it from pi."""
        keep = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64) < self._ab(t)[:, None]
        if self.kind == "absorbing":
            noise = torch.full_like(x0, self.mask_id)
        else:
            noise = torch.randint(0, self.K, x0.shape, generator=generator, device=x0.device)
        return torch.where(keep, x0, noise)

    def prior(self, batch: int, length: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ pi: all mask (absorbing) or uniform codes."""
        if self.kind == "absorbing":
            return torch.full((batch, length), self.mask_id, dtype=torch.long, device=device)
        return torch.randint(0, self.K, (batch, length), generator=generator, device=device)

    def log_step(self, log_x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """log q(x_s | x_t, x_0) for a one-hot log_x0, log p(x_s | x_t) for predicted log p(x_0 | x_t):
        log_x0 (B, N, S) (-inf allowed), x_t (B, N), 0 <= s < t <= T (B,) -> normalised (B, N, S) float32.
        = log [q(x_t | x_s) (x_0 Qbar_s)] - log sum, with q(x_t | x_s) = a onehot(x_t)[x_s] + (1 - a) pi[x_t],
        a = alpha_bar_t / alpha_bar_s."""
        ab_t, ab_s = self._ab(t), self._ab(s)                                  # (B,) float64; ab_s > 0 as s < T
        a = ab_t / ab_s
        col = lambda v: v.log().float()[:, None, None]                         # scalar logs in float64 -> (B, 1, 1)
        log_pi = self.pi(x_t.device).log().float()                             # (S,)
        same = F.one_hot(x_t, self.num_states).bool()                          # (B, N, S)
        log_fwd = torch.logaddexp(torch.where(same, col(a), -math.inf),
                                  col(1 - a) + log_pi[x_t][..., None])         # log q(x_t | x_s = j)
        log_marg = torch.logaddexp(col(ab_s) + log_x0.float(), col(1 - ab_s) + log_pi)   # log (x_0 Qbar_s)[j]
        out = log_fwd + log_marg
        return out - out.logsumexp(dim=-1, keepdim=True)

    def reads_x0(self, x_t: Tensor) -> Tensor:
        """Where the reverse step reads the model's x_0 (B, N) bool: at every token of the uniform
        kind; at the masked ones of the absorbing kind, whose step carries unmasked tokens over
        (MDLM's carry-over unmasking, Sahoo et al. 2024)."""
        if self.kind == "uniform":
            return torch.ones_like(x_t, dtype=torch.bool)
        return x_t == self.mask_id

    def sample_step(self, log_p0: Tensor, x_t: Tensor, t: Tensor, s: Tensor,
                    generator: torch.Generator | None = None) -> Tensor:
        """x_s ~ p(x_s | x_t) (B, N) for predicted log p(x_0 | x_t) (B, N, S), 0 <= s < t <= T (B,).

        Absorbing: the posterior keeps unmasked tokens and reveals each masked one with probability
        w = (alpha_bar_s - alpha_bar_t) / (1 - alpha_bar_t), drawing it from p(x_0 | x_t) (the
        closed form behind `vb_terms`; w = 1 at s = 0), so one draw of x_0 and one coin per token
        replace the (B, N, S) posterior of `log_step`, which the uniform kind samples from."""
        if self.kind == "uniform":
            return sample(self.log_step(log_p0, x_t, t, s), generator=generator)[0]
        ab_t, ab_s = self._ab(t), self._ab(s)
        w = (ab_s - ab_t) / (1 - ab_t)                                         # (B,) float64
        coin = torch.rand(x_t.shape, generator=generator, device=x_t.device, dtype=torch.float64)
        reveal = self.reads_x0(x_t) & (coin < w[:, None])
        return torch.where(reveal, sample(log_p0, generator=generator)[0], x_t)

    def log_x0(self, logits: Tensor) -> Tensor:
        """Codebook logits (..., K) -> log p(x_0) over the S states (the mask gets -inf)."""
        logp = logits.float().log_softmax(dim=-1)
        if self.kind == "uniform":
            return logp
        return F.pad(logp, (0, 1), value=-math.inf)

    def vb_terms(self, x0: Tensor, x_t: Tensor, t: Tensor, log_p0: Tensor) -> Tensor:
        """L_{t-1} per token in nats (B, N): KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)), and
        -log p(x_0 | x_1) in the rows with t = 1.

        Absorbing transitions reduce it to a weighted cross-entropy (the masked-LM reading of D3PM):
        an unmasked token is x_0 in both posteriors (0 nats); a masked one is unmasked at this step
        with probability w_t = (alpha_bar_{t-1} - alpha_bar_t) / (1 - alpha_bar_t) in both, into x_0
        under q and into p(x_0 | x_t) under p, so the KL is -w_t log p(x_0 | x_t) (w_1 = 1 gives
        the t = 1 term).  That costs O(1) per token instead of two (B, N, S) posteriors; the general
        path (`_vb_terms_by_posteriors`) serves the uniform kind and checks this one in the tests."""
        if self.kind == "uniform":
            return self._vb_terms_by_posteriors(x0, x_t, t, log_p0)
        ab_t, ab_s = self._ab(t), self._ab(t - 1)                              # ab_t < ab_s <= 1 for t >= 1
        w = ((ab_s - ab_t) / (1 - ab_t)).float()[:, None]                      # (B, 1)
        nll = -log_p0.gather(-1, x0[..., None]).squeeze(-1).float()            # (B, N)
        return torch.where(self.reads_x0(x_t), w * nll, 0.0)

    def _vb_terms_by_posteriors(self, x0: Tensor, x_t: Tensor, t: Tensor, log_p0: Tensor) -> Tensor:
        """`vb_terms` from the two posteriors of `log_step`, for either kind."""
        s = t - 1
        log_p = self.log_step(log_p0, x_t, t, s)                               # (B, N, S)
        log_q = self.log_step(F.one_hot(x0, self.num_states).float().log(), x_t, t, s)
        q = log_q.exp()
        kl = torch.where(q > 0, q * (log_q - log_p), 0.0).sum(-1)              # (B, N)
        nll = -log_p.gather(-1, x0[..., None]).squeeze(-1)                     # (B, N)
        return torch.where((t == 1)[:, None], nll, kl)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """KL(q(x_T | x_0) || pi) per token, nats (B, N); 0 when alpha_bar_T = 0."""
        T = torch.full((x0.shape[0],), self.T, device=x0.device)
        q = self.q_probs(x0, T)
        log_pi = self.pi(x0.device).log()
        return torch.where(q > 0, q * (q.log() - log_pi), 0.0).sum(-1).float()


@register_family("d3pm")
class D3PMGenerator(Generator):
    config_class = D3PMConfig
    display_name = "D3PM"
    default_steps = D3PMConfig.steps or D3PMConfig.timesteps   # the config's default: steps 0 = all T
    compare_steps = (16, 64)         # few and many jumps: the quality a step buys, and its cost
    likelihood = "bound"             # the variational bound `elbo_bits` (also as `nll_bits`)

    def __init__(self, spec: Any, config: D3PMConfig | dict | None = None, *, text_tokenizer=None):
        super().__init__(spec, config, text_tokenizer=text_tokenizer)
        cfg, D, V = self.config, self.config.width, self.spec.codebook_size
        self.num_tokens = self.spec.tokens_per_image
        self.diffusion = DiscreteDiffusion(cfg.transition, V, cfg.timesteps, cfg.schedule)
        self.tok_emb = nn.Embedding(self.diffusion.num_states, D)
        self.pos = ImagePositions(self.spec.scales, D, cfg.positions)
        self.register_buffer("time_freqs", sincos_1d(torch.arange(cfg.timesteps + 1).float(), D), persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))   # DiT's TimestepEmbedder
        self._build_condition_embedders()
        self.core = Transformer(TransformerConfig(width=D, depth=cfg.depth, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio,
                                                  dropout=cfg.dropout, cond_dim=D,
                                                  cross_attention=self.conditioning.cross_attention))
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(D, V)
        for lin in (self.time_mlp[0], self.time_mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ network

    def forward(self, x_t: Tensor, t: Tensor, state: CondState) -> Tensor:
        """x_t (B, N) state ids, t (B,) -> logits of p(x_0 | x_t) over the codebook (B, N, V)."""
        x = self.tok_emb(x_t) + self.pos()                                     # (B, N, D)
        c = self.time_mlp(self.time_freqs[t].to(x.dtype))                      # (B, D)
        if state.vector is not None:
            c = c + state.vector
        h = self.core(self.drop(x), mask="full", cond=c, context=state.context, context_mask=state.context_mask)
        return self.head(h)

    def logits(self, tokens: list[Tensor], cond: Any = None, t: int = 1) -> Tensor:
        """The x_0 logits (B, N, V) reading `tokens` as x_t at step t (default 1: nearly clean)."""
        seq = self._tokens(tokens)
        cond = self._condition(cond, seq.shape[0])
        if not 1 <= t <= self.config.timesteps:
            raise ValueError(f"t must be in [1, {self.config.timesteps}], got {t}")
        with eval_mode(self), torch.no_grad():
            state = self._condition_state(cond, seq.shape[0], None)
            return self(seq, torch.full((seq.shape[0],), t, device=seq.device), state).float()

    # ------------------------------------------------------------------ training

    def loss(self, tokens: list[Tensor], cond: Any = None) -> tuple[Tensor, dict[str, Tensor]]:
        x0 = self._tokens(tokens)                                              # (B, N)
        B, T = x0.shape[0], self.config.timesteps
        cond = self._condition(cond, B)
        drop = drop_mask(B, self.config.cond_dropout, x0.device, self.training) if cond is not None else None
        t = torch.randint(1, T + 1, (B,), device=x0.device)
        x_t = self.diffusion.q_sample(x0, t)
        logits = self(x_t, t, self._condition_state(cond, B, drop))            # (B, N, V)
        log_p0 = self.diffusion.log_x0(logits)
        loss_vb = self.diffusion.vb_terms(x0, x_t, t, log_p0).mean()
        # lambda's x_0 cross-entropy only where the reverse step reads the model's x_0: fitting it at
        # carried-over tokens too spends the model on copying its input (at the demo's budget, with
        # cosine: on every token 85.5% of the captions matched, on the masked ones alone, without
        # L_vb, 96.5%).
        ce = F.cross_entropy(logits.flatten(0, 1).float(), x0.flatten(), reduction="none").view_as(x0)
        read = self.diffusion.reads_x0(x_t)
        loss_ce = (ce * read).sum() / read.sum().clamp(min=1)
        loss = loss_vb + self.config.hybrid_weight * loss_ce
        # logs stay on the device (0-dim, detached): the loop reads them once per log_every steps
        return loss, {"loss": loss.detach(), "loss_vb": loss_vb.detach(), "loss_ce": loss_ce.detach(),
                      "elbo_bits_estimate": T * loss_vb.detach().double() / math.log(2)}   # unbiased, minus the prior term (0)

    @torch.no_grad()
    def elbo_bits(self, tokens: list[Tensor], cond: Any = None, *,
                  generator: torch.Generator | None = None) -> Tensor:
        """The variational bound on -log p(x_0) of each image in bits per token (B,): the prior
        term + all T terms, one draw of x_t per term (T forwards).  An upper bound on the NLL, so
        comparable with AR's exact `nll_bits`."""
        x0 = self._tokens(tokens)
        B, N, T = *x0.shape, self.config.timesteps
        cond = self._condition(cond, B)
        total = self.diffusion.prior_kl(x0).sum(1).double()                     # (B,)
        with eval_mode(self):
            state = self._condition_state(cond, B, None)
            for step in range(1, T + 1):
                t = torch.full((B,), step, device=x0.device)
                x_t = self.diffusion.q_sample(x0, t, generator)
                log_p0 = self.diffusion.log_x0(self(x_t, t, state))
                total += self.diffusion.vb_terms(x0, x_t, t, log_p0).sum(1).double()
        return (total / N / math.log(2)).float()

    nll_bits = elbo_bits     # the family's likelihood figure (a bound, not AR's exact NLL)

    # ------------------------------------------------------------------ sampling

    @torch.inference_mode()
    def generate(self, cond: Any = None, *, num_samples: int | None = None, steps: int | None = None,
                 cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 known: Any = None) -> list[Tensor]:
        """Ancestral sampling from x_T ~ pi in `steps` jumps (default config.steps, 0 = T) on the
        integer grid round(linspace(T, 0, steps + 1)).  temperature / top_k / top_p filter the
        x_0 prediction; guidance mixes the x_0 logits; known tokens are clamped at every step."""
        steps = self.sampling_steps(steps)
        self._check_sampling(cfg_scale, generator)
        known = self._known(known)
        cond = self._condition(cond)
        B = self._batch_size(cond, num_samples, known[0].shape[0] if known is not None else None)
        with eval_mode(self):
            x = self._decode(B, cond, known, steps, cfg_scale, dict(temperature=temperature, top_k=top_k, top_p=top_p),
                             generator)
        return unflatten_tokens(x, self.spec.scales)

    def sampling_steps(self, steps: int | None = None) -> int:
        T = self.config.timesteps
        steps = (self.config.steps or T) if steps is None else steps
        if not 1 <= steps <= T:
            raise ValueError(f"steps must be in [1, {T}] (timesteps T), got {steps}")
        return steps

    def _decode(self, B: int, cond: Condition | None, known: tuple[Tensor, Tensor] | None, steps: int,
                cfg_scale: float, filters: dict, generator: torch.Generator | None) -> Tensor:
        T, dev = self.config.timesteps, self.device
        times = torch.linspace(T, 0, steps + 1, dtype=torch.float64).round().long().tolist()   # distinct: spacing >= 1
        state, doubled = self._guided_state(cond, B, cfg_scale)
        x = self.diffusion.prior(B, self.num_tokens, dev, generator)           # (B, N)
        for i, (t, s) in enumerate(zip(times[:-1], times[1:])):
            if known is not None:
                x = torch.where(known[1], known[0], x)
            t_rows = torch.full((2 * B if doubled else B,), t, device=dev)
            logits = self(torch.cat([x, x]) if doubled else x, t_rows, state)  # (B or 2B, N, V)
            scale = guidance_scale(self.config.guidance_schedule, cfg_scale, (i + 1) / steps)
            log_p0 = self._filtered_x0(mix_guided(logits, scale, doubled), filters)
            x = self.diffusion.sample_step(log_p0, x, t_rows[:B], torch.full_like(t_rows[:B], s), generator)
        if known is not None:         # clamped before every step and after the last: a known token need not be a possible x_T
            x = torch.where(known[1], known[0], x)
        return x

    def _filtered_x0(self, logits: Tensor, filters: dict) -> Tensor:
        """Guided x_0 logits -> log p(x_0 | x_t) over the states, after temperature / top-k / top-p
        (temperature 0: the argmax x_0)."""
        if filters["temperature"] == 0:
            logits = torch.where(F.one_hot(logits.argmax(-1), logits.shape[-1]).bool(), 0.0, -math.inf)
        return self.diffusion.log_x0(filter_logits(logits, **filters))
