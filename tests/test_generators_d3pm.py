"""D3PM / multinomial diffusion: the structured closed forms against explicit K x K matrices
(rows sum to 1, Qbar_t = Q_1 ... Q_t, the posterior by Bayes' rule, the model's step as the sum
over x_0, skipping steps), the absorbing chain ends all-mask, the bound is log2 K bits per token
at initialisation, sampling (seeds, known tokens, guidance in one batched forward), and a tiny
absorbing model that learns a toy conditional distribution."""

from __future__ import annotations

import math

import pytest
import torch

from tokgen.generators import D3PMGenerator, DiscreteDiffusion, build_generator, condition_kind, diffusion_alpha_bar
from tokgen.generators.d3pm import D3PMConfig

V = 6
KINDS = [("absorbing", "linear"), ("uniform", "cosine"), ("absorbing", "cosine"), ("uniform", "linear")]


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def spec(side=4, codes=V):
    return {"codebook_size": codes, "scales": [side], "image_size": 4 * side, "channels": 3}


def make(transition="absorbing", condition="class", seed=0, **kw) -> D3PMGenerator:
    torch.manual_seed(seed)
    config = dict(width=32, depth=2, heads=4, condition=condition, num_classes=3 if condition_kind(condition).uses_labels else 0,
                  transition=transition, timesteps=12, **kw)
    return build_generator("d3pm", spec(), config).eval()


# ---------------------------------------------------------------------- explicit matrices (the reference)

def Q(diff: DiscreteDiffusion, t: int) -> torch.Tensor:
    """Q_t = (1 - beta_t) I + beta_t 1 pi^T, built explicitly: (S, S) float64, row = from, column = to."""
    S, beta = diff.num_states, diff.beta(t)
    if diff.kind == "uniform":
        return (1 - beta) * torch.eye(S, dtype=torch.float64) + beta / S * torch.ones(S, S, dtype=torch.float64)
    m = torch.zeros(S, S, dtype=torch.float64)
    m[:, diff.mask_id] = beta                                 # every state moves to the mask with prob. beta
    return (1 - beta) * torch.eye(S, dtype=torch.float64) + m


def Q_product(diff: DiscreteDiffusion, s: int, t: int) -> torch.Tensor:
    """Q_{s+1} Q_{s+2} ... Q_t (identity when s = t)."""
    out = torch.eye(diff.num_states, dtype=torch.float64)
    for i in range(s + 1, t + 1):
        out = out @ Q(diff, i)
    return out


@pytest.mark.parametrize("kind,schedule", KINDS)
def test_transition_rows_sum_to_one_and_closed_form_equals_the_product(kind, schedule):
    diff = DiscreteDiffusion(kind, V, 10, schedule)
    S = diff.num_states
    for t in range(1, 11):
        q = Q(diff, t)
        assert (q >= 0).all() and torch.allclose(q.sum(1), torch.ones(S, dtype=torch.float64))
        x0 = torch.arange(S)[None]                                             # every start state: (1, S)
        closed = diff.q_probs(x0, torch.tensor([t]))[0]                        # (S, S): row = x_0
        assert torch.allclose(closed, Q_product(diff, 0, t), atol=1e-12)
        assert torch.allclose(closed.sum(1), torch.ones(S, dtype=torch.float64))
    assert float(diff.alpha_bar[0]) == 1.0 and float(diff.alpha_bar[-1]) == 0.0


def test_absorbing_linear_schedule_is_one_over_T_minus_t_plus_one():
    T = 10
    diff = DiscreteDiffusion("absorbing", V, T, "linear")
    assert all(math.isclose(diff.beta(t), 1 / (T - t + 1)) for t in range(1, T + 1))
    assert torch.allclose(diffusion_alpha_bar("linear", T), 1 - torch.arange(T + 1, dtype=torch.float64) / T)
    cos = diffusion_alpha_bar("cosine", T)
    assert (cos[1:] < cos[:-1]).all() and cos[0] == 1 and cos[-1] == 0


def test_absorbing_chain_at_T_is_all_mask():
    diff = DiscreteDiffusion("absorbing", V, 10, "cosine")
    x0 = torch.randint(0, V, (8, 16), generator=seeded(0))
    T = torch.full((8,), 10)
    assert (diff.q_sample(x0, T, seeded(1)) == V).all()
    assert (diff.q_probs(x0, T)[..., V] == 1).all()
    assert (diff.prior(8, 16, torch.device("cpu")) == V).all()
    assert torch.equal(diff.prior_kl(x0), torch.zeros(8, 16))                   # the prior term vanishes
    # and a fraction t/T of the tokens is masked at step t (linear schedule)
    lin = DiscreteDiffusion("absorbing", V, 10, "linear")
    big = torch.randint(0, V, (200, 100), generator=seeded(2))
    frac = (lin.q_sample(big, torch.full((200,), 3), seeded(3)) == V).double().mean()
    assert abs(frac - 0.3) < 0.01


@pytest.mark.parametrize("kind,schedule", KINDS[:2])
def test_q_sample_follows_the_closed_form(kind, schedule):
    diff = DiscreteDiffusion(kind, V, 10, schedule)
    x0 = torch.full((4000, 1), 2)
    t = torch.full((4000,), 4)
    counts = torch.bincount(diff.q_sample(x0, t, seeded(0)).flatten(), minlength=diff.num_states).double() / 4000
    assert torch.allclose(counts, diff.q_probs(x0[:1], t[:1])[0, 0], atol=0.03)


@pytest.mark.parametrize("kind,schedule", KINDS)
def test_posterior_and_skips_equal_bayes_rule_from_the_explicit_matrices(kind, schedule):
    """q(x_s | x_t, x_0) = q(x_t | x_s) q(x_s | x_0) / q(x_t | x_0) for every x_0, x_t and s < t,
    s = t - 1 being the one-step posterior."""
    T = 8
    diff = DiscreteDiffusion(kind, V, T, schedule)
    S = diff.num_states
    x0, xt = torch.meshgrid(torch.arange(V), torch.arange(S), indexing="ij")
    x0, xt = x0.reshape(1, -1), xt.reshape(1, -1)                               # every pair: (1, V*S)
    for t in range(1, T + 1):
        for s in range(t):
            step, bar_s, bar_t = Q_product(diff, s, t), Q_product(diff, 0, s), Q_product(diff, 0, t)
            ours = diff.log_step(torch.nn.functional.one_hot(x0, S).double().log(), xt, torch.tensor([t]),
                                 torch.tensor([s])).exp()[0]                   # (V*S, S)
            for i, (a, b) in enumerate(zip(x0[0].tolist(), xt[0].tolist())):
                if bar_t[a, b] == 0:
                    continue                                                    # x_t impossible from x_0
                bayes = step[:, b] * bar_s[a, :] / bar_t[a, b]                  # over x_s
                assert torch.allclose(ours[i].double(), bayes, atol=1e-5), (t, s, a, b)


@pytest.mark.parametrize("kind,schedule", KINDS[:2])
def test_model_step_is_the_sum_over_x0_and_skipping_gives_valid_distributions(kind, schedule):
    """p(x_s | x_t) ∝ sum_x0 q(x_s, x_t | x_0) p(x_0 | x_t), brute force over x_0 with the explicit
    matrices, for any s < t (skips); every result is a distribution."""
    T = 8
    diff = DiscreteDiffusion(kind, V, T, schedule)
    S = diff.num_states
    p0 = torch.softmax(torch.randn(1, S, V, generator=seeded(0), dtype=torch.float64) * 2, -1)   # p(x_0 | x_t) per x_t
    log_p0 = diff.log_x0(p0.log())                                               # (1, S, S), mask column -inf
    xt = torch.arange(S)[None]
    for t in range(1, T + 1):
        for s in range(t):
            ours = diff.log_step(log_p0, xt, torch.tensor([t]), torch.tensor([s])).exp()[0].double()   # (S, S)
            step, bar_s = Q_product(diff, s, t), Q_product(diff, 0, s)
            for b in range(S):
                joint = sum(p0[0, b, a] * bar_s[a, :] * step[:, b] for a in range(V))   # over x_s
                if joint.sum() == 0:
                    continue                                                    # x_t = b impossible at t (unmasked at T)
                assert torch.isfinite(ours[b]).all() and (ours[b] >= 0).all()
                assert math.isclose(ours[b].sum().item(), 1.0, abs_tol=1e-5)
                assert torch.allclose(ours[b], joint / joint.sum(), atol=1e-5), (t, s, b)
            if kind == "absorbing" and t < T:
                assert torch.allclose(ours[:V], torch.eye(S, dtype=torch.float64)[:V])   # unmasked tokens stay
            if kind == "absorbing":
                assert (ours[V, V] == 0) if s == 0 else (ours[V, V] > 0)        # nothing stays masked at the end


def test_vb_terms_vanish_for_a_perfect_model_and_gradients_are_finite():
    diff = DiscreteDiffusion("absorbing", V, 10, "linear")
    x0 = torch.randint(0, V, (4, 16), generator=seeded(0))
    t = torch.tensor([1, 4, 7, 10])
    xt = diff.q_sample(x0, t, seeded(1))
    perfect = torch.nn.functional.one_hot(x0, V).float() * 50                  # p(x_0 | x_t) ~ the truth
    assert diff.vb_terms(x0, xt, t, diff.log_x0(perfect)).abs().max() < 1e-6
    logits = torch.randn(4, 16, V, requires_grad=True)
    diff.vb_terms(x0, xt, t, diff.log_x0(logits)).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("kind,schedule", KINDS[:3])
def test_sample_step_draws_from_the_model_posterior(kind, schedule):
    """x_s ~ p(x_s | x_t): the frequencies of 20,000 draws per (x_t, t, s) match exp(log_step);
    the absorbing kind draws by its closed form (a coin per masked token), not from log_step."""
    T = 8
    diff = DiscreteDiffusion(kind, V, T, schedule)
    S, n = diff.num_states, 20_000
    log_p0 = diff.log_x0(torch.randn(1, 1, V, generator=seeded(0), dtype=torch.float64).float() * 2).expand(1, n, S)
    for x_t in sorted({0, S - 1}):
        for t, s in ((T, T - 1), (5, 2), (3, 0)):
            xt, tt, ss = torch.full((1, n), x_t), torch.tensor([t]), torch.tensor([s])
            want = diff.log_step(log_p0[:, :1], xt[:, :1], tt, ss).exp()[0, 0].double()     # (S,)
            if want.isnan().any():
                continue                                                        # x_t impossible at t (unmasked at T)
            got = torch.bincount(diff.sample_step(log_p0, xt, tt, ss, seeded(1)).flatten(), minlength=S).double() / n
            assert torch.allclose(got, want, atol=0.012), (x_t, t, s, got, want)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_absorbing_vb_closed_form_equals_the_kl_of_the_two_posteriors(schedule):
    """The absorbing kind's weighted cross-entropy is the KL computed from both posteriors, at
    every t (t = 1 included: -log p(x_0 | x_1)), for masked and unmasked tokens alike."""
    T = 12
    diff = DiscreteDiffusion("absorbing", V, T, schedule)
    x0 = torch.randint(0, V, (T, 64), generator=seeded(0))
    t = torch.arange(1, T + 1)
    xt = diff.q_sample(x0, t, seeded(1))
    log_p0 = diff.log_x0(torch.randn(T, 64, V, generator=seeded(2)) * 3)
    closed, general = diff.vb_terms(x0, xt, t, log_p0), diff._vb_terms_by_posteriors(x0, xt, t, log_p0)
    assert (xt == diff.mask_id).any() and (xt != diff.mask_id).any()
    assert torch.allclose(closed, general, atol=1e-5, rtol=1e-4), (closed - general).abs().max()


@pytest.mark.parametrize("transition", ["absorbing", "uniform"])
def test_hybrid_loss_is_vb_plus_lambda_ce_with_finite_gradients(transition):
    model = make(transition, hybrid_weight=0.25).train()
    tokens = [torch.randint(0, V, (8, 4, 4), generator=seeded(0))]
    loss, logs = model.loss(tokens, torch.tensor([0, 1, 2, -1] * 2))
    assert math.isclose(logs["loss"].item(), logs["loss_vb"].item() + 0.25 * logs["loss_ce"].item(), rel_tol=1e-5)
    assert logs["loss_vb"] >= 0 and math.isclose(logs["elbo_bits_estimate"].item(), 12 * logs["loss_vb"].item() / math.log(2))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_absorbing_loss_ignores_the_prediction_at_unmasked_tokens():
    """The absorbing reverse step carries unmasked tokens over, so neither L_vb nor the x_0
    cross-entropy may train the prediction there (MDLM's carry-over unmasking); the uniform kind
    reads the prediction at every token and trains it there."""
    for transition in ("absorbing", "uniform"):
        model = make(transition, condition="none").train()
        seen = {}
        model.tok_emb.register_forward_hook(lambda m, args, out: seen.update(x_t=args[0]))

        def keep_logits(module, args, out):
            out.retain_grad()
            seen["logits"] = out

        model.head.register_forward_hook(keep_logits)
        tokens = [torch.randint(0, V, (16, 4, 4), generator=seeded(0))]
        loss, _ = model.loss(tokens)
        loss.backward()
        grad = seen["logits"].grad.abs().sum(-1)                                # (B, N)
        if transition == "absorbing":
            masked = seen["x_t"] == model.diffusion.mask_id
            assert masked.any() and (~masked).any()
            assert grad[~masked].max() == 0 and grad[masked].min() > 0
        else:
            assert grad.min() > 0


# ---------------------------------------------------------------------- the bound

@pytest.mark.parametrize("transition", ["absorbing", "uniform"])
def test_bound_at_initialisation_is_log2_K_bits_per_token(transition):
    """With p(x_0 | x_t) exactly uniform the reverse chain is the exact reversal of the forward
    chain started from uniform x_0, so E[bound] = log2 K exactly, for both transitions.  The
    estimate draws one x_t per term: its std is ~0.5 bits per image (uniform; 0.37 absorbing),
    so ~0.02 bits for the mean of 512 images; at init the head's logits have std ~0.1 around
    uniform (a KL of ~0.005 nats).  Tolerance 0.12 bits (3%), about 5 standard deviations."""
    K = 16
    torch.manual_seed(0)
    model = build_generator("d3pm", spec(codes=K), dict(width=32, depth=2, heads=4, condition="none",
                                                        transition=transition, timesteps=20))
    tokens = [torch.randint(0, K, (512, 4, 4), generator=seeded(0))]
    bits = model.elbo_bits(tokens, generator=seeded(1))
    assert bits.shape == (512,) and torch.isfinite(bits).all()
    assert abs(bits.mean().item() - math.log2(K)) < 0.03 * math.log2(K), bits.mean().item()
    assert model.nll_bits == model.elbo_bits                                   # the family's likelihood figure


# ---------------------------------------------------------------------- sampling

@pytest.mark.parametrize("transition", ["absorbing", "uniform"])
def test_sampling_is_seeded_and_skips_any_number_of_steps(transition):
    model = make(transition)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    labels = torch.tensor([0, 1, 2, -1])
    for steps in (1, 5, 12):
        out = model.generate(labels, steps=steps, generator=seeded(0))[0]
        assert out.shape == (4, 4, 4) and out.min() >= 0 and out.max() < V       # no mask left
        assert torch.equal(model.generate(labels, steps=steps, generator=seeded(0))[0], out)
    assert not torch.equal(model.generate(labels, generator=seeded(1))[0], model.generate(labels, generator=seeded(2))[0])
    greedy = model.generate(labels, temperature=0.0, top_k=2, generator=seeded(3))[0]
    assert greedy.max() < V
    with pytest.raises(ValueError, match=r"steps must be in \[1, 12\]"):
        model.generate(labels, steps=13)
    with pytest.raises(ValueError, match="steps"):
        make(steps=20)


@pytest.mark.parametrize("transition", ["absorbing", "uniform"])
def test_known_tokens_never_change(transition):
    model = make(transition, condition="none")
    given = [torch.randint(0, V, (4, 4, 4), generator=seeded(5))]
    region = torch.zeros(4, 4, 4, dtype=torch.bool)
    region[:, 1:3, 1:3] = True                                                  # inpaint around a known centre
    region[0] = True                                                            # one row fully known
    seen = []
    original = model.forward
    model.forward = lambda x, t, state: (seen.append(x.clone()), original(x, t, state))[1]
    out = model.generate(known={"tokens": given, "mask": [region]}, steps=6, generator=seeded(0))[0]
    assert torch.equal(out[region], given[0][region]) and torch.equal(out[0], given[0][0])
    flat, known = given[0].flatten(1), region.flatten(1)
    assert len(seen) == 6 and all(torch.equal(x[known], flat[known]) for x in seen)   # clamped at every step


def test_guidance_is_one_batched_forward_per_step_and_changes_samples():
    model = make("absorbing")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    calls = []
    hook = model.core.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    labels = torch.tensor([0, 1, 2])
    guided = model.generate(labels, steps=5, cfg_scale=4.0, generator=seeded(0))[0]
    assert calls == [6] * 5                                                      # [cond; null] rows, one pass
    calls.clear()
    plain = model.generate(labels, steps=5, generator=seeded(0))[0]
    assert calls == [3] * 5
    hook.remove()
    assert not torch.equal(guided, plain)


def test_config_errors():
    with pytest.raises(ValueError, match="transition"):
        make("gaussian")
    with pytest.raises(ValueError, match="noise_schedule"):
        make(noise_schedule="sigmoid")
    assert D3PMConfig().transition == "absorbing" and D3PMConfig().schedule == "cosine"
    assert D3PMConfig(noise_schedule="auto").schedule == "linear"          # what older checkpoints meant
    assert D3PMConfig(transition="uniform", noise_schedule="auto").schedule == "cosine"


# ---------------------------------------------------------------------- learning

@pytest.mark.slow   # ~25 s; the default suite's learning checks are tests/test_train_generator.py's toy runs
def test_tiny_absorbing_d3pm_learns_a_class_conditional_distribution():
    """Each of 3 classes is a 50/50 mixture of two fixed 4x4 maps over 6 codes: 1 bit per image,
    1/16 bit per token.  Ancestral sampling reveals tokens independently within a step, so two
    tokens of different modes revealed together mix the modes; T = 64 steps for 16 tokens keeps
    that rare."""
    patterns = torch.randint(0, V, (3, 2, 4, 4), generator=seeded(0))
    torch.manual_seed(0)
    model = build_generator("d3pm", spec(), dict(width=64, depth=2, heads=4, condition="class", num_classes=3,
                                                 transition="absorbing", timesteps=64))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    data, bits = seeded(1), []
    for _ in range(1000):
        labels = torch.randint(0, 3, (32,), generator=data)
        which = torch.randint(0, 2, (32,), generator=data)
        loss, logs = model.loss([patterns[labels, which]], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        bits.append(logs["elbo_bits_estimate"])
    model.eval()
    labels = torch.arange(3).repeat_interleave(20)
    out = model.generate(labels, generator=seeded(2))[0]
    match = (out[:, None] == patterns[labels]).flatten(2).all(-1)                # (60, 2)
    assert sum(bits[:20]) / 20 > 2.0 and sum(bits[-50:]) / 50 < 0.3             # the bound falls from ~log2 6
    assert match.any(1).float().mean() >= 0.75                                    # samples follow the label
    assert match[:, 0].sum() >= 8 and match[:, 1].sum() >= 8                      # both modes
    bound = model.elbo_bits([patterns[labels[:12], 0]], labels[:12], generator=seeded(3)).mean().item()
    assert bound < 0.3                                                            # near the 1/16 bit it can reach
