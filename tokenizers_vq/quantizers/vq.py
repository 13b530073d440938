"""Single-scale vector quantization.

van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation Learning" (VQ-VAE), NeurIPS
2017, with the codebook practice of Yu et al., "Vector-quantized Image Modeling with Improved
VQGAN" (ViT-VQGAN), ICLR 2022: factorised low-dimensional lookup (`codebook_dim`), l2-normalised
codes (`use_cosine_sim`), EMA updates, k-means init and dead-code restarts.

All of it is vector-quantize-pytorch's `VectorQuantize`; this file only adapts it to the
`Quantizer` interface.  Two choices differ from the library's defaults:
- gradients pass by the straight-through estimator (the library defaults to the rotation trick);
  `rotation_trick=True` brings it back;
- with `kmeans_init_vectors` > 0 the k-means init sees that many vectors, gathered over batches
  (kmeans.py), instead of the library's first batch alone;
- the commitment weight defaults to VQGAN's beta = 0.25 (the library: 1.0).  With a learnable
  codebook the library weighs the codebook term ||sg[z_e] - z_q||^2 by the same beta.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor

from ..config import TokenizerConfig
from .base import (Quantizer, QuantizerOutput, check_vq_codebook, codebook_stats, full_precision, pass_through,
                   register_quantizer, vector_quantize)
from .kmeans import CodebookInit


@register_quantizer("vq")
class VQ(Quantizer):
    def __init__(
        self,
        dim: int,
        codebook_size: int,
        token_size: int,
        *,
        codebook_dim: int | None = None,
        use_cosine_sim: bool = False,
        learnable_codebook: bool = False,
        ema_decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        kmeans_init_vectors: int = 0,
        threshold_ema_dead_code: float = 2.0,
        commitment_weight: float = 0.25,
        rotation_trick: bool = False,
        sync_codebook: bool | None = None,
    ):
        super().__init__()
        self.dim, self.codebook_size, self.scales = dim, codebook_size, [token_size]
        self.vq = vector_quantize(
            dim, codebook_size, codebook_dim=codebook_dim, use_cosine_sim=use_cosine_sim,
            learnable_codebook=learnable_codebook, ema_decay=ema_decay, kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
            commitment_weight=commitment_weight, rotation_trick=rotation_trick, sync_codebook=sync_codebook,
            accept_image_fmap=True,
        )
        # k-means over several batches; None: the library's init on the first batch (or no k-means)
        self.kmeans = CodebookInit(kmeans_init_vectors, kmeans_iters) if kmeans_init and kmeans_init_vectors > 0 \
            else None
        self.register_load_state_dict_post_hook(lambda module, _: module.kmeans and module.kmeans.reset())

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "VQ":
        return cls(
            cfg.latent_dim, cfg.codebook_size, cfg.token_size,
            codebook_dim=cfg.codebook_dim, use_cosine_sim=cfg.use_cosine_sim,
            learnable_codebook=cfg.learnable_codebook, ema_decay=cfg.ema_decay,
            kmeans_init=cfg.kmeans_init, kmeans_iters=cfg.kmeans_iters,
            kmeans_init_vectors=cfg.kmeans_init_vectors, threshold_ema_dead_code=cfg.threshold_ema_dead_code,
            commitment_weight=cfg.commitment_weight, rotation_trick=cfg.rotation_trick,
            sync_codebook=cfg.sync_codebook,
        )

    @classmethod
    def validate_config(cls, cfg: TokenizerConfig) -> None:
        super().validate_config(cfg)
        check_vq_codebook(cfg)

    def forward(self, z: Tensor) -> QuantizerOutput:
        if self.kmeans is not None and self.kmeans.pending(self.vq._codebook) and not self._gather(z):
            return pass_through(self, z)
        with full_precision(z.device):
            z_q, indices, loss = self.vq(z.float())  # (B, C, h, w), (B, h, w), ()
        usage, perplexity = codebook_stats(indices, self.codebook_size)
        return QuantizerOutput(z_q, [indices], loss, {"usage": usage, "perplexity": perplexity})

    def _gather(self, z: Tensor) -> bool:
        """Training: keep this batch's vectors for the k-means init and run it once there are
        enough; True when the codebook is initialised.  Eval: False (never initialise on eval data)."""
        if not self.training:
            return False
        codebook = self.vq._codebook
        with full_precision(z.device):
            x = codebook.transform_input(self.vq.project_in(rearrange(z.detach().float(), "b c h w -> b (h w) c")))
        return self.kmeans.add(codebook, x)

    def indices_to_latent(self, indices: list[Tensor]) -> Tensor:
        (ids,) = indices
        with full_precision(ids.device):
            # Not vq.get_output_from_indices: with accept_image_fmap it applies project_out to
            # channel-first codes, i.e. to the width axis (vector-quantize-pytorch 1.32.0).
            codes = self.vq.project_out(self.vq.codebook[ids])  # (B, h, w, C)
        return rearrange(codes, "b h w c -> b c h w")
