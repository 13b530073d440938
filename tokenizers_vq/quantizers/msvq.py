"""Multi-scale residual vector quantization, as in VAR.

Tian, Jiang, Yuan, Peng, Wang, "Visual Autoregressive Modeling: Scalable Image Generation via
Next-Scale Prediction", NeurIPS 2024 (Algorithms 1 and 2; FoundationVision/VAR `quant.py`).

With f = E(x), rest = f, f_hat = 0, for k = 1..K:
    z_k   = nearest_code(area_downsample(rest, s_k))      (no resampling at the last scale)
    h_k   = phi_k(bicubic_upsample(lookup(z_k), s_K))     phi(h) = (1 - r) h + r conv3x3(h), r = 0.5
    f_hat = f_hat + h_k ;  rest = rest - h_k
One codebook is shared by all scales; `phi_count` convs (4 in VAR) are shared across the K scales,
picked as VAR does: the tick nearest to the relative position k / (K - 1) (the first on ties) among
linspace(1/(3n), 1 - 1/(3n), n) when n == 4 and linspace(1/(2n), 1 - 1/(2n), n) otherwise
(`PhiPartiallyShared` in VAR's quant.py).  The decoder reads f_hat.  Loss, as in VAR's code, averaged over
scales: beta * ||sg[f_hat_k] - f||^2 + ||f_hat_k - sg[f]||^2 on the cumulative f_hat_k; the
encoder gets the straight-through gradient of the whole sum, f + sg[f_hat - f].

Built on vector-quantize-pytorch's `VectorQuantize` (one instance, called once per scale), not
on its `HierarchicalVQ`.  We evaluated HierarchicalVQ (1.32.0): it has the shared codebook,
phi = lerp(h, conv(h), 0.5), area downsampling (adaptive average pooling is what
interpolate(mode="area") computes) and per-scale indices with `get_output_from_indices`, but
- it upsamples bilinearly (VAR: bicubic), with no option to change it;
- its k-means init runs on the first call, the 1x1 scale, so a 4096-code book is initialised
  from B mean vectors (the library warns "duplicates will be sampled");
- it makes one EMA update and one dead-code pass per scale (K decays per step, each on one scale's
  vectors) instead of one per batch;
- it does not expose `codebook_dim`, `use_cosine_sim`, `learnable_codebook` / `ema_update`, so
  the codebook options of the single-scale VQ are not available;
- its straight-through estimator runs per scale inside the residual chain and its loss is the
  per-scale commitment on downsampled residuals, not VAR's loss on the cumulative f_hat;
- its phi selection (round(pos * (n - 1))) differs from VAR's for some scales, and it has no
  public per-scale `lookup` / upsample-and-refine step for the VAR generator.
Here: bicubic upsampling; k-means init on the residual pyramid of the first batch (every scale's
residual, as if the coarser scales were exact), or of as many batches as `kmeans_init_vectors`
takes (kmeans.py; the input passes through unquantized until then); scales 1..K-1 accumulate codebook statistics and
the last one applies a single EMA step and dead-code pass (`accum_ema_update`); every
VectorQuantize option passes through; `sync_codebook` works as in VectorQuantize.

phi's conv starts as the identity (dirac weights, zero bias), so an untrained quantizer is an
exact residual quantizer (VAR uses PyTorch's default init and trains phi from its VQ loss).

The generator side (VAR) needs only `lookup`, `upsample_and_refine` and `downsample`:
    f_hat = 0
    for k in range(K - 1):
        f_hat = f_hat + q.upsample_and_refine(q.lookup(ids[k]), k)  # (B, C, s_K, s_K)
        x_next = q.downsample(f_hat, k + 1)                          # input of scale k + 1
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..config import TokenizerConfig
from .base import (Quantizer, QuantizerOutput, check_vq_codebook, codebook_stats, full_precision, pass_through,
                   register_quantizer, vector_quantize)
from .kmeans import CodebookInit


class Phi(nn.Module):
    """h = (1 - r) h + r conv3x3(h): VAR's refinement of an upsampled scale."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.ratio = ratio
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        nn.init.dirac_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, h: Tensor) -> Tensor:
        if self.ratio == 0.0:
            return h
        return h.lerp(self.conv(h), self.ratio)


def phi_indices(num_scales: int, num_phis: int) -> list[int]:
    """Which shared phi each scale uses, as VAR's `PhiPartiallyShared` / `PhiNonShared`
    (FoundationVision/VAR, models/quant.py): n ticks
        np.linspace(1/3/n, 1 - 1/3/n, n) if n == 4 else np.linspace(1/2/n, 1 - 1/2/n, n),
    and scale k takes np.argmin(np.abs(ticks - k / (K - 1))), the first tick on ties.  The ticks
    are built as numpy's linspace builds them (start + i * step, the last set to stop), so float
    near-ties (e.g. K = 6, n = 5) fall as in VAR.  n = 1 gives the single tick 1/2; K = 1 (where
    VAR would divide by zero) takes position 0."""
    margin = 1 / 3 / num_phis if num_phis == 4 else 1 / 2 / num_phis
    lo, hi = margin, 1 - margin
    step = (hi - lo) / max(num_phis - 1, 1)
    ticks = [lo + i * step for i in range(num_phis)]
    ticks[-1] = hi if num_phis > 1 else ticks[-1]
    picks = []
    for k in range(num_scales):
        pos = k / max(num_scales - 1, 1)
        dists = [abs(t - pos) for t in ticks]
        picks.append(dists.index(min(dists)))
    return picks


@register_quantizer("msvq")
class MultiScaleVQ(Quantizer):
    multi_scale = True

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        scales: list[int] | tuple[int, ...],
        *,
        phi_count: int = 4,
        phi_ratio: float = 0.5,
        codebook_dim: int | None = None,
        learnable_codebook: bool = False,
        ema_decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        kmeans_init_vectors: int = 0,
        threshold_ema_dead_code: float = 2.0,
        commitment_weight: float = 0.25,
        sync_codebook: bool | None = None,
    ):
        super().__init__()
        self.dim, self.codebook_size, self.scales = dim, codebook_size, list(scales)
        self.commitment_weight = commitment_weight
        # The input of each lookup is detached (VAR's f_no_grad), so VectorQuantize's own loss only
        # trains its input projection (codebook_dim) and, when learnable, the codes.
        self.vq = vector_quantize(
            dim, codebook_size, codebook_dim=codebook_dim, learnable_codebook=learnable_codebook,
            ema_decay=ema_decay, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=threshold_ema_dead_code, commitment_weight=commitment_weight,
            rotation_trick=False, sync_codebook=sync_codebook, channel_last=True,
        )
        self.phis = nn.ModuleList([Phi(dim, phi_ratio) for _ in range(phi_count)])
        self.phi_of_scale = phi_indices(len(self.scales), phi_count)
        # the codebook's init state, cached on the host (no sync per step); 0 vectors: the first batch
        self.kmeans = CodebookInit(kmeans_init_vectors, kmeans_iters) if kmeans_init else None
        self.register_load_state_dict_post_hook(lambda module, _: module.kmeans and module.kmeans.reset())

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "MultiScaleVQ":
        return cls(
            cfg.latent_dim, cfg.codebook_size, cfg.scales,
            phi_count=cfg.phi_count, phi_ratio=cfg.phi_ratio, codebook_dim=cfg.codebook_dim,
            learnable_codebook=cfg.learnable_codebook, ema_decay=cfg.ema_decay,
            kmeans_init=cfg.kmeans_init, kmeans_iters=cfg.kmeans_iters,
            kmeans_init_vectors=cfg.kmeans_init_vectors, threshold_ema_dead_code=cfg.threshold_ema_dead_code,
            commitment_weight=cfg.commitment_weight, sync_codebook=cfg.sync_codebook,
        )

    @classmethod
    def validate_config(cls, cfg: TokenizerConfig) -> None:
        check_vq_codebook(cfg)
        scales, token_size = cfg.scales, cfg.token_size
        if not scales:
            raise ValueError(f"quantizer='msvq' needs scales, e.g. (1, 2, 3, 4, 6, {token_size})")
        if any(s < 1 for s in scales) or any(a >= b for a, b in zip(scales, scales[1:])):
            raise ValueError(f"scales must be positive and strictly increasing, got {scales}")
        if scales[-1] != token_size:
            raise ValueError(f"the last scale must be the full token map {token_size} (= image_size "
                             f"{cfg.image_size} // factor {cfg.factor}), got scales {scales}")
        if cfg.use_cosine_sim:
            raise ValueError("msvq quantizes residuals, whose norms matter; cosine lookup discards them. "
                             "Set use_cosine_sim=False (codebook_dim still gives a factorised lookup)")
        if cfg.phi_count < 1 or not 0.0 <= cfg.phi_ratio <= 1.0:
            raise ValueError(f"phi_count must be >= 1 and phi_ratio in [0, 1], got {cfg.phi_count}, {cfg.phi_ratio}")

    # ------------------------------------------------------------ the steps VAR needs

    def lookup(self, indices: Tensor) -> Tensor:
        """Token map (B, s, s) of any scale -> its code vectors (B, C, s, s)."""
        h = indices.shape[-2]
        with full_precision(indices.device):
            codes = self.vq.get_output_from_indices(rearrange(indices, "b h w -> b (h w)"))
        return rearrange(codes, "b (h w) c -> b c h w", h=h).contiguous()

    def upsample_and_refine(self, latent: Tensor, k: int) -> Tensor:
        """Scale k's code vectors (B, C, s_k, s_k) -> its contribution h_k (B, C, s_K, s_K)."""
        full = self.scales[-1]
        with full_precision(latent.device):
            h = latent.float()
            if h.shape[-1] != full:
                h = F.interpolate(h, size=(full, full), mode="bicubic", align_corners=False)
            return self.phis[self.phi_of_scale[k]](h)

    def downsample(self, latent: Tensor, k: int) -> Tensor:
        """Full-size latent (B, C, s_K, s_K) -> scale k's size by area averaging (identity at K)."""
        s = self.scales[k]
        if latent.shape[-1] == s:
            return latent
        return F.interpolate(latent, size=(s, s), mode="area")

    # ------------------------------------------------------------ Quantizer interface

    def forward(self, f: Tensor) -> QuantizerOutput:
        full = self.scales[-1]
        if f.ndim != 4 or f.shape[-2:] != (full, full) or f.shape[1] != self.dim:
            raise ValueError(
                f"MultiScaleVQ expects latents (B, {self.dim}, {full}, {full}), got {tuple(f.shape)}: "
                f"the last scale must equal the encoder's token map"
            )
        num_scales = len(self.scales)
        if self.kmeans is not None and self.kmeans.pending(self.vq._codebook) and not self._kmeans_init(f):
            return pass_through(self, f)
        with full_precision(f.device):
            f = f.float()
            f_nograd = f.detach()
            rest, f_hat = f_nograd, torch.zeros_like(f_nograd)
            indices, loss, stats = [], f.new_zeros(()), {}
            for k, s in enumerate(self.scales):
                rest_k = rearrange(self.downsample(rest, k), "b c h w -> b (h w) c")
                # Scales before the last only accumulate codebook statistics: one EMA step per batch.
                # The code vectors are VectorQuantize's own output, read from the codebook that chose
                # `ids`: in training the last call updates the codebook in place (EMA step, dead codes
                # restarted with batch vectors) after the search, so a `lookup(ids)` after it would
                # return other vectors than the ones the ids stand for.  rest_k needs no gradient, so
                # that output is exactly project_out(codebook[ids]) (a one-hot product in float32; no
                # straight-through term), with the same gradient to learnable codes / project_out.
                codes, ids, vq_loss = self.vq(rest_k, accum_ema_update=k < num_scales - 1)
                ids = rearrange(ids, "b (h w) -> b h w", h=s)
                codes = rearrange(codes, "b (h w) c -> b c h w", h=s).contiguous()
                h_k = self.upsample_and_refine(codes, k)  # (B, C, s_K, s_K)
                f_hat = f_hat + h_k
                rest = rest - h_k.detach()
                loss = loss + vq_loss + F.mse_loss(f_hat, f_nograd)
                loss = loss + self.commitment_weight * F.mse_loss(f_hat.detach(), f)
                indices.append(ids)
                stats[f"usage/{s}x{s}"], stats[f"perplexity/{s}x{s}"] = codebook_stats(ids, self.codebook_size)
            stats["usage"], stats["perplexity"] = codebook_stats(
                torch.cat([i.reshape(-1) for i in indices]), self.codebook_size
            )
            z_q = f + (f_hat - f).detach() if f.requires_grad else f_hat
        return QuantizerOutput(z_q, indices, loss / num_scales, stats)

    def indices_to_latent(self, indices: list[Tensor]) -> Tensor:
        """One token map per scale -> f_hat (B, C, s_K, s_K), the sum of every scale's h_k."""
        f_hat = None
        for k, ids in enumerate(indices):
            h_k = self.upsample_and_refine(self.lookup(ids), k)
            f_hat = h_k if f_hat is None else f_hat + h_k
        return f_hat

    @torch.no_grad()
    def _kmeans_init(self, f: Tensor) -> bool:
        """k-means on every scale's residual (before VectorQuantize would run it on the first, 1x1,
        scale alone), of the first training batch or of as many as `kmeans_init_vectors` takes.
        True once the codebook is initialised.  Gathering over several batches takes training batches
        only; the first-batch init takes any (as VectorQuantize's own does)."""
        if self.kmeans.min_vectors and not self.training:
            return False
        codebook = self.vq._codebook
        with full_precision(f.device):
            rest, samples = f.detach().float(), []
            for k in range(len(self.scales)):
                rest_k = self.downsample(rest, k)
                samples.append(rearrange(rest_k, "b c h w -> (b h w) c"))
                rest = rest - self.upsample_and_refine(rest_k, k)
            x = codebook.transform_input(self.vq.project_in(torch.cat(samples)))
            if self.kmeans.min_vectors == 0:  # the first batch, by the library's own k-means
                codebook.init_embed_(x[None])  # (1, N, d): one codebook
                self.kmeans.mark_initted()
                return True
            return self.kmeans.add(codebook, x)
