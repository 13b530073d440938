"""MaskGIT / Muse: decoding equals a literal reading of the algorithm (a slow reference decoder
below), the schedule only moves one way, known tokens (inpainting, outpainting) never change,
training masks and scores the right positions, a frozen Hugging Face text encoder from a local
path, and a tiny model that learns a toy conditional distribution."""

from __future__ import annotations

import math

import pytest
import torch

from tokgen.generators import (MaskGITGenerator, build_generator, condition_kind, load_generator, sample,
                               train_text_tokenizer)
from tokgen.generators.sampling import cfg_mix, gumbel_noise

V = 8


@pytest.fixture(scope="module")
def text_tokenizer():
    return train_text_tokenizer(["a red circle", "a blue square", "a green triangle at the top"] * 10, vocab_size=280)


def spec(side=4):
    return {"codebook_size": V, "scales": [side], "image_size": 4 * side, "channels": 3}


def make(condition="class", seed=0, text_tokenizer=None, dtype=torch.float64, **kw) -> MaskGITGenerator:
    torch.manual_seed(seed)
    config = dict(width=32, depth=2, heads=4, condition=condition, num_classes=3 if condition_kind(condition).uses_labels else 0,
                  text_length=8, text_depth=1, **kw)
    model = build_generator("maskgit", spec(), config, text_tokenizer=text_tokenizer)
    with torch.no_grad():    # away from the init (adaLN-Zero would make the condition invisible)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.to(dtype).eval()


def cond_of(model):
    if model.conditioning.uses_labels:
        return torch.tensor([0, 1, 2, -1])
    if model.conditioning.uses_captions:
        return model.make_condition(captions=["a red circle", "a blue square", "", "a green triangle"])
    return None


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def reference_decode(model, cond, tokens, fixed, steps, cfg_scale, generator, growing=False, **filters):
    """MaskGIT decoding read literally from REFERENCE.md, one sample and one token at a time, with
    separate conditional / unconditional passes.  Returns (tokens (B, N), masked counts per step)."""
    B, N = tokens.shape
    tokens, fixed = tokens.clone(), fixed.clone()
    unknown = (~fixed).sum(1)
    tau, counts = model.config.choice_temperature, []
    null = torch.full_like(cond, -1) if model.conditioning.uses_labels else None
    for t in range(steps):
        maps, masked_maps = [tokens.reshape(B, 4, 4)], [(~fixed).reshape(B, 4, 4)]
        logits = model.logits(maps, cond, mask=masked_maps)                     # (B, N, V)
        if cfg_scale != 1.0:
            s = 1 + (cfg_scale - 1) * (t + 1) / steps if growing else cfg_scale
            logits = cfg_mix(logits, model.logits(maps, null, mask=masked_maps), s)
        sampled, logp = sample(logits, generator=generator, **filters)
        confidence = logp + tau * (1 - (t + 1) / steps) * gumbel_noise((B, N), generator=generator)
        for b in range(B):
            masked = [i for i in range(N) if not fixed[b, i]]
            if t == steps - 1:
                n = 0
            else:
                n = math.floor(unknown[b].item() * math.cos(math.pi / 2 * (t + 1) / steps))
                n = max(1, min(len(masked) - 1, n)) if masked else 0
            stay = set(sorted(masked, key=lambda i: confidence[b, i].item())[:n])   # the n least confident
            for i in masked:
                if i not in stay:
                    tokens[b, i], fixed[b, i] = sampled[b, i], True
        counts.append((~fixed).sum(1))
    return tokens, torch.stack(counts)


@pytest.mark.parametrize("condition, cfg_scale, kw, filters", [
    ("none", 1.0, {}, {}),
    ("class", 1.0, {}, {}),                                                  # guidance off = conditional only
    ("class", 3.0, dict(class_conditioning="prefix"), dict(top_k=5, temperature=0.8)),
    ("class", 3.0, dict(guidance_schedule="linear"), {}),                   # Muse's growing guidance
    ("text", 2.0, {}, dict(top_p=0.9)),
])
def test_decoding_equals_the_reference(condition, cfg_scale, kw, filters, text_tokenizer):
    model = make(condition, text_tokenizer=text_tokenizer if condition_kind(condition).uses_captions else None, **kw)
    cond = cond_of(model)
    out = model.generate(cond, num_samples=4, steps=6, cfg_scale=cfg_scale, generator=seeded(3), **filters)[0]
    empty = torch.zeros(4, 16, dtype=torch.long), torch.zeros(4, 16, dtype=torch.bool)
    ref, counts = reference_decode(model, cond, *empty, 6, cfg_scale, seeded(3),
                                   growing=kw.get("guidance_schedule") == "linear", **filters)
    assert torch.equal(out.flatten(1), ref)
    assert counts[-1].eq(0).all() and (counts[1:] < counts[:-1]).all()


def test_inpainting_equals_the_reference_and_keeps_known_tokens():
    model = make("class")
    cond = cond_of(model)
    given = torch.randint(0, V, (4, 4, 4), generator=seeded(1))
    mask = torch.ones(4, 4, 4, dtype=torch.bool)
    mask[:, 1:3, 1:3] = False                                  # inpaint the centre ...
    mask[2] = False
    mask[2, 0] = True                                          # ... or outpaint below the first row
    out = model.generate(cond, known={"tokens": [given], "mask": [mask]}, steps=3, cfg_scale=2.0,
                         generator=seeded(4))[0]
    assert torch.equal(out[mask], given[mask])
    ref, counts = reference_decode(model, cond, torch.where(mask, given, 0).flatten(1), mask.flatten(1), 3, 2.0,
                                   seeded(4))
    assert torch.equal(out.flatten(1), ref)
    assert counts[0].tolist() == [3, 3, 10, 3]                 # floor(N_unknown cos(pi/6)), N_unknown = 4 or 12


@pytest.mark.parametrize("steps", [1, 5, 11])
def test_schedule_only_moves_one_way_and_fixed_tokens_stay(steps):
    model = make("class")
    given = torch.randint(0, V, (4, 16), generator=seeded(2))
    known_mask = torch.zeros(4, 16, dtype=torch.bool)
    known_mask[0, :5] = True
    trace = []
    with torch.no_grad():
        final = model._decode((given, known_mask), model._condition(cond_of(model)), steps, 2.0, {}, seeded(0),
                              on_step=lambda t, toks, fixed: trace.append((toks.clone(), fixed.clone())))
    assert len(trace) == steps
    masked = torch.stack([(~f).sum(1) for _, f in trace])                  # (steps, B)
    start = (~known_mask).sum(1)[None]
    masked = torch.cat([start, masked])
    assert (masked[1:] < masked[:-1]).all(), masked.T                        # strictly fewer every step
    assert masked[-1].eq(0).all() and trace[-1][1].all()                      # everything fixed at the end
    for (toks_a, fixed_a), (toks_b, fixed_b) in zip(trace, trace[1:]):
        assert (fixed_b >= fixed_a).all()                                     # a fixed token is never re-masked
        assert torch.equal(toks_b[fixed_a], toks_a[fixed_a])                  # ... nor changed
    assert torch.equal(final[known_mask], given[known_mask])
    assert (trace[0][0] == model.mask_id).sum(1).tolist() == masked[1].tolist()


def test_training_masks_ceil_gamma_n_and_scores_only_masked_positions():
    model = make("none", dtype=torch.float32, label_smoothing=0.0)
    model.train()
    seen = {}
    def keep_logits(module, inp, out):      # returns None: the output is left as it is
        out.retain_grad()
        seen["logits"] = out

    model.tok_emb.register_forward_hook(lambda m, inp, out: seen.__setitem__("ids", inp[0]))
    model.head.register_forward_hook(keep_logits)
    tokens = torch.randint(0, V, (64, 4, 4), generator=seeded(0))
    torch.manual_seed(1)
    loss, logs = model.loss([tokens], None)
    loss.backward()
    masked = seen["ids"] == model.mask_id                                     # (B, N)
    grad = seen["logits"].grad.abs().sum(-1)                                  # (B, N)
    assert (grad[~masked] == 0).all() and (grad[masked] > 0).all()
    n = masked.sum(1)
    assert n.min() >= 1 and n.max() <= 16 and len(set(n.tolist())) > 5        # ceil(gamma(r) N), r ~ U(0, 1)
    assert torch.equal(seen["ids"][~masked], tokens.flatten(1)[~masked])
    expected = torch.nn.functional.cross_entropy(seen["logits"][masked], tokens.flatten(1)[masked])
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-6)
    # the cosine schedule masks more than half on average: E[cos(pi r / 2)] = 2 / pi
    assert 0.5 < n.float().mean().item() / 16 < 0.8


def test_steps_and_label_smoothing_config():
    model = make("none", steps=3)
    trace = []
    model._decode((torch.zeros(2, 16, dtype=torch.long), torch.zeros(2, 16, dtype=torch.bool)), None, 3, 1.0, {},
                  None, on_step=lambda *a: trace.append(a))
    assert len(trace) == 3
    with pytest.raises(ValueError, match="steps must be >= 1"):
        model.generate(num_samples=2, steps=0)
    with pytest.raises(ValueError, match="mask schedule"):
        make("none", mask_schedule="zigzag")
    with pytest.raises(ValueError, match="class_conditioning"):
        make("class", class_conditioning="concat")


# ---------------------------------------------------------------------- a frozen Hugging Face text encoder

@pytest.fixture(scope="module")
def hf_encoder_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    from tokenizers import BertWordPieceTokenizer

    path = tmp_path_factory.mktemp("hf") / "tiny-bert"
    path.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "green", "circle", "square", "at"]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    wordpiece = BertWordPieceTokenizer(str(path / "vocab.txt"))
    transformers.PreTrainedTokenizerFast(tokenizer_object=wordpiece._tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                         cls_token="[CLS]", sep_token="[SEP]").save_pretrained(path)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    transformers.BertModel(config).save_pretrained(path)
    return path


def test_frozen_hf_text_encoder_from_a_local_path(hf_encoder_dir, tmp_path):
    model = build_generator("maskgit", spec(), dict(width=32, depth=2, heads=4, condition="text", text_length=8,
                                                    text_encoder_path=str(hf_encoder_dir)))
    cond = model.make_condition(captions=["a red circle", "a blue square"])
    assert cond.text_ids[0, :5].tolist() == [2, 5, 6, 9, 3]                 # the encoder's own tokenizer
    frozen = [p for n, p in model.named_parameters() if ".model." in n]
    assert frozen and not any(p.requires_grad for p in frozen)
    model.train()
    loss, _ = model.loss([torch.randint(0, V, (2, 4, 4))], cond)
    loss.backward()
    assert all(p.grad is None for p in frozen)
    assert model.text.encoder.model.training is False                      # frozen: no dropout either
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "text_encoder" / "config.json").is_file()
    loaded = load_generator(tmp_path / "ckpt")
    tokens = [torch.randint(0, V, (2, 4, 4), generator=seeded(0))]
    assert torch.equal(loaded.logits(tokens, cond), model.logits(tokens, cond))
    draw = lambda m: m.generate(cond, cfg_scale=2.0, generator=seeded(1))[0]
    assert torch.equal(draw(loaded), draw(model))


def test_missing_hf_path_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build_generator("maskgit", spec(), dict(condition="text", text_encoder_path="/nonexistent/t5-small"))


# ---------------------------------------------------------------------- learning

def _train_toy(condition, cond_fn, steps, text_tokenizer=None, **kw):
    """Each of 3 conditions is a 50/50 mixture of two fixed 4x4 maps over 8 codes."""
    patterns = torch.randint(0, V, (3, 2, 4, 4), generator=seeded(0))
    torch.manual_seed(0)
    model = build_generator("maskgit", spec(), dict(width=64, depth=2, heads=4, condition=condition, num_classes=3,
                                                    text_length=4, text_depth=1, label_smoothing=0.0, **kw),
                            text_tokenizer=text_tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    data, losses = seeded(1), []
    for _ in range(steps):
        labels = torch.randint(0, 3, (32,), generator=data)
        which = torch.randint(0, 2, (32,), generator=data)
        loss, _ = model.loss([patterns[labels, which]], cond_fn(model, labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    labels = torch.arange(3).repeat_interleave(20)
    out = model.generate(cond_fn(model, labels), generator=seeded(2))[0]
    match = (out[:, None] == patterns[labels]).flatten(2).all(-1)            # (60, 2)
    return losses, match


def test_tiny_model_learns_a_class_conditional_distribution():
    losses, match = _train_toy("class", lambda m, labels: labels, 600)
    assert losses[0] > 1.9 and sum(losses[-50:]) / 50 < 0.6
    assert match.any(1).float().mean() >= 0.75                                # samples follow the label
    assert match[:, 0].sum() >= 8 and match[:, 1].sum() >= 8                  # both modes


@pytest.mark.slow   # ~30 s; the default suite's learning checks are tests/test_train_generator.py's toy runs
def test_tiny_muse_learns_a_caption_conditional_distribution(text_tokenizer):
    words = ["red", "blue", "green"]
    caption = lambda m, labels: m.make_condition(captions=[words[i] for i in labels.tolist()])
    losses, match = _train_toy("text", caption, 600, text_tokenizer=text_tokenizer)
    assert losses[0] > 1.9 and sum(losses[-50:]) / 50 < 0.6
    assert match.any(1).float().mean() >= 0.75
