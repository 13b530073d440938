"""Quantizer-level tests: the VectorQuantize options pass through and keep the interface's
invariants; the multi-scale quantizer makes one EMA step per batch; a new quantizer kind is one
class with `@register_quantizer` and nothing else."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from tokgen.tokenizers_vq import (QUANTIZERS, VQ, MultiScaleVQ, Quantizer, QuantizerOutput, TokenizerConfig,
                                  VQTokenizer, build_quantizer, codebook_stats, get_preset, register_quantizer)


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


# ----------------------------------------------------------------------------- a fifth kind

class ScalarQuantizer(Quantizer):
    """A fifth kind as a user would add it: one class, one decorator, no edit anywhere else.  One
    latent channel (1x1 conv), squashed to [-1, 1] and rounded to `codebook_size` levels
    (straight-through); its tokens are the level indices."""

    def __init__(self, dim: int, levels: int, token_size: int):
        super().__init__()
        self.dim, self.codebook_size, self.scales = dim, levels, [token_size]
        self.proj_in, self.proj_out = torch.nn.Conv2d(dim, 1, 1), torch.nn.Conv2d(1, dim, 1)

    @classmethod
    def from_config(cls, cfg: TokenizerConfig) -> "ScalarQuantizer":
        return cls(cfg.z_channels, cfg.codebook_size, cfg.token_size)

    @classmethod
    def validate_config(cls, cfg: TokenizerConfig) -> None:
        super().validate_config(cfg)
        if cfg.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2 levels, got {cfg.codebook_size}")

    def _value(self, ids: torch.Tensor) -> torch.Tensor:
        return ids.float()[:, None] / (self.codebook_size - 1) * 2 - 1

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        u = torch.tanh(self.proj_in(z))                                      # (B, 1, h, w) in [-1, 1]
        ids = ((u + 1) / 2 * (self.codebook_size - 1)).round().long()[:, 0]
        u_q = u + (self._value(ids) - u).detach()
        usage, perplexity = codebook_stats(ids, self.codebook_size)
        return QuantizerOutput(self.proj_out(u_q), [ids], F.mse_loss(u, u_q.detach()),
                               {"usage": usage, "perplexity": perplexity})

    def indices_to_latent(self, indices: list[torch.Tensor]) -> torch.Tensor:
        return self.proj_out(self._value(indices[0]))


@pytest.fixture
def scalar_kind():
    register_quantizer("test-scalar")(ScalarQuantizer)
    try:
        yield "test-scalar"
    finally:
        del QUANTIZERS["test-scalar"]


def test_a_fifth_kind_needs_only_its_class_and_registration(scalar_kind, tmp_path):
    cfg = TokenizerConfig(image_size=16, base_width=8, channel_mults=(1, 2), z_channels=8, quantizer=scalar_kind,
                          codebook_size=12)
    # the spec comes from the kind's own class (built on the meta device), with no formula in config.py
    assert (cfg.spec.codebook_size, cfg.spec.scales) == (12, (8,))
    model = VQTokenizer(cfg).eval()
    assert isinstance(model.quantizer, ScalarQuantizer) and model.spec == cfg.spec
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    tokens = model.encode(x)
    assert [t.shape for t in tokens] == [(2, 8, 8)] and 0 <= int(tokens[0].min()) <= int(tokens[0].max()) < 12
    recon, qout = model.train()(x)
    qout.loss.backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0        # straight-through reaches the encoder
    model.eval().save_pretrained(tmp_path / "tok")
    loaded = VQTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.spec == model.spec and torch.equal(loaded.decode(tokens), model.decode(tokens))
    # its own checks run at config construction, named as config errors
    with pytest.raises(ValueError, match="TokenizerConfig: codebook_size must be >= 2 levels"):
        TokenizerConfig(quantizer=scalar_kind, codebook_size=1)
    with pytest.raises(ValueError, match="only applies to quantizer='msvq'"):   # the single-scale default
        TokenizerConfig(image_size=32, quantizer=scalar_kind, scales=(1, 2, 8))


def test_registry_errors_name_the_fix(scalar_kind):
    with pytest.raises(ValueError, match="already registered by ScalarQuantizer"):
        register_quantizer(scalar_kind)(VQ)
    with pytest.raises(TypeError, match="needs a Quantizer subclass"):
        register_quantizer("not-a-quantizer")(dict)
    with pytest.raises(ValueError, match=r"unknown quantizer 'no-such-kind'; choose one of "
                                         + re.escape(str(tuple(QUANTIZERS)))):
        TokenizerConfig(quantizer="no-such-kind")


def test_a_kind_that_cannot_be_built_on_meta_is_told_what_to_override():
    class NeedsValues(ScalarQuantizer):
        def __init__(self, dim: int, levels: int, token_size: int):
            super().__init__(dim, levels, token_size)
            self.codebook_size = int(torch.tensor(levels).sum().item())    # reads a value, as FSQ's library does

    register_quantizer("test-needs-values")(NeedsValues)
    try:
        cfg = TokenizerConfig(quantizer="test-needs-values", codebook_size=8)
        assert VQTokenizer(cfg).spec.codebook_size == 8                  # the built model is fine
        with pytest.raises(RuntimeError, match=r"override NeedsValues.token_layout\(cfg\)"):
            cfg.spec
    finally:
        del QUANTIZERS["test-needs-values"]
