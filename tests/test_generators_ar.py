"""The autoregressive family: no future leak, KV-cache sampling equals full recomputation (a
slow reference sampler below), guidance, exact likelihood, prefix completion, DALL-E's loss
weights, and a tiny model that learns a toy conditional distribution."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tokgen.generators import ARGenerator, build_generator, condition_kind, sample, train_text_tokenizer
from tokgen.generators.sampling import cfg_mix

V = 8


@pytest.fixture(scope="module")
def text_tokenizer():
    return train_text_tokenizer(["a red circle", "a blue square", "a green triangle at the top"] * 10, vocab_size=280)


def make(condition="class", scales=(3,), seed=0, text_tokenizer=None, dtype=torch.float64, **kw) -> ARGenerator:
    torch.manual_seed(seed)
    config = dict(width=32, depth=2, heads=4, condition=condition, num_classes=3 if condition_kind(condition).uses_labels else 0,
                  text_length=8, **kw)
    spec = {"codebook_size": V, "scales": list(scales), "image_size": 12, "channels": 3}
    model = build_generator("ar", spec, config, text_tokenizer=text_tokenizer)
    with torch.no_grad():    # a less uniform model than the init, so that samples depend on the inputs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.to(dtype).eval()


def cond_of(model, batch=4):
    if model.conditioning.uses_labels:
        return torch.tensor([0, 1, 2, -1])[:batch]
    if model.conditioning.uses_captions:
        return model.make_condition(captions=["a red circle", "a blue square", "", "a green triangle"][:batch])
    return None


def null_of(model, cond):
    if model.conditioning.uses_labels:
        return torch.full_like(cond, -1)
    return None      # text and none: cond=None is the null condition


def reference_sample(model, cond, batch, *, cfg_scale=1.0, generator, **filters):
    """Slow sampler: recompute the whole sequence for every token (no cache), with separate
    conditional and unconditional passes (no batching) when guided."""
    N, side = model.num_tokens, model.spec.scales[-1]
    out = torch.zeros(batch, N, dtype=torch.long)
    for i in range(N):
        maps = [out.reshape(batch, side, side)]
        logits = model.logits(maps, cond)[:, i]                     # tokens >= i do not matter (causal)
        if cfg_scale != 1.0:
            logits = cfg_mix(logits, model.logits(maps, null_of(model, cond))[:, i], cfg_scale)
        out[:, i] = sample(logits, generator=generator, **filters)[0]
    return out.reshape(batch, side, side)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- structure

@pytest.mark.parametrize("condition", ["none", "class"])
def test_a_future_token_cannot_change_earlier_logits(condition):
    model = make(condition)
    cond = cond_of(model)
    tokens = torch.randint(0, V, (4, 3, 3), generator=seeded(1))
    base = model.logits([tokens], cond)                               # (B, N, V); row i predicts token i
    for j in (0, 4, 8):
        changed = tokens.clone().flatten(1)
        changed[:, j] = (changed[:, j] + 1) % V
        out = model.logits([changed.reshape(4, 3, 3)], cond)
        assert torch.equal(out[:, : j + 1], base[:, : j + 1]), f"token {j} leaked into the logits of tokens <= {j}"
        if j < 8:
            assert not torch.allclose(out[:, j + 1], base[:, j + 1])


# ---------------------------------------------------------------------- sampling

@pytest.mark.parametrize("condition, cfg_scale, filters", [
    ("none", 1.0, {}),
    ("class", 1.0, {}),                                  # guidance off = conditional-only sampling
    ("class", 3.0, dict(temperature=0.9, top_k=5)),
    ("text", 1.0, dict(top_p=0.9)),                      # the caption through the text encoder (default)
    ("text", 2.5, {}),
    ("text-sequence", 1.0, dict(top_p=0.9)),             # DALL-E: the caption in the causal sequence
    ("text-sequence", 2.5, {}),
])
def test_kv_cache_sampling_equals_full_recomputation(condition, cfg_scale, filters, text_tokenizer):
    condition, _, mode = condition.partition("-")
    extra = {"text_conditioning": mode} if mode else {}
    model = make(condition, text_tokenizer=text_tokenizer if condition_kind(condition).uses_captions else None, **extra)
    cond = cond_of(model)
    fast = model.generate(cond, num_samples=4, cfg_scale=cfg_scale, generator=seeded(7), **filters)[0]
    slow = reference_sample(model, cond, 4, cfg_scale=cfg_scale, generator=seeded(7), **filters)
    assert torch.equal(fast, slow)
    if cfg_scale != 1.0:      # guidance changes the samples
        assert not torch.equal(fast, model.generate(cond, num_samples=4, generator=seeded(7), **filters)[0])


def test_multi_scale_sequence_sampling_equals_recomputation():
    model = make("class", scales=(1, 2))
    cond = cond_of(model)
    fast = model.generate(cond, generator=seeded(3))
    out = torch.zeros(4, 5, dtype=torch.long)
    g = seeded(3)
    for i in range(5):
        maps = [out[:, :1].reshape(4, 1, 1), out[:, 1:].reshape(4, 2, 2)]
        out[:, i] = sample(model.logits(maps, cond)[:, i], generator=g)[0]
    assert torch.equal(torch.cat([t.flatten(1) for t in fast], 1), out)


def test_prefix_completion_keeps_the_prefix_and_matches_the_reference():
    model = make("class")
    cond = cond_of(model)
    given = torch.randint(0, V, (4, 3, 3), generator=seeded(4))
    mask = torch.zeros(4, 3, 3, dtype=torch.bool)
    mask[:, 0] = True                        # the first row for all ...
    mask[1, 1] = True                        # ... two rows for one ...
    mask[3, 1, :1] = True                    # ... and one more token for another
    out = model.generate(cond, known={"tokens": [given], "mask": [mask]}, cfg_scale=2.0, generator=seeded(5))[0]
    assert torch.equal(out[mask], given[mask])
    assert torch.equal(out, _reference_from(model, cond, given, mask, 2.0, seeded(5)))


def _reference_from(model, cond, given, mask, cfg_scale, g):
    """As `reference_sample`, from the end of the prefix every row shares (noise is drawn for each
    later position; rows that know it keep their token)."""
    out = torch.where(mask, given, 0).flatten(1)
    start = int(mask.flatten(1).sum(1).min())
    for i in range(start, out.shape[1]):
        maps = [out.reshape(4, 3, 3)]
        logits = cfg_mix(model.logits(maps, cond)[:, i], model.logits(maps, null_of(model, cond))[:, i], cfg_scale)
        tok = sample(logits, generator=g)[0]
        out[:, i] = torch.where(mask.flatten(1)[:, i], given.flatten(1)[:, i], tok)
    return out.reshape(4, 3, 3)


def test_known_must_be_a_raster_prefix():
    model = make("none")
    given = [torch.zeros(2, 3, 3, dtype=torch.long)]
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[:, 1, 1] = True                     # a centre token: inpainting, not a prefix
    with pytest.raises(ValueError, match="raster prefix.*maskgit"):
        model.generate(known={"tokens": given, "mask": [mask]})
    full = torch.ones(2, 3, 3, dtype=torch.bool)
    assert torch.equal(model.generate(known={"tokens": given, "mask": [full]})[0], given[0])
    with pytest.raises(ValueError, match="steps must be None or 9"):
        model.generate(num_samples=2, steps=4)


# ---------------------------------------------------------------------- likelihood and losses

def test_nll_bits_is_an_exact_normalized_likelihood():
    model = make("class", scales=(2,))
    labels = torch.tensor([1])
    seqs = torch.tensor(list(itertools.product(range(V), repeat=4)))       # all V^4 images of 2x2 tokens
    bits = model.nll_bits([seqs.reshape(-1, 2, 2)], labels.expand(len(seqs)))
    total = torch.exp2(-bits.double() * 4).sum()                            # sum of p(image) over all images
    assert abs(total.item() - 1.0) < 1e-6
    tokens = seqs[:3].reshape(3, 2, 2)
    logp = model.logits([tokens], labels.expand(3)).log_softmax(-1)
    manual = -logp.gather(-1, tokens.flatten(1)[..., None]).squeeze(-1).sum(1) / 4 / math.log(2)
    assert torch.allclose(bits[:3], manual)


def test_dalle_loss_weights_text_and_image(text_tokenizer):
    model = make("text", text_tokenizer=text_tokenizer, dtype=torch.float32, text_conditioning="sequence")
    model.config.cond_dropout = 0.0
    tokens = [torch.randint(0, V, (4, 3, 3), generator=seeded(0))]
    loss, logs = model.loss(tokens, cond_of(model))
    assert math.isclose(loss.item(), (logs["loss_text"] + 7 * logs["loss_image"]) / 8, rel_tol=1e-5)
    no_text = make("text", text_tokenizer=text_tokenizer, text_loss_weight=0.0, text_conditioning="sequence")
    assert no_text.text_head is None
    loss, logs = no_text.loss(tokens, cond_of(no_text))
    assert "loss_text" not in logs and math.isclose(loss.item(), logs["loss_image"], rel_tol=1e-9)


def test_frozen_text_encoder_is_refused():
    with pytest.raises(ValueError, match="own sequence"):
        build_generator("ar", {"codebook_size": V, "scales": [3], "image_size": 12, "channels": 3},
                        {"condition": "text", "text_encoder_path": "/nonexistent"})


# ---------------------------------------------------------------------- learning

def test_tiny_model_learns_a_class_conditional_distribution():
    """Each of 3 classes is a 50/50 mixture of two fixed 4x4 maps over 8 codes."""
    C = 3
    patterns = torch.randint(0, V, (C, 2, 4, 4), generator=seeded(0))
    torch.manual_seed(0)
    model = build_generator("ar", {"codebook_size": V, "scales": [4], "image_size": 16, "channels": 3},
                            dict(width=64, depth=2, heads=4, condition="class", num_classes=C, cond_dropout=0.1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    data, losses = seeded(1), []
    for _ in range(250):
        labels = torch.randint(0, C, (32,), generator=data)
        which = torch.randint(0, 2, (32,), generator=data)
        loss, _ = model.loss([patterns[labels, which]], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 1.9 and sum(losses[-20:]) / 20 < 0.15          # ln 8 = 2.08 -> near ln 2 / 16
    model.eval()
    labels = torch.arange(C).repeat_interleave(20)
    out = model.generate(labels, generator=seeded(2))[0]
    match = (out[:, None] == patterns[labels]).flatten(2).all(-1)       # (60, 2): equals pattern 0 / 1 of its class
    assert match.any(1).float().mean() >= 0.9
    assert match[:, 0].sum() >= 10 and match[:, 1].sum() >= 10          # both modes, not a collapse
    bits_right = model.nll_bits([patterns[labels, 0]], labels).mean()
    bits_wrong = model.nll_bits([patterns[labels, 0]], (labels + 1) % C).mean()
    assert bits_right < 0.2 < 1.0 < bits_wrong
