"""The ImageNet presets follow their papers' recipes (LlamaGen's vq_train.py; VAR), the perceptual
loss they require is found in the torch hub cache or refused with a message that says how to fix
it, the k-means init sees as many vectors as asked for, and the tokenizer's forward has no graph
break of its own."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from tokgen.tokenizers_vq import LossConfig, TokenizerLoss, VQTokenizer, build_discriminator, get_tokenizer_preset
from tokgen.tokenizers_vq import perceptual
from tokgen.tokenizers_vq.losses import resolve_perceptual_weights
from tokgen.tokenizers_vq.perceptual import PerceptualWeightsMissing, VGG16Features
from tokgen.tokenizers_vq.quantizers import VQ, MultiScaleVQ
from tokgen.tokenizers_vq.quantizers import kmeans as kmeans_module

# ------------------------------------------------------------------------- the recipe, as a table

# LlamaGen @ce98ec4 tokenizer/tokenizer_image/vq_train.py (line) / vq_loss.py defaults.
LLAMAGEN_LOSS = {
    "reconstruction": "l2",          # vq_train.py:290
    "reconstruction_weight": 1.0,    # :289
    "perceptual_weight": 1.0,        # :291
    "require_perceptual": True,
    "quantizer_weight": 1.0,         # :286 codebook weight
    "disc_weight": 0.5,              # :292
    "disc_start": 20_000,            # :293
    "adaptive_disc_weight": False,   # vq_loss.py:51
    "disc_loss_weight": 0.5,         # vq_loss.py:160
    "disc_channels": 64,             # vq_loss.py:50
    "disc_layers": 3,                # vq_loss.py:51
}
LLAMAGEN_TRAINING = {
    "batch_size": 16,                # x 8 GPUs = :308 global 128
    "lr": 1e-4, "lr_schedule": "constant", "warmup_steps": 0,   # :303
    "beta1": 0.9, "beta2": 0.95,     # :305-306, :110-111 Adam
    "weight_decay": 0.0,             # :304 parsed, unused by :110
    "grad_clip": 1.0,                # :307
    "ema_decay": 0.0,                # :282 --ema off
    "max_steps": 400_000,            # :302 40 epochs at 128
    "save_every": 5000, "log_every": 100,                     # :312, :311
    "augment": "crop_flip",          # :114-116
}
LLAMAGEN_CODEBOOK = {"codebook_size": 16384, "codebook_dim": 8, "use_cosine_sim": True,   # :283-285
                     "commitment_weight": 0.25, "kmeans_init": True, "kmeans_init_vectors": 20 * 16384}


@pytest.mark.parametrize("name", ["imagenet-256", "imagenet-256-var"])
def test_imagenet_presets_follow_the_recipe(name):
    preset = get_tokenizer_preset(name)
    assert {k: getattr(preset.loss, k) for k in LLAMAGEN_LOSS} == LLAMAGEN_LOSS
    assert {k: preset.training[k] for k in LLAMAGEN_TRAINING} == LLAMAGEN_TRAINING
    model = preset.model
    if name == "imagenet-256":
        assert {k: getattr(model, k) for k in LLAMAGEN_CODEBOOK} == LLAMAGEN_CODEBOOK
        assert (model.base_width, model.channel_mults, model.num_res_blocks, model.z_channels) == \
            (128, (1, 1, 2, 2, 4), 2, 256)                       # LlamaGen vq_model.py VQ-16
    else:  # VAR vqvae.py: ch 160, z 32, V 4096, 10 scales; k-means on 20 vectors per code
        assert (model.base_width, model.z_channels, model.codebook_size, model.kmeans_init_vectors) == \
            (160, 32, 4096, 20 * 4096)
        assert model.scales == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def test_imagenet_optimizer_and_augmentation_reach_the_job():
    from tokgen.train.jobs.tokenizer import preset_dataset_options, preset_optim
    from tokgen.train.tasks.tokenizer import TokenizerOptimConfig

    assert preset_optim("imagenet-256") == TokenizerOptimConfig(beta1=0.9, beta2=0.95, weight_decay=0.0)
    assert preset_optim("shapes-tiny") == TokenizerOptimConfig()           # VQGAN's 0.5 / 0.9
    assert preset_dataset_options("imagenet-256", "folder:/data/imagenet") == {"augment": "crop_flip"}
    assert preset_dataset_options("imagenet-256", "shapes") == {}
    assert preset_dataset_options("shapes-tiny", "folder:/x") == {}


# ------------------------------------------------------------------------- perceptual weights

@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache (and home), no environment variables, no lpips package."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(perceptual.VGG16_ENV, raising=False)
    monkeypatch.delenv(perceptual.LPIPS_ENV, raising=False)
    monkeypatch.setattr(perceptual, "lpips_package_file", lambda: None)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


def test_imagenet_preset_refuses_without_perceptual_weights(hub):
    loss = get_tokenizer_preset("imagenet-256").loss
    with pytest.raises(PerceptualWeightsMissing) as info:
        resolve_perceptual_weights(loss)
    message = str(info.value)
    for needed in (str(hub / "vgg16-397923af.pth"), str(hub / "vgg.pth"), "TOKGEN_VGG16_WEIGHTS",
                   "--loss-set perceptual_weights=PATH", "--loss-set perceptual_weight=0",
                   "https://download.pytorch.org/models/vgg16-397923af.pth"):
        assert needed in message, needed
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(PerceptualWeightsMissing):
        TokenizerLoss(loss)
    # opting out explicitly: no perceptual network, no error, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TokenizerLoss(dataclasses.replace(loss, perceptual_weight=0.0)).perceptual is None


def test_training_job_refuses_before_reading_data(hub):
    from tokgen.train.jobs.tokenizer import TokenizerRunConfig, train_tokenizer

    with pytest.raises(PerceptualWeightsMissing, match="perceptual_weight=0"):
        train_tokenizer(TokenizerRunConfig(preset="imagenet-256", dataset="folder:/no/such/folder"))


def test_shapes_presets_keep_perceptual_off_with_one_warning(hub):
    (hub / "vgg16-397923af.pth").write_bytes(b"")  # even with a file in the cache: not looked up
    with pytest.warns(UserWarning, match="perceptual_weights="):
        assert TokenizerLoss(get_tokenizer_preset("shapes-tiny").loss).perceptual is None


def test_lookup_finds_files_in_the_hub_cache_and_environment(hub, tmp_path, monkeypatch):
    assert perceptual.find_vgg16_weights()[0] is None
    (hub / "vgg16-397923af.pth").write_bytes(b"")
    (hub / "vgg.pth").write_bytes(b"")
    assert perceptual.find_vgg16_weights()[0] == hub / "vgg16-397923af.pth"
    assert perceptual.find_lpips_weights()[0] == hub / "vgg.pth"
    other = tmp_path / "elsewhere.pth"
    other.write_bytes(b"")
    monkeypatch.setenv(perceptual.VGG16_ENV, str(other))
    assert perceptual.find_vgg16_weights()[0] == other
    monkeypatch.setenv(perceptual.VGG16_ENV, str(tmp_path / "absent.pth"))
    path, looked = perceptual.find_vgg16_weights()
    assert path == hub / "vgg16-397923af.pth" and "absent.pth" in looked[0]


def test_imagenet_loss_loads_weights_found_in_the_hub_cache(hub):
    torch.manual_seed(0)
    torch.save(VGG16Features().state_dict(), hub / "vgg16-397923af.pth")   # random weights, VGG16's shapes
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lin, hub / "vgg.pth")
    loss = resolve_perceptual_weights(get_tokenizer_preset("imagenet-256").loss)
    assert (loss.perceptual_weights, loss.lpips_weights) == (str(hub / "vgg16-397923af.pth"), str(hub / "vgg.pth"))
    lpips = TokenizerLoss(loss).perceptual
    assert lpips is not None
    assert torch.equal(lpips.lin[:64], lin["lin0.model.1.weight"].reshape(-1))
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(lpips(x, x), torch.zeros(2), atol=1e-6)


# ------------------------------------------------------------------------- the GAN terms (LlamaGen)

def test_constant_disc_weight_and_scaled_discriminator_loss():
    from tokgen.tokenizers_vq import get_preset

    torch.manual_seed(0)
    model = VQTokenizer(get_preset("shapes-tiny", codebook_size=64)).eval()  # eval: no codebook update between calls
    config = LossConfig(perceptual_weight=0.0, disc_start=0, disc_weight=0.5, adaptive_disc_weight=False,
                        disc_loss_weight=0.5, disc_channels=8, disc_layers=2)
    disc = build_discriminator(config)
    x = torch.rand(4, 3, 32, 32)
    _, loss_d, logs = TokenizerLoss(config)(x, model, disc, step=1)
    assert float(logs["gan/d_weight"]) == 1.0                 # no adaptive lambda: disc_weight alone
    with torch.no_grad():
        logits = disc(torch.cat([x, model(x)[0]]))
    real, fake = logits.chunk(2)
    unweighted = 0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())
    assert torch.allclose(loss_d, 0.5 * unweighted, atol=1e-5)


# ------------------------------------------------------------------------- k-means over many vectors

def test_vq_kmeans_init_sees_the_required_vectors():
    torch.manual_seed(0)
    # 64 vectors per batch of 4 x 4x4: 16 batches; codebook_dim 4: a trained input projection
    q = VQ(8, 64, 4, codebook_dim=4, use_cosine_sim=True, kmeans_init_vectors=1000).train()
    codebook = q.vq._codebook
    for step in range(15):
        z = torch.randn(4, 8, 4, 4, requires_grad=True)
        out = q(z)
        assert torch.equal(out.z_q, z) and not bool(codebook.initted), step   # passed through, gathering
        (out.z_q.sum() + out.loss).backward()                 # the zero loss reaches every parameter (DDP)
        params = [p for p in q.parameters() if p.requires_grad]
        assert params and all(p.grad is not None and not p.grad.any() for p in params)
    assert q.kmeans.count == 15 * 64 and q.kmeans.seen == 0
    q.eval()(torch.randn(4, 8, 4, 4))                            # eval batches are not gathered
    assert q.kmeans.count == 15 * 64
    out = q.train()(torch.randn(4, 8, 4, 4))
    assert bool(codebook.initted) and q.kmeans.seen == 16 * 64 >= 1000
    assert not torch.equal(out.z_q, torch.zeros_like(out.z_q)) and codebook.embed.abs().sum() > 0
    assert q.kmeans.samples == []                            # the gathered vectors are freed

    assert torch.allclose(codebook.embed.norm(dim=-1), torch.ones(1, 64), atol=1e-4)  # cosine: unit codes
    fresh = VQ(8, 64, 4, codebook_dim=4, use_cosine_sim=True, kmeans_init_vectors=1000)
    assert fresh.kmeans.pending(fresh.vq._codebook)
    fresh.load_state_dict(q.state_dict())                    # a checkpoint of an initialised codebook
    assert not fresh.kmeans.pending(fresh.vq._codebook)


def test_msvq_kmeans_init_gathers_the_residual_pyramid():
    torch.manual_seed(0)
    q = MultiScaleVQ(8, 32, [1, 2, 4], kmeans_init_vectors=200).train()   # 2 x (1 + 4 + 16) = 42 per batch
    for _ in range(4):
        z = torch.randn(2, 8, 4, 4)
        out = q(z)
        assert torch.equal(out.z_q, z) and [i.shape for i in out.indices] == [(2, 1, 1), (2, 2, 2), (2, 4, 4)]
    q(torch.randn(2, 8, 4, 4))
    assert bool(q.vq._codebook.initted) and q.kmeans.seen == 5 * 42 >= 200


def test_chunked_kmeans_finds_the_clusters(monkeypatch):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 4, generator=g) * 10
    samples = (centers[:, None] + 0.01 * torch.randn(4, 200, 4, generator=g)).reshape(-1, 4)
    torch.manual_seed(1)
    whole, bins = kmeans_module.kmeans(samples, 16, 20)
    monkeypatch.setattr(kmeans_module, "CHUNK_ELEMENTS", 16 * 7)   # 7 rows per chunk
    torch.manual_seed(1)
    chunked, bins_chunked = kmeans_module.kmeans(samples, 16, 20)
    assert torch.allclose(whole, chunked, atol=1e-5) and torch.equal(bins, bins_chunked)
    assert bins.sum() == len(samples)
    # 16 codes on 4 tight, far-apart clusters: each code starts in one and stays there
    assert (torch.cdist(whole, centers).min(dim=1).values < 0.1).all()
    assert (torch.cdist(centers, whole).min(dim=1).values < 0.1).all()   # and every cluster has codes


def test_kmeans_init_vectors_needs_kmeans_init():
    from tokgen.tokenizers_vq import get_preset

    with pytest.raises(ValueError, match="kmeans_init_vectors"):
        get_preset("shapes-tiny", kmeans_init=False, kmeans_init_vectors=100)
    with pytest.raises(ValueError, match="kmeans_init_vectors"):
        get_preset("shapes-tiny", kmeans_init_vectors=-1)


# ------------------------------------------------------------------------- graph breaks

def _breaks(name: str):
    from tokgen.tokenizers_vq import get_preset

    torch.manual_seed(0)
    tok = VQTokenizer(get_preset(name)).train()
    x = torch.rand(4, 3, 32, 32)
    tok(x)  # the one-time k-means init
    torch._dynamo.reset()
    return torch._dynamo.explain(tok)(x)


@pytest.mark.slow
@pytest.mark.parametrize("name,most", [("shapes-tiny", 13), ("shapes-tiny-msvq", 37)])
def test_tokenizer_forward_has_no_graph_break_of_its_own(name, most):
    """Before: 17 (shapes-tiny) and 41 (msvq) breaks, from image checks (.item()), bincount and the
    codebook's init flag read every step; what is left is inside vector-quantize-pytorch
    (`if self.initted` in init_embed_, `if not torch.any(expired_codes)` in expire_codes_)."""
    explained = _breaks(name)
    assert explained.graph_break_count <= most
    ours = [r for r in explained.break_reasons
            if r.user_stack and "vector_quantize_pytorch" not in r.user_stack[-1].filename]
    assert not ours, [(r.reason.splitlines()[0], r.user_stack[-1].filename, r.user_stack[-1].lineno) for r in ours]
