"""VAR next-scale prediction on a real (tiny) tokenizers_vq MultiScaleVQ: scale k sees exactly
the scales <= k, cached sampling equals a slow uncached reference, guidance grows with the scale,
known tokens are kept at every scale, the quantizer stays out of the checkpoint and must be
attached again, and a tiny model that learns a toy conditional distribution."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tokgen.generators import (VARGenerator, build_generator, condition_kind, known_region, load_generator, sample,
                               train_text_tokenizer)
from tokgen.generators.sampling import cfg_mix
from tokgen.tokenizers_vq import MultiScaleVQ

V = 16
SCALES = (1, 2, 4)
C = 8


@pytest.fixture(scope="module")
def text_tokenizer():
    return train_text_tokenizer(["a red circle", "a blue square", "a green triangle at the top"] * 10, vocab_size=280)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def quantizer(scales=SCALES, dim=C, seed=0) -> MultiScaleVQ:
    """A real multi-scale quantizer with a random codebook and non-trivial phi convs."""
    torch.manual_seed(seed)
    q = MultiScaleVQ(dim, V, list(scales), phi_count=2, kmeans_init=False, threshold_ema_dead_code=0)
    with torch.no_grad():
        for phi in q.phis:
            phi.conv.weight.add_(torch.randn_like(phi.conv.weight) * 0.2)
    return q.eval()


def spec(scales=SCALES):
    return {"codebook_size": V, "scales": list(scales), "image_size": 4 * max(scales), "channels": 3}


def make(condition="class", scales=SCALES, seed=0, q=None, text_tokenizer=None, perturb=True, **kw) -> VARGenerator:
    torch.manual_seed(seed)
    config = {**dict(width=32, depth=2, heads=4, condition=condition, num_classes=3 if condition_kind(condition).uses_labels else 0,
                     text_length=8, text_depth=1), **kw}
    model = build_generator("var", spec(scales), config, text_tokenizer=text_tokenizer)
    if model.config.scale_inputs == "tokenizer":
        model.attach_scale_inputs(q if q is not None else quantizer(scales))
    if perturb:
        with torch.no_grad():    # away from the init (adaLN-Zero would make the condition invisible)
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def cond_of(model, batch=4):
    if model.conditioning.uses_labels:
        return torch.tensor([0, 1, 2, -1])[:batch]
    if model.conditioning.uses_captions:
        return model.make_condition(captions=["a red circle", "a blue square", "", "a green triangle"][:batch])
    return None


def random_tokens(batch=4, scales=SCALES, seed=1):
    g = seeded(seed)
    return [torch.randint(0, V, (batch, s, s), generator=g) for s in scales]


# ---------------------------------------------------------------------- attention

def test_block_mask_lets_scale_k_see_exactly_scales_up_to_k():
    model = make(perturb=False)
    level = torch.cat([torch.full((s * s,), k) for k, s in enumerate(SCALES)])
    assert torch.equal(model.attn_mask, level[:, None] >= level[None, :])


@pytest.mark.parametrize("condition", ["class", "none"])
def test_tokens_of_scale_k_change_only_the_logits_of_finer_scales(condition):
    """Scale k's tokens enter as the input of scales > k: the logits of scales <= k ignore them."""
    model = make(condition)
    tokens, cond = random_tokens(), cond_of(model)
    base = model.logits(tokens, cond)
    bounds = [0, 1, 5, 21]
    for k in range(len(SCALES)):
        changed = [t.clone() for t in tokens]
        changed[k] = (changed[k] + 1) % V
        diff = (model.logits(changed, cond) - base).abs().amax(dim=(0, 2))     # (N,)
        assert diff[: bounds[k + 1]].max() == 0                                  # this scale and coarser: untouched
        if k + 1 < len(SCALES):
            assert diff[bounds[k + 1]:].min() > 0                                 # every finer position sees it


# ---------------------------------------------------------------------- sampling

def reference_sample(model, q, cond, batch, *, cfg_scale=1.0, generator, known=None, **filters):
    """Slow sampler: for every scale, rebuild f_hat from the quantizer and run the whole prefix
    through the core with the block-causal mask (no cache), conditional and null rows as
    separate passes."""
    K = len(model.scales)
    sizes = [s * s for s in model.scales]
    ends = [sum(sizes[: k + 1]) for k in range(K)]
    c = model._condition(cond)
    states = [model._condition_state(c, batch, None), model._condition_state(None, batch, None)]
    pos, maps = model.pos(), []
    for k, s in enumerate(model.scales):
        f_hat, inputs = 0, []
        for j, ids in enumerate(maps):                                          # inputs of scales 1..k from scratch
            f_hat = f_hat + q.upsample_and_refine(q.lookup(ids), j)
            inputs.append(q.downsample(f_hat, j + 1).flatten(2).transpose(1, 2))
        logits = []
        for state in states[: 2 if cfg_scale != 1.0 else 1]:
            x = model._start(state, batch)
            if inputs:
                x = torch.cat([x, model.input_proj(torch.cat(inputs, 1).to(x.dtype))], dim=1)
            n = ends[k]
            h = model.core(x + pos[:n], mask=model.attn_mask[:n, :n], cond=state.vector, context=state.context,
                           context_mask=state.context_mask)
            logits.append(model.head(h[:, n - sizes[k]:]))
        if cfg_scale != 1.0:
            ratio = k / (K - 1)
            logits = [cfg_mix(logits[0], logits[1], 1 + (cfg_scale - 1) * ratio)]
        ids, _ = sample(logits[0], generator=generator, **filters)
        if known is not None:
            ids = torch.where(known["mask"][k].flatten(1), known["tokens"][k].flatten(1), ids)
        maps.append(ids.view(batch, s, s))
    return maps


@pytest.mark.parametrize("condition,cfg_scale,filters", [
    ("class", 1.0, {}),
    ("class", 3.0, dict(top_k=5, top_p=0.9, temperature=0.8)),
    ("none", 1.0, dict(top_k=3)),
    ("text", 2.5, {}),
])
def test_kv_cache_sampling_equals_uncached_reference(condition, cfg_scale, filters, text_tokenizer):
    q = quantizer()
    model = make(condition, q=q, text_tokenizer=text_tokenizer if condition_kind(condition).uses_captions else None)
    cond = cond_of(model)
    with torch.no_grad():
        ref = reference_sample(model, q, cond, 4, cfg_scale=cfg_scale, generator=seeded(0), **filters)
    out = model.generate(cond, num_samples=4, cfg_scale=cfg_scale, generator=seeded(0), **filters)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    assert all(torch.equal(a, b) for a, b in zip(out, model.generate(cond, num_samples=4, cfg_scale=cfg_scale,
                                                                       generator=seeded(0), **filters)))
    assert any(not torch.equal(a, b) for a, b in zip(out, model.generate(cond, num_samples=4, cfg_scale=cfg_scale,
                                                                           generator=seeded(1), **filters)))


def test_guidance_grows_linearly_from_the_first_scale():
    """Linear: scale 0 is sampled with ratio 0 (no guidance), so its tokens equal unguided ones."""
    model = make("class")
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    plain = model.generate(labels, generator=seeded(0))
    linear = model.generate(labels, cfg_scale=8.0, generator=seeded(0))
    constant = build_generator("var", spec(), {**model.config.to_dict(), "guidance_schedule": "constant"})
    constant.load_state_dict(model.state_dict())
    constant.attach_scale_inputs(model._attached[0]).eval()
    const = constant.generate(labels, cfg_scale=8.0, generator=seeded(0))
    assert torch.equal(linear[0], plain[0])
    assert not torch.equal(const[0], plain[0]) or not torch.equal(const[1], linear[1])
    q = model._attached[0]
    ref = reference_sample(model, q, labels, 6, cfg_scale=8.0, generator=seeded(0))
    assert all(torch.equal(a, b) for a, b in zip(linear, ref))


def test_known_tokens_are_kept_at_every_scale_and_feed_the_next_scales():
    q = quantizer()
    model = make("class", q=q)
    given = random_tokens(seed=7)
    region = torch.zeros(4, 4, 4, dtype=torch.bool)
    region[:, :, :2] = True                                                     # left half known: outpaint the right
    known = known_region(given, region)
    assert [m.float().mean().item() for m in known["mask"]] == [0.0, 0.5, 0.5]   # 1x1 covers unknown pixels
    labels = torch.tensor([0, 1, 2, 0])
    out = model.generate(labels, known=known, generator=seeded(0))
    for o, g, m in zip(out, given, known["mask"]):
        assert torch.equal(o[m], g[m])
    ref = reference_sample(model, q, labels, 4, generator=seeded(0), known=known)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    everything = known_region(given, torch.ones(4, 4, 4, dtype=torch.bool))
    assert all(torch.equal(a, b) for a, b in zip(model.generate(labels, known=everything), given))


def test_nll_bits_is_the_teacher_forced_cross_entropy():
    model = make("class", cond_dropout=0.0)
    tokens, labels = random_tokens(), torch.tensor([0, 1, 2, 0])
    bits = model.nll_bits(tokens, labels)
    loss, logs = model.loss(tokens, labels)
    assert bits.shape == (4,) and math.isclose(bits.mean().item(), logs["bits_per_token"], rel_tol=1e-5)
    logp = model.logits(tokens, labels).log_softmax(-1)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(4, 21))


# ---------------------------------------------------------------------- the scale interface and checkpoints

def test_the_quantizer_stays_out_of_the_checkpoint_and_must_be_attached_again(tmp_path):
    q = quantizer()
    model = make("class", q=q)
    assert model.config.latent_dim == C                                          # read from the quantizer
    model.save_pretrained(tmp_path / "ckpt")
    keys = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert not any("phis" in k or "vq" in k or "codebook" in k for k in keys)
    assert set(keys) == set(model.state_dict())
    loaded = load_generator(tmp_path / "ckpt")
    tokens, labels = random_tokens(), torch.tensor([0, 1, 2, 0])
    for call in (lambda: loaded.logits(tokens, labels), lambda: loaded.generate(labels),
                 lambda: loaded.loss(tokens, labels)):
        with pytest.raises(ValueError, match="attach_tokenizer"):
            call()
    loaded.attach_tokenizer(SimpleNamespace(quantizer=q, spec=spec()))            # what the trainer's hook passes
    assert torch.equal(loaded.logits(tokens, labels), model.logits(tokens, labels))
    draw = lambda m: m.generate(labels, cfg_scale=2.0, generator=seeded(3))
    assert all(torch.equal(a, b) for a, b in zip(draw(loaded), draw(model)))


def test_attach_checks_the_quantizer():
    model = build_generator("var", spec(), dict(width=32, depth=2, heads=4, condition="none"))
    assert model.input_proj is None                                               # sized at the first attach
    with pytest.raises(ValueError, match="scales"):
        model.attach_scale_inputs(quantizer(scales=(1, 2, 3, 4)))
    with pytest.raises(ValueError, match="lacks"):
        model.attach_scale_inputs(object())
    with pytest.raises(ValueError, match="spec"):
        model.attach_tokenizer(SimpleNamespace(quantizer=quantizer(), spec=spec((2, 4))))
    model.attach_scale_inputs(quantizer())
    assert model.input_proj.in_features == C
    with pytest.raises(ValueError, match="channels"):
        model.attach_scale_inputs(quantizer(dim=4))
    learned = build_generator("var", spec(), dict(width=32, depth=2, heads=4, condition="none", scale_inputs="learned"))
    with pytest.raises(ValueError, match="learned"):
        learned.attach_scale_inputs(quantizer())
    assert learned.attach_tokenizer(SimpleNamespace(quantizer=quantizer(), spec=spec())) is learned   # hook: no-op
    assert learned.generate(num_samples=2)[2].shape == (2, 4, 4)
    with pytest.raises(ValueError, match="one step per scale"):
        model.generate(num_samples=2, steps=12)
    with pytest.raises(ValueError, match="scale_inputs"):
        build_generator("var", spec(), dict(condition="none", scale_inputs="pixels"))


def test_training_does_not_touch_the_quantizer():
    q = quantizer()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    model = make("class", q=q, perturb=False).train()
    loss, logs = model.loss(random_tokens(), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert all(p.grad is None for p in q.parameters())
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in before.items())
    assert model.input_proj.weight.grad is not None and set(logs) >= {"loss", "bits_per_token"}


# ---------------------------------------------------------------------- learning

def test_tiny_var_learns_a_class_conditional_distribution():
    """Each of 3 classes is a 50/50 mixture of two fixed multi-scale token pyramids."""
    g = seeded(0)
    patterns = [torch.randint(0, V, (3, 2, s, s), generator=g) for s in SCALES]
    model = make("class", perturb=False, width=64)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    data, losses = seeded(1), []
    for _ in range(150):
        labels = torch.randint(0, 3, (32,), generator=data)
        which = torch.randint(0, 2, (32,), generator=data)
        loss, _ = model.loss([p[labels, which] for p in patterns], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    labels = torch.arange(3).repeat_interleave(20)
    out = model.generate(labels, generator=seeded(2))
    match = torch.stack([torch.stack([(o == p[labels, w]).flatten(1).all(1) for o, p in zip(out, patterns)]).all(0)
                         for w in range(2)], dim=1)                               # (60, 2): whole pyramid equal
    assert losses[0] > 0.9 * math.log(V) and sum(losses[-20:]) / 20 < 0.15
    assert match.any(1).float().mean() >= 0.75                                    # samples follow the label
    assert match[:, 0].sum() >= 8 and match[:, 1].sum() >= 8                      # both modes
