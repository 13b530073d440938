"""Quantizer-level tests: the VectorQuantize options pass through and keep the interface's
invariants; the multi-scale quantizer makes one EMA step per batch."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from tokgen.tokenizers_vq import VQ, MultiScaleVQ, build_quantizer, get_preset


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def latents(n: int = 8, dim: int = 8, size: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, size, size, generator=g)


CODEBOOK_OPTIONS = [
    dict(),                                             # EMA, Euclidean, k-means init
    dict(use_cosine_sim=True),                          # l2-normalised codes
    dict(codebook_dim=4),                               # factorised lookup
    dict(codebook_dim=4, use_cosine_sim=True),          # ViT-VQGAN / the imagenet-256 preset
    dict(learnable_codebook=True, kmeans_init=False),   # codes learned by gradient
    dict(threshold_ema_dead_code=2.0, kmeans_init=False),
]


@pytest.mark.parametrize("options", CODEBOOK_OPTIONS, ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize("multiscale", [False, True], ids=["vq", "msvq"])
def test_codebook_options_keep_the_interface(options, multiscale):
    if multiscale and options.get("use_cosine_sim"):
        pytest.skip("cosine lookup is rejected for msvq by TokenizerConfig")
    torch.manual_seed(0)
    q = MultiScaleVQ(8, 32, [1, 2, 4], **options) if multiscale else VQ(8, 32, 4, **options)
    z = latents().requires_grad_(True)
    out = q(z)  # training step
    out.loss.backward()
    if options.get("learnable_codebook"):
        assert q.vq._codebook.embed.grad is not None and q.vq._codebook.embed.grad.abs().sum() > 0
    if options.get("codebook_dim"):
        assert q.vq.project_in.weight.grad.abs().sum() > 0
    q.eval()
    with torch.no_grad():
        out = q(latents(seed=1))
    assert [i.shape[-1] for i in out.indices] == q.scales
    assert all(0 <= int(i.min()) and int(i.max()) < 32 for i in out.indices)
    torch.testing.assert_close(q.indices_to_latent(out.indices), out.z_q, rtol=0, atol=1e-6)


def test_msvq_makes_one_ema_step_per_batch():
    d, V, scales = 0.9, 32, [1, 2, 4]
    q = MultiScaleVQ(8, V, scales, ema_decay=d, kmeans_init=False, threshold_ema_dead_code=0)
    before = q.vq._codebook.cluster_size.sum().item()  # V (initialised to ones)
    q(latents(n=8))
    n_vectors = 8 * sum(s * s for s in scales)
    after = q.vq._codebook.cluster_size.sum().item()
    assert after == pytest.approx(d * before + (1 - d) * n_vectors, rel=1e-5)


def test_msvq_straight_through_is_identity_for_the_encoder():
    q = MultiScaleVQ(8, 32, [1, 2, 4], kmeans_init=False, commitment_weight=0.0)
    z = latents().requires_grad_(True)
    out = q(z)
    g = torch.randn_like(out.z_q)
    (out.z_q * g).sum().backward()
    torch.testing.assert_close(z.grad, g)


def test_msvq_commitment_pulls_the_encoder_to_every_partial_sum():
    """The encoder's gradient from the quantizer loss is VAR's beta * mean_k d||f - f_hat_k||^2 / df
    (committing to the last sum alone was measured to break training: README, "The tokenizer")."""
    beta = 0.25
    q = MultiScaleVQ(8, 32, [1, 2, 4], kmeans_init=False, commitment_weight=beta).eval()
    z = latents().requires_grad_(True)
    out = q(z)
    out.loss.backward()
    with torch.no_grad():
        sums = torch.cumsum(torch.stack([q.upsample_and_refine(q.lookup(ids), k) for k, ids in enumerate(out.indices)]), 0)
    torch.testing.assert_close(z.grad, beta * torch.stack([2 * (z - s) / z.numel() for s in sums]).mean(0))


def test_msvq_phi_learns_from_the_vq_loss():
    q = MultiScaleVQ(8, 32, [1, 2, 4], kmeans_init=False)
    q(latents()).loss.backward()
    used = sorted(set(q.phi_of_scale))  # [0, 2, 3] for 3 scales: phi 1 sits between ticks
    assert used == [0, 2, 3] or used == [0, 1, 3]
    assert all(q.phis[i].conv.weight.grad.abs().sum() > 0 for i in used)


@pytest.mark.parametrize("name", ["shapes-tiny", "shapes-tiny-msvq", "shapes-tiny-fsq", "shapes-tiny-lfq"])
def test_registry_builds_each_preset_quantizer(name):
    cfg = get_preset(name)
    q = build_quantizer(cfg)
    assert q.codebook_size == cfg.spec.codebook_size and q.scales == list(cfg.spec.scales)
    out = q(torch.randn(2, cfg.z_channels, cfg.token_size, cfg.token_size))
    assert out.z_q.shape == (2, cfg.z_channels, cfg.token_size, cfg.token_size)
    assert F.mse_loss(out.z_q, out.z_q).item() == 0.0
