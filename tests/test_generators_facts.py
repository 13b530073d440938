"""What every family declares about itself (sampling steps, likelihood, the `known` masks it
takes, guidance, its tokenizer) and what every condition kind declares (its embedding, its null
condition), held to what the models do: `tokgen compare`, the pipeline and the benchmark act on
these facts instead of tables keyed by family or condition name."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from tokgen.generators import (CONDITION_KINDS, CONDITIONS, FAMILIES, Generator, MaskGITGenerator, build_generator,
                               condition_kind, register_family, train_text_tokenizer)

V = 8
SCALES = (1, 2, 4)
CAPTIONS = ["a red circle", "a blue square", "", "a green triangle at the top"]
# tiny models; VAR builds its scale inputs without a tokenizer, D3PM runs a short chain
OVERRIDES = {"var": dict(scale_inputs="learned"), "d3pm": dict(timesteps=10)}
# the declarations `tokgen compare`, the pipeline and the benchmark were written against
DECLARED = {
    "ar": dict(display_name="AR", default_steps=None, fixed_steps="one step per token (KV cache)", compare_steps=(), likelihood="exact",
               needs_multiscale=False, known_support="raster-prefix", default_cfg_scale=1.5, default_top_p=0.9),
    "maskgit": dict(display_name="MaskGIT", default_steps=12, fixed_steps=None, compare_steps=(8,), likelihood=None,
                    needs_multiscale=False, known_support="any", default_cfg_scale=3.0, default_top_p=None),
    "var": dict(display_name="VAR", default_steps=None, fixed_steps="one step per scale", compare_steps=(), likelihood="exact",
                needs_multiscale=True, known_support="any", default_cfg_scale=3.0, default_top_p=None),
    "d3pm": dict(display_name="D3PM", default_steps=100, fixed_steps=None, compare_steps=(16, 64), likelihood="bound",
                 needs_multiscale=False, known_support="any", default_cfg_scale=3.0, default_top_p=None),
}
FAMILY_NAMES = sorted(FAMILIES)


@pytest.fixture(scope="module")
def text_tokenizer():
    return train_text_tokenizer(CAPTIONS * 10, vocab_size=280)


def make(family: str, condition: str = "none", *, scales=SCALES, codes: int = V, text_tokenizer=None,
         perturb: float = 0.0, **overrides) -> Generator:
    torch.manual_seed(0)
    kind = condition_kind(condition)
    config = dict(width=32, depth=2, heads=4, condition=condition, num_classes=3 if kind.uses_labels else 0,
                  text_length=16, text_depth=1, **{**OVERRIDES.get(family, {}), **overrides})
    spec = {"codebook_size": codes, "scales": list(scales), "image_size": 4 * max(scales), "channels": 3}
    model = build_generator(family, spec, config, text_tokenizer=text_tokenizer if kind.uses_captions else None)
    if perturb:
        with torch.no_grad():    # away from the init: adaLN-Zero and small weights make every input look alike
            for p in model.parameters():
                p.add_(torch.randn_like(p) * perturb)
    return model.eval()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def core_passes(model: Generator, **kwargs) -> int:
    """How many times generate(**kwargs) runs the model's transformer core."""
    calls = []
    handle = model.core.register_forward_hook(lambda *_: calls.append(1))
    try:
        model.generate(num_samples=2, generator=seeded(0), **kwargs)
    finally:
        handle.remove()
    return len(calls)


# ---------------------------------------------------------------------- the declarations

@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_declares_its_facts(family):
    cls = FAMILIES[family]
    assert (cls.default_steps is None) != (cls.fixed_steps is None)         # steps: a choice or fixed
    if cls.fixed_steps is None:
        assert isinstance(cls.default_steps, int) and cls.default_steps >= 1
        assert cls.compare_steps and all(isinstance(s, int) and s >= 1 for s in cls.compare_steps)
    else:
        assert isinstance(cls.fixed_steps, str) and cls.compare_steps == ()
    assert cls.likelihood in (None, "exact", "bound")
    assert isinstance(cls.needs_multiscale, bool) and cls.known_support in ("any", "raster-prefix")
    assert cls.default_cfg_scale >= 1.0 and (cls.default_top_p is None or 0 < cls.default_top_p <= 1)
    if family in DECLARED:
        assert {k: getattr(cls, k) for k in DECLARED[family]} == DECLARED[family]


def test_facts_that_contradict_each_other_are_refused_at_registration():
    class TwoKindsOfSteps(MaskGITGenerator):
        fixed_steps = "one step per token"                                  # and default_steps from MaskGIT

    class NoLikelihoodMethod(MaskGITGenerator):
        likelihood = "exact"

    class UnknownMasks(MaskGITGenerator):
        known_support = "left-half"

    for name, cls, problem in [("two-steps", TwoKindsOfSteps, "exactly one of default_steps"),
                               ("no-nll", NoLikelihoodMethod, "nll_bits"),
                               ("masks", UnknownMasks, "known_support must be one of")]:
        with pytest.raises(ValueError, match=problem):
            register_family(name)(cls)
        assert name not in FAMILIES


# ---------------------------------------------------------------------- steps

@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_generate_runs_the_steps_the_family_declares(family):
    model = make(family)
    n = model.sampling_steps()
    assert core_passes(model) == n                                           # steps=None: the declared default
    if model.fixed_steps:
        # the count is fixed: AR one pass per token (KV cache), VAR one per scale
        assert n == {"ar": model.spec.tokens_per_image, "var": len(model.spec.scales)}.get(family, n)
        assert model.sampling_steps(n) == n
        same = lambda steps: model.generate(num_samples=2, steps=steps, generator=seeded(1))   # noqa: E731
        assert all(torch.equal(a, b) for a, b in zip(same(None), same(n)))  # its own count is the same call
        for wrong in (n - 1, n + 1):
            with pytest.raises(ValueError, match=f"fixed step count \\({re.escape(model.fixed_steps)}\\).*None or {n}"):
                model.generate(num_samples=2, steps=wrong)
    else:
        assert core_passes(model, steps=3) == 3 == model.sampling_steps(3)
        with pytest.raises(ValueError, match="steps must be"):
            model.generate(num_samples=2, steps=0)


@pytest.mark.parametrize("family", [f for f in FAMILY_NAMES if FAMILIES[f].fixed_steps is None])
def test_default_steps_and_the_compare_sweep_fit_the_default_config(family):
    """default_steps is what a model of the family's default config samples with, and every count
    `tokgen compare` sweeps is one it accepts."""
    model = build_generator(family, {"codebook_size": V, "scales": [4], "image_size": 16, "channels": 3},
                            dict(width=32, depth=1, heads=4, condition="none"))
    assert model.sampling_steps() == model.default_steps
    assert [model.sampling_steps(s) for s in model.compare_steps] == list(model.compare_steps)


# ---------------------------------------------------------------------- likelihood

def every_token_map(scales, codes: int = 2) -> tuple[list[torch.Tensor], int]:
    """All codes ** N token sequences of a spec, as token maps."""
    n = sum(s * s for s in scales)
    seqs = torch.tensor(list(itertools.product(range(codes), repeat=n)))
    maps, lo = [], 0
    for s in scales:
        maps.append(seqs[:, lo:lo + s * s].reshape(-1, s, s))
        lo += s * s
    return maps, n


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_likelihood_is_what_the_family_declares(family):
    """Over every sequence of a 2-code, 5-token spec: an exact NLL's probabilities sum to 1, a
    bound's to less; a family without one has neither method."""
    cls = FAMILIES[family]
    if cls.likelihood is None:
        assert not hasattr(cls, "nll_bits") and not hasattr(cls, "elbo_bits")
        return
    model = make(family, scales=(1, 2), codes=2, perturb=0.3).double()
    maps, n = every_token_map((1, 2))
    if cls.likelihood == "exact":
        bits = model.nll_bits(maps)
    else:
        assert cls.nll_bits is cls.elbo_bits                                  # the one figure, by either name
        bits = model.elbo_bits(maps, generator=seeded(0))
    total = float((2.0 ** (-n * bits.double())).sum())
    assert bits.shape == (2 ** n,) and (bits > 0).all()
    if cls.likelihood == "exact":
        assert total == pytest.approx(1.0, abs=1e-5)
    else:
        assert total < 1.0


# ---------------------------------------------------------------------- known tokens

@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_known_masks_the_family_supports_are_kept_and_others_refused(family):
    model = make(family)
    g = seeded(4)
    given = [torch.randint(0, V, (2, s, s), generator=g) for s in SCALES]
    # the finest map's last row and one token in its first: not a raster prefix (coarse scales unknown)
    scattered = [torch.zeros(2, s, s, dtype=torch.bool) for s in SCALES]
    scattered[-1][:, -1] = True
    scattered[-1][0, 0, 2] = True
    prefix = [torch.ones(2, 1, 1, dtype=torch.bool), torch.zeros(2, 2, 2, dtype=torch.bool),
              torch.zeros(2, 4, 4, dtype=torch.bool)]
    prefix[1][0, 0] = True                                                   # rows of different lengths
    masks = [prefix] + ([scattered] if model.known_support == "any" else [])
    for mask in masks:
        out = model.generate(known={"tokens": given, "mask": mask}, generator=seeded(5))
        assert all(torch.equal(o[m], t[m]) for o, t, m in zip(out, given, mask))
    if model.known_support == "raster-prefix":
        with pytest.raises(ValueError, match="raster prefix only.*use one of \\[.*'maskgit'"):
            model.generate(known={"tokens": given, "mask": scattered})


# ---------------------------------------------------------------------- guidance and condition kinds

CASES = [(f, c) for f in FAMILY_NAMES for c in CONDITIONS]


@pytest.mark.parametrize("family,condition", CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_the_model_is_built_as_its_condition_kind_says(family, condition, text_tokenizer):
    model = make(family, condition, text_tokenizer=text_tokenizer, perturb=0.3).double()
    kind = model.conditioning
    assert type(kind) is condition_kind(condition) and kind.name == model.config.condition
    assert (model.core.blocks[0].cross is not None) == kind.cross_attention
    assert (getattr(model, "class_emb", None) is not None) == kind.uses_labels
    assert (model.text_tokenizer is not None) == kind.uses_captions
    assert model.resolve_cfg_scale() == (model.default_cfg_scale if kind.conditional else 1.0)
    assert model.resolve_cfg_scale(2) == 2.0
    draw = lambda cfg: model.generate(None, num_samples=2, cfg_scale=cfg, generator=seeded(6))   # noqa: E731
    out = draw(model.resolve_cfg_scale())                                    # the default always samples
    assert out[-1].shape == (2, 4, 4)
    if kind.conditional:
        # guidance mixes in the null condition that cond=None samples with: guiding the null by
        # itself changes nothing, at any scale
        assert all(torch.equal(a, b) for a, b in zip(draw(3.0), draw(1.0)))


@pytest.mark.parametrize("condition", CONDITIONS)
def test_each_kind_embeds_what_it_declares(condition, text_tokenizer):
    model = make("d3pm", condition, text_tokenizer=text_tokenizer)
    kind = model.conditioning
    cond = model._condition(model.make_condition(labels=[0, 1, 2, -1], captions=CAPTIONS))
    assert (cond is None) == (not kind.conditional)
    state, null = kind.embed(model, cond, 4, None), kind.null_state(model, 4)
    for s in (state, null):
        assert (s.vector is not None) == kind.adaln and (s.context is not None) == kind.cross_attention
        assert s.vector is None or s.vector.shape == (4, 32)
    if kind.conditional:
        assert not torch.equal(state.vector[:3], null.vector[:3])            # the condition is seen
        drop = torch.ones(4, dtype=torch.bool)                               # dropped rows: the null
        assert torch.allclose(kind.embed(model, cond, 4, drop).vector, null.vector)


def test_condition_kinds_by_name():
    assert CONDITIONS == tuple(CONDITION_KINDS) and set(CONDITIONS) == {"none", "class", "text"}
    assert [condition_kind(c).uses_labels for c in ("none", "class", "text")] == [False, True, False]
    assert [condition_kind(c).uses_captions for c in ("none", "class", "text")] == [False, False, True]
    assert [condition_kind(c).conditional for c in ("none", "class", "text")] == [False, True, True]
    with pytest.raises(ValueError, match=r"condition must be one of \('none', 'class', 'text'\), got 'caption'"):
        condition_kind("caption")
    with pytest.raises(ValueError, match="condition must be one of"):
        build_generator("maskgit", {"codebook_size": V, "scales": [4], "image_size": 16, "channels": 3},
                        {"condition": "labels"})
    with pytest.raises(ValueError, match="text_length must be >= 1"):
        build_generator("maskgit", {"codebook_size": V, "scales": [4], "image_size": 16, "channels": 3},
                        {"condition": "text", "text_length": 0},
                        text_tokenizer=train_text_tokenizer(CAPTIONS * 4, vocab_size=280))
