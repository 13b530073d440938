"""The shared pieces every generator family runs on: attention masks, the KV cache, adaLN,
cross-attention, positions, the sampling helpers, mask schedules and the text tokenizer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tokgen.generators import MASK_SCHEDULES, cfg_mix, filter_logits, guidance_scale, mask_ratio, sample, top_k_filter, top_p_filter
from tokgen.generators.conditioning import Condition, as_condition
from tokgen.generators.core import (ImagePositions, Transformer, TransformerConfig, block_causal_mask, causal_mask,
                             padding_mask)
from tokgen.generators.sampling import gumbel_noise, mix_guided
from tokgen.generators.schedules import num_masked_after_step, num_masked_for_training
from tokgen.generators.spec import as_spec, check_token_maps, flatten_tokens, unflatten_tokens
from tokgen.generators.text import (decode_captions, encode_captions, load_text_tokenizer, max_caption_tokens,
                             train_text_tokenizer)

CAPTIONS = [
    "a large red circle at the top left",
    "a small blue square at the bottom right",
    "a large green triangle at the center and a small yellow diamond at the top",
    "a small purple diamond at the middle left",
    "a large cyan circle at the bottom",
    "the digit 7",
]


def core(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(**{**dict(width=32, depth=2, heads=4), **kw})
    return Transformer(cfg).double().eval()


def randn(*shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def perturb(x: torch.Tensor, j: int) -> torch.Tensor:
    y = x.clone()
    y[:, j] += randn(*y[:, j].shape, seed=99)     # not a constant shift: LayerNorm would remove it
    return y


def close(a, b):
    return torch.allclose(a, b, atol=1e-10, rtol=0)


# ---------------------------------------------------------------------- masks

def test_causal_attention_has_no_future_leak():
    model, x = core(), randn(2, 10, 32)
    base = model(x, mask="causal")
    for j in (0, 4, 9):
        out = model(perturb(x, j), mask="causal")
        assert close(out[:, :j], base[:, :j]), f"perturbing position {j} changed earlier outputs"
        assert not torch.allclose(out[:, j], base[:, j])


def test_causal_string_and_tensor_masks_agree():
    model, x = core(), randn(2, 7, 32)
    assert close(model(x, mask="causal"), model(x, mask=causal_mask(7)))


def test_full_attention_sees_everything():
    model, x = core(), randn(2, 6, 32)
    base = model(x, mask="full")
    assert not torch.allclose(model(perturb(x, 5), mask="full")[:, 0], base[:, 0])


def test_block_causal_mask_closed_form():
    sizes = [1, 4, 9]
    mask = block_causal_mask(sizes)
    block = torch.tensor(sum(([k] * s for k, s in enumerate(sizes)), []))
    assert mask.shape == (14, 14) and mask.dtype == torch.bool
    assert torch.equal(mask, block[:, None] >= block[None, :])
    assert mask[0].sum() == 1 and mask[1:5].sum(1).eq(5).all() and mask[5:].all()


def test_block_causal_attention_sees_exactly_earlier_and_own_blocks():
    sizes, model = [1, 4, 9], core()
    x, mask = randn(2, 14, 32), block_causal_mask([1, 4, 9])
    base = model(x, mask=mask)
    starts = [0, 1, 5]
    for k, j in enumerate(starts):
        j_last = j + sizes[k] - 1                      # the last token of block k
        out = model(perturb(x, j_last), mask=mask)
        assert close(out[:, :j], base[:, :j]), f"block {k} leaked into earlier blocks"
        assert (out[:, j:] - base[:, j:]).abs().amax(-1).gt(1e-8).all(), f"block {k} is not seen by blocks >= {k}"


# ---------------------------------------------------------------------- KV cache

def test_kv_cache_prefill_then_steps_equals_full_forward():
    model, x = core(), randn(3, 12, 32)
    full = model(x, mask="causal")
    cache = model.new_cache(batch_size=3, max_len=12, like=x)
    k_ptr = cache.k.data_ptr()
    parts = [model(x[:, :5], mask="causal", cache=cache)]
    for i in range(5, 12):
        parts.append(model(x[:, i:i + 1], mask="causal", cache=cache))
    assert cache.length == 12 and cache.k.data_ptr() == k_ptr          # filled in place, never re-allocated
    assert close(torch.cat(parts, dim=1), full)


def test_kv_cache_with_adaln_and_cross_attention():
    model = core(cond_dim=16, cross_attention=True, context_dim=24)
    x, cond, ctx = randn(2, 9, 32), randn(2, 16, seed=2), randn(2, 5, 24, seed=3)
    cmask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    kw = dict(cond=cond, context=ctx, context_mask=cmask)
    full = model(x, mask="causal", **kw)
    cache = model.new_cache(batch_size=2, max_len=9, like=x)
    parts = [model(x[:, :1], mask="causal", cache=cache, **kw)]
    parts += [model(x[:, i:i + 1], mask="causal", cache=cache, **kw) for i in range(1, 9)]
    assert close(torch.cat(parts, 1), full)


def test_kv_cache_block_by_block_equals_block_causal_forward():
    sizes, model = [1, 4, 9], core()
    x, mask = randn(2, 14, 32), block_causal_mask(sizes)
    full = model(x, mask=mask)
    cache = model.new_cache(batch_size=2, max_len=14, like=x)
    parts, start = [], 0
    for s in sizes:
        parts.append(model(x[:, start:start + s], mask=mask, cache=cache))
        start += s
    assert close(torch.cat(parts, 1), full)


def test_kv_cache_multi_token_step_after_prefill():
    model, x = core(), randn(2, 10, 32)
    cache = model.new_cache(batch_size=2, max_len=10, like=x)
    out = torch.cat([model(x[:, :4], cache=cache), model(x[:, 4:10], cache=cache)], 1)
    assert close(out, model(x))


def test_kv_cache_overflow_and_reset():
    model, x = core(), randn(2, 4, 32)
    cache = model.new_cache(batch_size=2, max_len=4, like=x)
    model(x, cache=cache)
    with pytest.raises(ValueError, match="allocate a larger cache"):
        model(x[:, :1], cache=cache)
    cache.reset()
    assert close(model(x, cache=cache), model(x))
    cache.reset(1)                          # the buffers are uninitialised: no write may leave a gap
    with pytest.raises(ValueError, match=r"holds positions \[0, 1\), asked to write at 2"):
        model(x[:, :1], cache=cache, start=2)


def test_cache_smaller_batch_uses_leading_rows():
    model, x = core(), randn(2, 5, 32)
    cache = model.new_cache(batch_size=8, max_len=5, like=x)
    assert close(model(x, cache=cache), model(x))


# ---------------------------------------------------------------------- adaLN, cross-attention

def test_adaln_zero_starts_as_identity_and_conditions_after_training():
    model = core(cond_dim=8)
    x, cond = randn(2, 5, 32), randn(2, 8, seed=4)
    out = model(x, mask="full", cond=cond)
    assert close(out, F.layer_norm(x, (32,), eps=1e-6))        # every block is the identity at init
    with torch.no_grad():
        for p in model.parameters():
            p.add_(randn(*p.shape, seed=5) * 0.05)
    out2 = model(x, mask="full", cond=cond)
    assert not torch.allclose(out2, model(x, mask="full", cond=cond * 2))


def test_cross_attention_ignores_padded_context():
    model = core(cross_attention=True)
    x, ctx = randn(2, 6, 32), randn(2, 5, 32, seed=6)
    cmask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    base = model(x, mask="full", context=ctx, context_mask=cmask)
    noisy = ctx.clone()
    noisy[~cmask] = 100.0
    assert close(model(x, mask="full", context=noisy, context_mask=cmask), base)
    changed = ctx.clone()
    changed[0, 0] += randn(32, seed=7)
    assert not torch.allclose(model(x, mask="full", context=changed, context_mask=cmask)[0], base[0])


def test_core_rejects_missing_condition_and_context():
    with pytest.raises(ValueError, match="cond"):
        core(cond_dim=8)(randn(1, 3, 32))
    with pytest.raises(ValueError, match="context"):
        core(cross_attention=True)(randn(1, 3, 32))
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(width=30, heads=4)


def test_padding_mask_shape():
    assert padding_mask(torch.ones(3, 7, dtype=torch.bool)).shape == (3, 1, 1, 7)


# ---------------------------------------------------------------------- positions

@pytest.mark.parametrize("kind", ["learned_1d", "learned_2d", "sinusoidal_2d"])
@pytest.mark.parametrize("scales", [[4], [1, 2, 4]])
def test_image_positions_cover_every_token(kind, scales):
    pos = ImagePositions(scales, 16, kind)()
    n = sum(s * s for s in scales)
    assert pos.shape == (n, 16)
    assert torch.unique(pos.detach(), dim=0).shape[0] == n      # every position distinct


def test_learned_2d_positions_are_row_plus_column():
    pos = ImagePositions([3], 8, "learned_2d")().detach().reshape(3, 3, 8)   # (row, col, D)
    # pos(r, c) - pos(r, c') is the same for every row r
    assert torch.allclose(pos[0, 2] - pos[0, 0], pos[2, 2] - pos[2, 0], atol=1e-6)


# ---------------------------------------------------------------------- sampling helpers

def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0, 0.5]])
    kept = torch.isfinite(top_k_filter(logits, 2))[0]
    assert kept.tolist() == [False, True, False, True, False]
    assert torch.isfinite(top_k_filter(logits, 5)).all() and torch.isfinite(top_k_filter(logits, None)).all()


@pytest.mark.parametrize("p, expected", [(0.4, {2}), (0.75, {2, 0}), (0.85, {2, 0, 3}), (0.99, {2, 0, 3, 1}),
                                         (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_reaching_p(p, expected):
    probs = torch.tensor([0.3, 0.05, 0.5, 0.15])          # sorted: 0.5 (id 2), 0.3 (id 0), 0.15 (id 3), 0.05 (id 1)
    kept = torch.isfinite(top_p_filter(probs.log()[None], p))[0]
    assert set(torch.nonzero(kept).flatten().tolist()) == expected


def test_filters_compose_and_never_sample_removed_tokens():
    logits = torch.tensor([0.0, 3.0, 2.9, 1.0, -1.0]).repeat(4000, 1)
    ids, logp = sample(logits, top_k=3, top_p=0.6, generator=torch.Generator().manual_seed(0))
    assert set(ids.tolist()) <= {1, 2}
    kept = torch.isfinite(filter_logits(logits[:1], top_k=3, top_p=0.6))[0]
    assert torch.nonzero(kept).flatten().tolist() == [1, 2]
    assert torch.all(logp <= 0)


def test_sample_matches_the_softmax_and_is_seeded():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0])
    g = torch.Generator().manual_seed(0)
    ids, logp = sample(logits.repeat(20000, 1), generator=g)
    freq = torch.bincount(ids, minlength=4).float() / 20000
    assert torch.allclose(freq, logits.softmax(0), atol=0.015)
    assert torch.allclose(logp, logits.log_softmax(0)[ids])
    again, _ = sample(logits.repeat(20000, 1), generator=torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)


def test_temperature():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    assert sample(logits, temperature=0)[0].item() == 1
    hot = sample(logits.repeat(20000, 1), temperature=2.0, generator=torch.Generator().manual_seed(1))[0]
    freq = torch.bincount(hot, minlength=3).float() / 20000
    assert torch.allclose(freq, (logits[0] / 2).softmax(0), atol=0.015)
    with pytest.raises(ValueError, match="temperature"):
        sample(logits, temperature=-1)


def test_gumbel_noise_is_seeded_and_standard():
    a = gumbel_noise((50000,), generator=torch.Generator().manual_seed(3))
    b = gumbel_noise((50000,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert abs(a.mean().item() - 0.5772) < 0.02                 # Euler-Mascheroni constant


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_sampling_steps_equal_the_textbook_formulas_bit_for_bit(dtype):
    """gumbel_noise, sample and cfg_mix work in place for speed; seeded samples must not change:
    the same values as -log(-log(u)) with clamps, logp + noise and lu + s (lc - lu)."""
    shape, tiny = (4, 37, 1025), torch.finfo(dtype).tiny
    u = torch.rand(shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
    textbook = -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))
    assert torch.equal(gumbel_noise(shape, generator=torch.Generator().manual_seed(5), dtype=dtype), textbook)
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(6)) * 3
    logp = logits.log_softmax(-1)
    noise = gumbel_noise(shape, generator=torch.Generator().manual_seed(7))
    ids, _ = sample(logits, generator=torch.Generator().manual_seed(7))
    assert torch.equal(ids, (logp + noise).argmax(-1))
    lc, lu = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    assert torch.equal(cfg_mix(lc, lu, 3.0), lu.float() + 3.0 * (lc.float() - lu.float()))


def test_cfg_mixing_and_schedules():
    lc, lu = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert torch.equal(cfg_mix(lc, lu, 1.0), lc) and torch.equal(cfg_mix(lc, lu, 0.0), lu)
    assert torch.equal(cfg_mix(lc, lu, 3.0), torch.tensor([[4.0, -2.0]]))
    assert torch.equal(mix_guided(torch.cat([lc, lu]), 3.0, doubled=True), torch.tensor([[4.0, -2.0]]))
    assert torch.equal(mix_guided(lc, 3.0, doubled=False), lc)
    assert guidance_scale("constant", 4.0, 0.1) == 4.0
    assert guidance_scale("linear", 4.0, 0.0) == 1.0 and guidance_scale("linear", 4.0, 1.0) == 4.0
    assert guidance_scale("linear", 4.0, 0.5) == 2.5
    with pytest.raises(ValueError, match="guidance schedule"):
        guidance_scale("cosine", 2.0, 0.5)


# ---------------------------------------------------------------------- mask schedules

@pytest.mark.parametrize("name", ["cosine", "linear", "square", "cubic", "sqrt", "pow2.5", "log", "exp"])
def test_mask_schedules_go_from_all_to_none_and_only_down(name):
    r = torch.linspace(0, 1, 101)
    g = mask_ratio(name, r, total=64)
    assert g[0] == 1.0 and g[-1] == 0.0
    assert (g[1:] <= g[:-1] + 1e-12).all()
    assert "cosine" in MASK_SCHEDULES


def test_cosine_schedule_closed_form_and_training_counts():
    assert torch.allclose(mask_ratio("cosine", torch.tensor([0.0, 0.5, 1.0])),
                          torch.tensor([1.0, math.cos(math.pi / 4), 0.0], dtype=torch.float64))
    n = num_masked_for_training("cosine", torch.tensor([0.0, 0.5, 0.999999, 1.0]), 16)
    assert n.tolist() == [16, math.ceil(16 * math.cos(math.pi / 4)), 1, 1]
    with pytest.raises(ValueError, match="unknown mask schedule"):
        mask_ratio("zigzag", 0.5)


@pytest.mark.parametrize("steps", [1, 4, 8, 10])
def test_decoding_counts_strictly_decrease_and_end_at_zero(steps):
    N = torch.tensor([16, 10])
    masked, history = N.clone(), [N.clone()]
    for t in range(steps):
        masked = num_masked_after_step("cosine", t, steps, N, masked)
        history.append(masked)
    h = torch.stack(history)                                      # (steps+1, B)
    assert (h[1:] < h[:-1]).all() and (h[-1] == 0).all()
    expected = [max(1, min(16 - 1, math.floor(16 * math.cos(math.pi / 2 / steps))))] if steps > 1 else [0]
    assert h[1, 0].item() == expected[0]


def test_more_steps_than_tokens_still_only_moves_one_way():
    N = masked = torch.tensor([3])
    history = [masked]
    for t in range(8):
        masked = num_masked_after_step("cosine", t, 8, N, masked)
        history.append(masked)
    h = torch.cat(history)
    assert (h[1:] <= h[:-1]).all() and h[-1] == 0 and (h[:-1] >= 1).all()


# ---------------------------------------------------------------------- specs and token maps

def test_spec_from_dict_or_object_and_token_flattening():
    spec = as_spec({"codebook_size": 16, "scales": [1, 2], "image_size": 8, "channels": 3, "factor": 4})
    assert spec.tokens_per_image == 5 and spec.block_sizes == [1, 4]

    class Obj:
        codebook_size, scales, image_size, channels = 16, (1, 2), 8, 3
    assert as_spec(Obj()) == spec
    maps = [torch.arange(2).reshape(2, 1, 1), torch.arange(8).reshape(2, 2, 2)]
    flat = flatten_tokens(maps)
    assert flat.tolist() == [[0, 0, 1, 2, 3], [1, 4, 5, 6, 7]]
    assert all(torch.equal(a, b) for a, b in zip(unflatten_tokens(flat, [1, 2]), maps))
    with pytest.raises(ValueError, match="lacks"):
        as_spec({"codebook_size": 16})
    with pytest.raises(ValueError, match=r"wrap it"):
        check_token_maps(maps[1], spec)


def test_condition_formats():
    assert as_condition(None) is None
    assert torch.equal(as_condition(torch.tensor([1, 2])).labels, torch.tensor([1, 2]))
    assert torch.equal(as_condition({"label": [3]}).labels, torch.tensor([3]))
    c = as_condition({"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4)})
    assert isinstance(c, Condition) and c.batch_size == 2
    assert as_condition(["a red circle"]).captions == ["a red circle"]
    with pytest.raises(ValueError, match="unknown condition keys"):
        as_condition({"prompt": "x"})
    with pytest.raises(ValueError, match="class labels"):
        as_condition(torch.zeros(2, 3))


# ---------------------------------------------------------------------- text tokenizer

def test_text_tokenizer_round_trip_and_padding(tmp_path):
    tok = train_text_tokenizer(CAPTIONS * 20, vocab_size=320)
    assert tok.get_vocab_size() <= 320 and tok.token_to_id("[PAD]") == 0
    ids, mask = encode_captions(tok, CAPTIONS, length=32)
    assert max_caption_tokens(tok, CAPTIONS) == mask.sum(1).max()
    assert ids.shape == mask.shape == (len(CAPTIONS), 32) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert (ids[~mask] == 0).all() and mask[:, 0].all()
    assert (mask[:, 1:] <= mask[:, :-1]).all()                  # padding only after the text
    assert decode_captions(tok, ids, mask) == CAPTIONS
    assert mask[0].sum() < len(CAPTIONS[0].split()) * 2         # BPE merged words (not bytes)
    assert decode_captions(tok, *encode_captions(tok, ["A Large RED circle!"], 24)) == ["a large red circle!"]
    tok.save(str(tmp_path / "tokenizer.json"))
    again = load_text_tokenizer(tmp_path / "tokenizer.json")
    assert torch.equal(encode_captions(again, CAPTIONS, 32)[0], ids)


def test_text_tokenizer_errors():
    tok = train_text_tokenizer(CAPTIONS, vocab_size=300)
    with pytest.raises(ValueError, match="more than text_length"):
        encode_captions(tok, [CAPTIONS[2]], length=3)
    ids, mask = encode_captions(tok, [CAPTIONS[2]], length=3, truncate=True)
    assert mask.all()
    with pytest.raises(ValueError, match="vocab_size"):
        train_text_tokenizer(CAPTIONS, vocab_size=100)
    with pytest.raises(ValueError, match="no caption text"):
        train_text_tokenizer(["", " "], vocab_size=300)
    with pytest.raises(ValueError, match="list of strings"):
        encode_captions(tok, "a red circle", 8)
    with pytest.raises(FileNotFoundError):
        load_text_tokenizer("/nonexistent/tokenizer.json")
    empty_ids, empty_mask = encode_captions(tok, [""], 4)
    assert not empty_mask.any() and (empty_ids == 0).all()
