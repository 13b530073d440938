"""The generator contract, one test class parametrized over every registered family and every
kind of condition (none, class labels, captions): losses and gradients, sampling shapes and
seeding, `known` tokens, checkpoints (with the text tokenizer), bf16 and input errors; then the
facts each family declares (steps, likelihood, known masks, guidance) and each condition kind's
(embedding, null condition), held to what the models do."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch

from tokgen.generators import (CONDITIONS, FAMILIES, Condition, Generator, build_generator, condition_kind,
                               load_generator, train_text_tokenizer)

CAPTIONS = ["a large red circle at the top left", "a small blue square", "", "a green triangle at the center"]
V = 16
# Per-family settings of the contract's tiny models: VAR builds scale inputs from a learned embedding
# (no tokenizer; test_generators_var.py covers the tokenizer's quantizer), D3PM runs a short chain.
FAMILY_OVERRIDES = {"var": dict(scale_inputs="learned"), "d3pm": dict(timesteps=10)}


@pytest.fixture(scope="module")
def text_tokenizer():
    return train_text_tokenizer(CAPTIONS * 10 + ["a yellow diamond at the bottom right"] * 5, vocab_size=300)


def spec(scales=(4,)):
    return {"codebook_size": V, "scales": list(scales), "image_size": 4 * max(scales), "channels": 3}


def make(family: str, condition: str, text_tokenizer, scales=(4,), seed: int = 0, **overrides) -> Generator:
    torch.manual_seed(seed)
    kind = condition_kind(condition)
    config = dict(width=32, depth=2, heads=4, condition=condition, num_classes=3 if kind.uses_labels else 0,
                  text_length=12, text_depth=1, cond_dropout=0.5, **{**FAMILY_OVERRIDES.get(family, {}), **overrides})
    return build_generator(family, spec(scales), config,
                           text_tokenizer=text_tokenizer if kind.uses_captions else None)


def condition_for(model: Generator, batch: int = 4):
    """What the model takes: labels as a bare LongTensor (one of them the null -1), captions (one
    of them empty) tokenized, or None."""
    if model.conditioning.uses_labels:
        return torch.tensor([0, 1, 2, -1] * (batch // 4) + [0, 1, 2][: batch % 4])
    return model.make_condition(captions=(CAPTIONS * batch)[:batch])         # None when unconditional


def random_tokens(batch: int = 4, scales=(4,), seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (batch, s, s), generator=g) for s in scales]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CASES = [(f, c) for f in sorted(FAMILIES) for c in CONDITIONS]


class TestGeneratorContract:
    """Every family, every condition kind."""

    @pytest.fixture(params=CASES, ids=[f"{f}-{c}" for f, c in CASES])
    def case(self, request, text_tokenizer):
        family, condition = request.param
        model = make(family, condition, text_tokenizer)
        return model, condition_for(model)

    def test_registry(self, case):
        model, _ = case
        assert FAMILIES[model.family] is type(model) and type(model).family == model.family

    def test_every_family_attaches_the_tokenizer_of_its_spec_and_refuses_another(self, case):
        model, _ = case
        same = type("Tok", (), {"spec": model.spec})()
        if model.family != "var" or model.config.scale_inputs == "learned":     # VAR's default also needs .quantizer
            assert model.attach_tokenizer(same) is model
        other = type("Tok", (), {"spec": dataclasses.replace(model.spec, codebook_size=model.spec.codebook_size + 1)})()
        with pytest.raises(ValueError, match="attach the tokenizer whose tokens it models"):
            model.attach_tokenizer(other)

    def test_loss_is_finite_and_reaches_every_parameter(self, case):
        model, cond = case
        model.train()
        tokens = random_tokens()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        torch.manual_seed(0)
        for _ in range(2):   # adaLN-Zero gates start at 0: their branches get gradients from the second step
            loss, logs = model.loss(tokens, cond)
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert torch.isfinite(loss) and set(logs) >= {"loss"}
            assert all(torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad and math.isfinite(v) for v in logs.values())
        opt.zero_grad()
        for _ in range(3):
            model.loss(tokens, cond)[0].backward()
        missing = [n for n, p in model.named_parameters()
                   if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
        assert not missing, f"no gradient reaches {missing}"

    def test_generate_shapes_range_and_seed(self, case):
        model, cond = case
        draw = lambda seed: model.generate(cond, num_samples=4, generator=seeded(seed),
                                           steps=None if model.fixed_steps else 4)
        model.train()
        out = draw(0)
        assert model.training                                                       # mode left as it was
        assert isinstance(out, list) and len(out) == 1
        assert out[0].shape == (4, 4, 4) and out[0].dtype == torch.long
        assert out[0].min() >= 0 and out[0].max() < V
        assert torch.equal(draw(0)[0], out[0])                                      # same seed, same tokens
        assert not torch.equal(draw(1)[0], out[0])

    def test_guidance(self, case):
        model, cond = case
        if not model.conditioning.conditional:
            with pytest.raises(ValueError, match="cfg_scale"):
                model.generate(None, num_samples=2, cfg_scale=3.0)
            return
        out = model.generate(cond, num_samples=4, cfg_scale=3.0, top_k=8, top_p=0.9, temperature=0.8,
                             generator=seeded(0))
        assert out[0].shape == (4, 4, 4) and out[0].max() < V
        # a conditional model also samples unconditionally (null condition) when cond is None
        assert model.generate(None, num_samples=2, generator=seeded(0))[0].shape == (2, 4, 4)

    def test_known_raster_prefix_is_kept(self, case):
        model, cond = case
        given = random_tokens(seed=5)
        mask = torch.zeros(4, 4, 4, dtype=torch.bool)
        mask[:, :1] = True                 # first row ...
        mask[1, :2] = True                 # ... two rows in one sample, and a row and a half in another
        mask[2, 1, :2] = True
        out = model.generate(cond, known={"tokens": given, "mask": [mask]}, generator=seeded(2))[0]
        assert torch.equal(out[mask], given[0][mask])
        assert out.max() < V and out.min() >= 0

    def test_save_load_round_trip(self, case, tmp_path):
        model, cond = case
        model.eval()
        tokens = random_tokens()
        target = tmp_path / "ckpt"
        model.save_pretrained(target)
        model.save_pretrained(target)                                              # replaces in place
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]               # no temp dirs left
        meta = json.loads((target / "config.json").read_text())
        assert meta["family"] == model.family and meta["spec"]["codebook_size"] == V
        assert (target / "tokenizer.json").is_file() == (model.conditioning.uses_captions)
        loaded = load_generator(target)
        assert type(loaded) is type(model) and loaded.config == model.config
        assert torch.equal(loaded.logits(tokens, cond), model.logits(tokens, cond))
        cfg = 1.0 if not model.conditioning.conditional else 2.0
        draw = lambda m: m.generate(cond, num_samples=4, generator=seeded(3), cfg_scale=cfg)[0]
        assert torch.equal(draw(loaded), draw(model))
        if model.conditioning.uses_captions:                                        # the tokenizer came back too
            again = loaded.make_condition(captions=CAPTIONS)
            assert torch.equal(again.text_ids, cond.text_ids) and torch.equal(again.text_mask, cond.text_mask)
        assert type(model).from_pretrained(target, spec=spec()).family == model.family

    def test_checkpoints_that_do_not_fit(self, case, tmp_path):
        model, _ = case
        model.save_pretrained(tmp_path / "ckpt")
        with pytest.raises(ValueError, match="spec"):
            load_generator(tmp_path / "ckpt", spec=spec((8,)))
        other = next(c for f, c in FAMILIES.items() if f != model.family) if len(FAMILIES) > 1 else None
        if other is not None:
            with pytest.raises(ValueError, match=f"holds a '{model.family}' generator"):
                other.from_pretrained(tmp_path / "ckpt")
        meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
        meta["config"]["width"] = 64
        (tmp_path / "ckpt" / "config.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match="does not fit"):
            load_generator(tmp_path / "ckpt")
        with pytest.raises(FileNotFoundError, match="save_pretrained"):
            load_generator(tmp_path / "missing")

    def test_bf16_weights_and_autocast(self, case):
        model, cond = case
        tokens = random_tokens()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = model.loss(tokens, cond)
        loss.backward()
        assert torch.isfinite(loss)
        model.to(torch.bfloat16)
        loss, _ = model.loss(tokens, cond)
        assert torch.isfinite(loss.float())
        cfg = 1.0 if not model.conditioning.conditional else 2.0
        out = model.generate(cond, num_samples=4, cfg_scale=cfg, generator=seeded(0))[0]
        assert out.shape == (4, 4, 4) and 0 <= out.min() and out.max() < V

    def test_multi_scale_tokens(self, case, text_tokenizer):
        model, _ = case
        model = make(model.family, model.config.condition, text_tokenizer, scales=(1, 2, 4))
        cond = condition_for(model)
        tokens = random_tokens(scales=(1, 2, 4))
        loss, _ = model.loss(tokens, cond)
        assert torch.isfinite(loss)
        mask = [torch.ones(4, 1, 1, dtype=torch.bool), torch.ones(4, 2, 2, dtype=torch.bool),
                torch.zeros(4, 4, 4, dtype=torch.bool)]                            # coarse scales given
        out = model.generate(cond, known={"tokens": tokens, "mask": mask}, generator=seeded(0))
        assert [tuple(t.shape) for t in out] == [(4, 1, 1), (4, 2, 2), (4, 4, 4)]
        assert torch.equal(out[0], tokens[0]) and torch.equal(out[1], tokens[1])

    def test_bad_inputs_fail_with_a_fix(self, case):
        model, cond = case
        tokens = random_tokens()
        bad = [tokens[0].clone()]
        bad[0][0, 0, 0] = V
        with pytest.raises(ValueError, match=r"outside \[0, 15\]"):
            model.loss(bad, cond)
        with pytest.raises(ValueError, match=r"expected \(B, 4, 4\)"):
            model.loss([torch.zeros(4, 8, 8, dtype=torch.long)], cond)
        with pytest.raises(ValueError, match="wrap it"):
            model.loss(tokens[0], cond)
        with pytest.raises(ValueError, match="integer"):
            model.loss([tokens[0].float()], cond)
        with pytest.raises(ValueError, match="list of 1 token maps"):
            model.loss(tokens * 2, cond)
        with pytest.raises(ValueError, match="num_samples"):
            model.generate(None)
        # a random generator on another device than the model's is refused with the fix (a CPU
        # generator and a CUDA model; here a model on the meta device, as no CUDA is needed)
        with pytest.raises(ValueError, match=r"torch.Generator\(device='meta'\)"):
            copy.deepcopy(model).to("meta").generate(cond, num_samples=4, generator=torch.Generator())
        with pytest.raises(ValueError, match="batch sizes disagree"):
            model.generate(cond if cond is not None else None, num_samples=3,
                           known={"tokens": tokens, "mask": [torch.zeros(4, 4, 4, dtype=torch.bool)]})
        with pytest.raises(ValueError, match="known"):
            model.generate(cond, num_samples=4, known={"tokens": tokens})
        kind = model.config.condition        # the kind's name: the messages below are the kind's own
        labels = torch.tensor([0, 1, 2, 0])
        captions = Condition(captions=CAPTIONS)
        if kind == "none":
            with pytest.raises(ValueError, match="unconditional"):
                model.loss(tokens, labels)
        if kind == "class":
            with pytest.raises(ValueError, match="got a caption"):
                model.loss(tokens, {"text_ids": torch.zeros(4, 12, dtype=torch.long),
                                    "text_mask": torch.ones(4, 12, dtype=torch.bool)})
            with pytest.raises(ValueError, match=r"outside \[-1, 2\]"):
                model.loss(tokens, torch.tensor([0, 1, 2, 3]))
            with pytest.raises(ValueError, match="4 rows"):
                model.loss(random_tokens(batch=3), labels)
        if kind == "text":
            with pytest.raises(ValueError, match="got class labels"):
                model.loss(tokens, labels)
            with pytest.raises(ValueError, match=r"\(B, 12\)"):
                model.loss(tokens, {"text_ids": torch.zeros(4, 5, dtype=torch.long),
                                    "text_mask": torch.ones(4, 5, dtype=torch.bool)})
            with pytest.raises(ValueError, match="more than text_length"):
                model.make_condition(captions=["a " * 40])
            assert model.loss(tokens, captions)[0].isfinite()                       # raw strings work too
        else:
            with pytest.raises(ValueError, match="condition='text'"):
                model.loss(tokens, CAPTIONS)
        # make_condition takes what a dataset batch has and keeps the part the model uses
        made = model.make_condition(labels=[0, 1, 2, -1], captions=CAPTIONS)
        if kind == "none":
            assert made is None
        elif kind == "class":
            assert torch.equal(made.labels, torch.tensor([0, 1, 2, -1])) and made.text_ids is None
        else:
            assert made.labels is None and made.text_ids.shape == (4, 12)
            with pytest.raises(ValueError, match="pass captions"):
                model.make_condition(labels=[0, 1])
            # a bare string is one caption (not one per character), through either door
            one = model.make_condition(captions=CAPTIONS[0])
            assert one.text_ids.shape == (1, 12) and torch.equal(one.text_ids, made.text_ids[:1])
            assert model.generate(CAPTIONS[0], steps=None if model.fixed_steps else 2)[0].shape[0] == 1
            with pytest.raises(ValueError, match="captions must be strings"):
                model.make_condition(captions=["a red circle", 3])


def test_build_errors(text_tokenizer):
    with pytest.raises(ValueError, match="unknown generator family"):
        build_generator("gan", spec())
    with pytest.raises(ValueError, match="num_classes"):
        build_generator("ar", spec(), {"condition": "class"})
    with pytest.raises(ValueError, match="text tokenizer"):
        build_generator("maskgit", spec(), {"condition": "text"})
    with pytest.raises(ValueError, match="unknown MaskGITConfig fields"):
        build_generator("maskgit", spec(), {"widht": 32})
    with pytest.raises(ValueError, match="lacks"):
        build_generator("ar", {"codebook_size": 16}, {"condition": "none"})
    with pytest.raises(ValueError, match="condition='text'"):
        build_generator("ar", spec(), {"condition": "none"}, text_tokenizer=text_tokenizer)


def test_config_overrides_and_presets():
    from tokgen.generators import SIZES, size_preset
    model = build_generator("maskgit", spec(), {"condition": "none"}, **size_preset("tiny"))
    assert (model.config.width, model.config.depth) == (64, 2) and "small" in SIZES
