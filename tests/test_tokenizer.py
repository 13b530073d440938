"""Tokenizer contract tests (parametrized over every quantizer kind), the multi-scale quantizer's
algorithm, checkpoints, input errors and the training losses."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from tokgen.tokenizers_vq import (
    LOSS_PRESETS,
    PRESETS,
    QUANTIZER_KINDS,
    LossConfig,
    MultiScaleVQ,
    PatchDiscriminator,
    TokenizerConfig,
    TokenizerLoss,
    TokenizerSpec,
    VQTokenizer,
    adaptive_weight,
    codebook_stats,
    get_preset,
    hinge_d_loss,
    hinge_g_loss,
    read_spec,
)
from tokgen.tokenizers_vq.quantizers.msvq import phi_indices

PALETTE = torch.tensor(
    [[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.1, 0.2, 0.9], [0.9, 0.9, 0.1], [0.1, 0.1, 0.1], [0.9, 0.9, 0.9]]
)


def squares(n: int, size: int = 16, cell: int = 4, seed: int = 0) -> torch.Tensor:
    """Random but structured images: a palette background with one grid-aligned palette square."""
    g = torch.Generator().manual_seed(seed)
    k = size // cell
    img = PALETTE[torch.randint(0, 6, (n,), generator=g)][:, :, None, None].repeat(1, 1, size, size)
    for i in range(n):
        s = int(torch.randint(1, 3, (1,), generator=g))
        y, x = torch.randint(0, k - s + 1, (2,), generator=g).tolist()
        colour = PALETTE[int(torch.randint(0, 6, (1,), generator=g))]
        img[i, :, y * cell:(y + s) * cell, x * cell:(x + s) * cell] = colour[:, None, None]
    return img


def tiny_config(kind: str, **overrides) -> TokenizerConfig:
    """16x16 images, factor 2 -> 8x8 tokens, a few thousand weights."""
    base = dict(
        image_size=16, base_width=8, channel_mults=(1, 2), num_res_blocks=1, z_channels=8,
        mid_attention=True, quantizer=kind, codebook_size=64, ema_decay=0.8,
        scales=(1, 2, 4, 8) if kind == "msvq" else None, fsq_levels=(5, 5, 5), lfq_bits=6,
    )
    return TokenizerConfig(**{**base, **overrides})


def tiny_tokenizer(kind: str, seed: int = 0, **overrides) -> VQTokenizer:
    torch.manual_seed(seed)
    model = VQTokenizer(tiny_config(kind, **overrides))
    with torch.no_grad():
        model(squares(16, seed=seed + 100))  # train-mode pass: k-means init of the codebook
    return model.eval()


@pytest.fixture(autouse=True)
def _quiet():
    # The k-means init warns when a batch has fewer vectors than codes; expected here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- contract, every kind

@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_encode_gives_one_valid_map_per_scale(kind):
    model = tiny_tokenizer(kind)
    tokens = model.encode(squares(4))
    spec = model.spec
    assert len(tokens) == len(spec.scales)
    for t, s in zip(tokens, spec.scales):
        assert t.dtype == torch.long and t.shape == (4, s, s)
        assert 0 <= int(t.min()) and int(t.max()) < spec.codebook_size


@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_decode_of_encode_is_the_quantized_path(kind):
    model = tiny_tokenizer(kind)
    x = squares(4, seed=1)
    with torch.no_grad():
        recon, qout = model(x)
    tokens = model.encode(x)
    for a, b in zip(tokens, qout.indices):
        assert torch.equal(a, b)
    assert torch.equal(model.quantizer.indices_to_latent(tokens), qout.z_q)
    images = model.decode(tokens)
    assert images.dtype == torch.float32 and images.shape == x.shape
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    torch.testing.assert_close(images, recon.clamp(0, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_encode_does_not_change_the_model(kind):
    model = tiny_tokenizer(kind).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.encode(squares(8, seed=2))
    assert model.training  # mode restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_gradients_reach_the_encoder_through_the_quantizer(kind):
    model = tiny_tokenizer(kind).train()
    x = squares(8, seed=3)
    recon, qout = model(x)
    F.l1_loss(recon, x).backward()  # reconstruction alone: only the straight-through path
    for p in (model.encoder.conv_in.weight, model.encoder.conv_out.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_quantizer_output_fields(kind):
    model = tiny_tokenizer(kind).train()
    recon, qout = model(squares(8, seed=4))
    assert qout.z_q.shape == (8, 8, 8, 8)
    assert qout.loss.ndim == 0 and torch.isfinite(qout.loss)
    assert 0 < float(qout.stats["usage"]) <= 1
    assert 1 <= float(qout.stats["perplexity"]) <= model.spec.codebook_size
    if kind == "msvq":
        for s in model.spec.scales:
            assert f"usage/{s}x{s}" in qout.stats and f"perplexity/{s}x{s}" in qout.stats


@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_save_and_load_give_identical_outputs(kind, tmp_path):
    model = tiny_tokenizer(kind)
    x = squares(4, seed=5)
    path = tmp_path / "tok"
    model.save_pretrained(path)
    model.save_pretrained(path)  # overwriting an existing checkpoint works
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name != "tok"]  # no temp dirs left behind
    loaded = VQTokenizer.from_pretrained(path)
    assert loaded.config == model.config and loaded.spec == model.spec
    tokens = model.encode(x)
    for a, b in zip(tokens, loaded.encode(x)):
        assert torch.equal(a, b)
    assert torch.equal(model.decode(tokens), loaded.decode(tokens))
    assert read_spec(path) == model.spec


@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_forward_and_decode_are_finite_float32(kind, dtype):
    model = tiny_tokenizer(kind).train()
    x = squares(4, seed=6)
    with torch.autocast("cpu", dtype=dtype):
        recon, qout = model(x)
        images = model.decode(model.encode(x))
    for out in (recon, images):
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.isfinite(qout.loss)


@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_short_training_lowers_reconstruction_loss(kind):
    torch.manual_seed(0)
    model = VQTokenizer(tiny_config(kind))
    loss_fn = TokenizerLoss(LossConfig(perceptual_weight=0.0, disc_weight=0.0))
    disc = PatchDiscriminator(3, 8, 2)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    data, val = squares(256, seed=10), squares(32, seed=11)

    def val_l1() -> float:
        return float(F.l1_loss(model.decode(model.encode(val)), val))

    before = val_l1()
    g = torch.Generator().manual_seed(0)
    for step in range(200):
        loss, _, logs = loss_fn(data[torch.randint(0, 256, (16,), generator=g)], model, disc, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = val_l1()
    assert after < 0.6 * before, (kind, before, after)


# ----------------------------------------------------------------------------- wrong input

def test_wrong_images_raise_with_the_fix():
    model = tiny_tokenizer("vq")
    cases = [
        (torch.rand(2, 1, 16, 16), "x.repeat(1, 3, 1, 1)"),
        (torch.rand(2, 3, 15, 15), "not divisible"),
        (torch.rand(2, 3, 32, 32), "configured for 16x16"),
        (torch.rand(3, 16, 16), "unsqueeze(0)"),
        ((torch.rand(2, 3, 16, 16) * 255).to(torch.uint8), "float() / 255"),
        (torch.rand(2, 3, 16, 16) * 2 - 1, "(x + 1) / 2"),
    ]
    for images, fix in cases:
        for call in (model.encode, model):
            with pytest.raises(ValueError, match=re.escape(fix)):
                call(images)


@pytest.mark.parametrize("kind", ["vq", "msvq"])
def test_wrong_tokens_raise_with_the_fix(kind):
    model = tiny_tokenizer(kind)
    good = model.encode(squares(2))
    v = model.spec.codebook_size
    with pytest.raises(ValueError, match="outside"):
        model.decode([t.clone().fill_(v) for t in good])
    with pytest.raises(ValueError, match="outside"):
        model.decode([t.clone().fill_(-1) for t in good])
    with pytest.raises(ValueError, match="expected .* token maps"):
        model.decode(good[:-1] if len(good) > 1 else good + good)
    with pytest.raises(ValueError, match="integer tensor"):
        model.decode([t.float() for t in good])
    with pytest.raises(ValueError, match="has shape"):
        model.decode(good[:-1] + [good[-1][:, :-1, :-1]])  # wrong map size
    with pytest.raises(ValueError, match="one batch size"):
        model.decode([good[0][:1]] + good[1:] if len(good) > 1 else [good[0][:, :, :, None]])
    with pytest.raises(ValueError, match="list of"):
        model.decode(good[-1])


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="not divisible"):
        TokenizerConfig(image_size=30, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="last scale must be the full token map 8"):
        TokenizerConfig(image_size=32, quantizer="msvq", scales=(1, 2, 4))
    with pytest.raises(ValueError, match="strictly increasing"):
        TokenizerConfig(image_size=32, quantizer="msvq", scales=(1, 4, 2, 8))
    with pytest.raises(ValueError, match="unknown quantizer"):
        TokenizerConfig(quantizer="no-such-kind")
    with pytest.raises(ValueError, match="learnable_codebook=False"):
        TokenizerConfig(use_cosine_sim=True, learnable_codebook=True)
    with pytest.raises(ValueError, match="only applies to quantizer='msvq'"):
        TokenizerConfig(quantizer="vq", scales=(1, 2, 8))
    with pytest.raises(ValueError, match="unknown TokenizerConfig fields"):
        TokenizerConfig.from_dict({"image_size": 32, "bogus": 1})
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        get_preset("nope")


def test_checkpoint_that_does_not_fit_the_config_names_the_keys(tmp_path):
    tiny_tokenizer("vq").save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match=r"mis-shaped keys .*quantizer\.vq\._codebook\.embed"):
        VQTokenizer.from_pretrained(tmp_path / "tok", config=tiny_config("vq", codebook_size=32))
    with pytest.raises(ValueError, match=r"missing keys .*quantizer\.phis\.0\.conv\.weight"):
        VQTokenizer.from_pretrained(tmp_path / "tok", config=tiny_config("msvq"))
    with pytest.raises(ValueError, match=r"missing keys .*fsq\.project_in.*unexpected keys .*_codebook"):
        VQTokenizer.from_pretrained(tmp_path / "tok", config=tiny_config("fsq"))
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        VQTokenizer.from_pretrained(tmp_path / "nothing-here")


# ----------------------------------------------------------------------------- multi-scale VQ (VAR)

def smooth_latents(n: int, dim: int = 8, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.randn(n, dim, 3, 3, generator=g), size=(size, size), mode="bicubic")
    return coarse + 0.3 * torch.randn(n, dim, size, size, generator=g)


def test_msvq_f_hat_is_the_sum_of_scale_contributions_and_matches_var():
    torch.manual_seed(0)
    q = MultiScaleVQ(8, 64, [1, 2, 3, 4, 6, 8], threshold_ema_dead_code=0)
    f = smooth_latents(16)
    q(f)  # k-means init + one EMA step
    with torch.no_grad():
        for phi in q.phis:  # a non-trivial phi, so its application is tested too
            phi.conv.weight.add_(0.05 * torch.randn_like(phi.conv.weight))
    q.eval()
    with torch.no_grad():
        out = q(f)
        contributions = [q.upsample_and_refine(q.lookup(ids), k) for k, ids in enumerate(out.indices)]
        torch.testing.assert_close(out.z_q, sum(contributions))
        # VAR's Algorithm 1 written out with plain torch ops
        codes, rest, f_hat = q.vq.codebook, f.clone(), torch.zeros_like(f)
        for k, s in enumerate(q.scales):
            rest_k = F.interpolate(rest, size=(s, s), mode="area") if s != 8 else rest
            d = torch.cdist(rest_k.permute(0, 2, 3, 1).reshape(-1, 8), codes)
            ids = d.argmin(dim=1).view(-1, s, s)
            assert torch.equal(ids, out.indices[k])
            h = codes[ids].permute(0, 3, 1, 2)
            h = F.interpolate(h, size=(8, 8), mode="bicubic") if s != 8 else h
            phi = q.phis[q.phi_of_scale[k]]
            h = 0.5 * h + 0.5 * phi.conv(h)
            f_hat, rest = f_hat + h, rest - h
        torch.testing.assert_close(out.z_q, f_hat, rtol=1e-5, atol=1e-5)


def test_msvq_residual_shrinks_scale_by_scale():
    # k-means-initialised codebook, untrained (identity-initialised) phi: each scale removes part of
    # what is left, so the residual norm falls at every scale, to well under half at the end.
    for seed in range(3):
        torch.manual_seed(seed)
        q = MultiScaleVQ(8, 64, [1, 2, 3, 4, 6, 8], threshold_ema_dead_code=0)
        f = smooth_latents(16, seed=seed)
        q(f)
        q.eval()
        with torch.no_grad():
            out = q(f)
            rest, norms = f.clone(), [float(f.norm())]
            for k, ids in enumerate(out.indices):
                rest = rest - q.upsample_and_refine(q.lookup(ids), k)
                norms.append(float(rest.norm()))
        assert all(b < a for a, b in zip(norms, norms[1:])), norms
        assert norms[-1] < 0.5 * norms[0], norms


def test_msvq_kmeans_init_uses_every_scale():
    torch.manual_seed(0)
    q = MultiScaleVQ(8, 256, [1, 2, 4, 8], threshold_ema_dead_code=0)
    q.train()
    q(smooth_latents(4))  # 4 vectors at 1x1: a first-scale-only init would give <= 4 distinct codes
    assert torch.unique(q.vq.codebook, dim=0).shape[0] > 64


def test_msvq_next_scale_inputs_for_var():
    torch.manual_seed(0)
    q = MultiScaleVQ(8, 64, [1, 2, 4, 8]).eval()
    with torch.no_grad():
        f = smooth_latents(2)
        ids = q(f).indices
        f_hat = torch.zeros_like(f)
        for k in range(len(ids) - 1):
            f_hat = f_hat + q.upsample_and_refine(q.lookup(ids[k]), k)
            nxt = q.downsample(f_hat, k + 1)
            assert nxt.shape == (2, 8, q.scales[k + 1], q.scales[k + 1])
        f_hat = f_hat + q.upsample_and_refine(q.lookup(ids[-1]), len(ids) - 1)
        torch.testing.assert_close(f_hat, q.indices_to_latent(ids))


def test_phi_selection_follows_var():
    # VAR's PhiPartiallyShared for its 10 scales and 4 phis
    assert phi_indices(10, 4) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert phi_indices(6, 4) == [0, 0, 1, 2, 3, 3]
    assert phi_indices(3, 1) == [0, 0, 0]


# ----------------------------------------------------------------------------- presets and spec

def test_presets_and_spec():
    var = PRESETS["imagenet-256-var"].spec
    assert var.scales == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) and var.codebook_size == 4096
    assert var.tokens_per_image == 680 and var.factor == 16
    assert PRESETS["imagenet-256"].spec.scales == (16,)
    assert PRESETS["shapes-tiny"].spec == TokenizerSpec(1024, (8,), 32, 3, 4)
    assert PRESETS["shapes-tiny-msvq"].spec.scales == (1, 2, 3, 4, 6, 8)
    assert set(LOSS_PRESETS) == set(PRESETS)
    for cfg in PRESETS.values():
        assert TokenizerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        assert TokenizerSpec.from_dict(json.loads(json.dumps(cfg.spec.to_dict()))) == cfg.spec
    model = VQTokenizer(PRESETS["shapes-tiny"])
    assert [t.shape for t in model.encode(torch.rand(2, 3, 32, 32))] == [(2, 8, 8)]


# ----------------------------------------------------------------------------- losses

def test_codebook_stats_closed_form():
    usage, perplexity = codebook_stats(torch.arange(8).repeat(4), 16)
    assert float(usage) == 0.5 and abs(float(perplexity) - 8) < 1e-4
    usage, perplexity = codebook_stats(torch.zeros(10, dtype=torch.long), 16)
    assert abs(float(usage) - 1 / 16) < 1e-6 and abs(float(perplexity) - 1) < 1e-4


def test_hinge_losses_closed_form():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert float(hinge_d_loss(real, fake)) == pytest.approx(0.5 * (0.25 + 0.5))
    assert float(hinge_g_loss(fake)) == pytest.approx(1.0)


def test_adaptive_weight_is_the_gradient_norm_ratio_clamped():
    w = torch.randn(4, requires_grad=True)
    rec, gan = (3 * w).sum(), (w * 0.5).sum()
    assert float(adaptive_weight(rec, gan, w)) == pytest.approx(6.0, rel=1e-3)
    tiny = (w * 1e-9).sum()
    assert float(adaptive_weight(rec, tiny, w, max_weight=100.0)) == 100.0


def _gan_setup():
    model = tiny_tokenizer("vq").train()
    disc = PatchDiscriminator(3, 8, 2)
    loss_fn = TokenizerLoss(LossConfig(perceptual_weight=0.0, disc_start=5, disc_weight=0.8))
    return model, disc, loss_fn, squares(8, seed=7)


def test_adversarial_term_puts_no_gradient_into_the_discriminator():
    model, disc, loss_fn, x = _gan_setup()
    loss_ae, loss_d, logs = loss_fn(x, model, disc, step=10)
    assert loss_fn.gan_active(10) and logs["gan/d_weight"] > 0 and "loss/g" in logs
    loss_ae.backward()
    assert all(p.grad is None for p in disc.parameters())
    assert model.decoder.conv_out.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    loss_d.backward()  # the discriminator loss sees detached reconstructions
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in disc.parameters())
    # detached 0-dim tensors left on the device (no host sync per step; the trainer reads them per log interval)
    assert all(torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad for v in logs.values())


def test_gan_is_off_before_disc_start():
    model, disc, loss_fn, x = _gan_setup()
    loss_ae, loss_d, logs = loss_fn(x, model, disc, step=4)
    assert not loss_fn.gan_active(4) and "loss/g" not in logs
    assert float(loss_d) == 0.0
    loss_d.backward()
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in disc.parameters())


def test_perceptual_loss_from_local_weights_only(tmp_path):
    from safetensors.torch import save_file

    from tokgen.tokenizers_vq.perceptual import VGG16Features

    with pytest.warns(UserWarning, match="perceptual_weights="):
        assert TokenizerLoss(LossConfig()).perceptual is None
    with pytest.raises(FileNotFoundError):
        TokenizerLoss(LossConfig(perceptual_weights=str(tmp_path / "missing.pth")))
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in VGG16Features().state_dict().items()}  # features.N.*
    save_file(state, tmp_path / "vgg16.safetensors")
    bad = dict(state)
    bad.pop("features.28.weight")
    save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=r"features\.28\.weight"):
        TokenizerLoss(LossConfig(perceptual_weights=str(tmp_path / "bad.safetensors")))

    loss_fn = TokenizerLoss(LossConfig(perceptual_weights=str(tmp_path / "vgg16.safetensors")))
    lpips = loss_fn.perceptual
    assert all(not p.requires_grad for p in lpips.parameters())
    x, y = squares(2, size=32, cell=8), squares(2, size=32, cell=8, seed=1)
    assert torch.allclose(lpips(x, x), torch.zeros(2), atol=1e-6)
    y.requires_grad_(True)
    d = lpips(x, y)
    assert (d > 0).all()
    d.sum().backward()
    assert y.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- options the published tokenizers need

@pytest.mark.parametrize("preset,count,digest", [
    # sha256 of "key shape" lines of the state dict, recorded before quant_conv / norm_groups / embed_dim existed
    ("shapes-tiny", 136, "c658593da42a0f1a"),
    ("shapes-tiny-msvq", 144, "7f8b7034bbcea03d"),
    ("imagenet-256-var", 322, "a121a8454e9350d3"),
])
def test_builtin_presets_keep_their_state_dict_keys_and_shapes(preset, count, digest):
    """The options added for the published tokenizers default to off: existing checkpoints load."""
    import hashlib

    with torch.device("meta"):
        state = VQTokenizer(get_preset(preset)).state_dict()
    text = "\n".join(f"{k} {tuple(v.shape)}" for k, v in state.items())
    assert (len(state), hashlib.sha256(text.encode()).hexdigest()[:16]) == (count, digest)


def test_quant_conv_embed_dim_and_norm_groups(tmp_path):
    """A 3x3 quant_conv from z_channels 16 to an 8-dim quantizer latent, 8-group norms: the
    quantizer sees latent_dim channels, the decoder gets z_channels back, and the folder round-trips."""
    torch.manual_seed(0)
    config = get_preset("shapes-tiny-msvq", scales=(1, 2, 4), base_width=16, channel_mults=(1, 2, 2, 2),
                        z_channels=16, quant_conv_kernel=3, embed_dim=8, norm_groups=8, kmeans_init=False)
    tok = VQTokenizer(config).eval()
    assert config.latent_dim == 8 and tok.quantizer.dim == 8
    assert tok.quant_conv.weight.shape == (8, 16, 3, 3) and tok.post_quant_conv.weight.shape == (16, 8, 3, 3)
    assert all(m.num_groups == 8 for m in tok.modules() if isinstance(m, torch.nn.GroupNorm))
    images = squares(2, size=32, cell=8)
    assert tok.latent(images).shape == (2, 8, 4, 4)
    tokens = tok.encode(images)
    recon, _ = tok(images)
    assert (recon.clamp(0, 1) - tok.decode(tokens)).abs().max() < 1e-5   # the two f_hat paths round apart
    tok.save_pretrained(tmp_path / "tok")
    again = VQTokenizer.from_pretrained(tmp_path / "tok")
    assert again.config == config and all(torch.equal(a, b) for a, b in zip(tokens, again.encode(images)))


@pytest.mark.parametrize("fields,needle", [
    (dict(embed_dim=8), "only a quant_conv maps one to the other"),
    (dict(quant_conv_kernel=2), "quant_conv_kernel must be 0"),
    (dict(norm_groups=5), "norm_groups 5 must divide every level's width"),
])
def test_quant_conv_and_norm_group_settings_are_checked(fields, needle):
    with pytest.raises(ValueError, match=needle):
        get_preset("shapes-tiny", **fields)
