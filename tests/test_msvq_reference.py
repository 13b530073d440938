"""MultiScaleVQ against the reference: VAR's phi selection (FoundationVision/VAR, models/quant.py,
`PhiPartiallyShared` / `PhiNonShared`), and a training forward that reconstructs every scale with
the codes that chose its ids (the codebook before this batch's EMA step / dead-code restarts)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from einops import rearrange

from tokgen.tokenizers_vq import MultiScaleVQ
from tokgen.tokenizers_vq.quantizers.msvq import phi_indices


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------- phi selection

def var_phi_indices(num_scales: int, num_phis: int) -> list[int]:
    """VAR's rule, transcribed: ticks = linspace(1/3/n, 1-1/3/n, n) if n == 4 else
    linspace(1/2/n, 1-1/2/n, n); scale k takes argmin |ticks - k/(K-1)| (first on ties)."""
    n = num_phis
    ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n == 4 else np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)
    return [int(np.argmin(np.abs(ticks - k / (num_scales - 1)))) for k in range(num_scales)]


# Written out by hand from VAR's rule (ticks in the comments; position k/(K-1)).
VAR_CASES = {
    # ticks 1/6, 1/2, 5/6; positions 0, .11, .22, .33, .44, .56, .67, .78, .89, 1 (VAR's 10 scales)
    (10, 3): [0, 0, 0, 0, 1, 1, 1, 2, 2, 2],
    # ticks 1/12, 13/36, 23/36, 11/12 (n == 4 keeps the 1/(3n) margin)
    (10, 4): [0, 0, 1, 1, 1, 2, 2, 3, 3, 3],
    # positions 0, .2, .4, .6, .8, 1
    (6, 4): [0, 0, 1, 2, 3, 3],
    # ticks 1/12, 3/12, ..., 11/12
    (6, 6): [0, 1, 2, 3, 4, 5],
    # ticks .1, .3, .5, .7, .9: .2 and .4 sit between two ticks; in float64 linspace .3 is
    # 0.30000000000000004, so .2 goes to tick 0 and .4 to tick 1 (argmin keeps the first of equals)
    (6, 5): [0, 0, 1, 2, 3, 4],
    # ticks 1/12, 3/12, ..., 11/12; positions k/9
    (10, 6): [0, 0, 1, 1, 2, 3, 3, 4, 5, 5],
    # ticks 1/6, 1/2, 5/6; positions k/12
    (13, 3): [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2],
    # ticks .25, .75
    (10, 2): [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
    # one phi: tick .5, every scale takes it
    (10, 1): [0] * 10,
}


@pytest.mark.parametrize("case", sorted(VAR_CASES), ids=lambda c: f"K{c[0]}-n{c[1]}")
def test_phi_indices_match_var_by_hand(case):
    K, n = case
    assert var_phi_indices(K, n) == VAR_CASES[case]          # the hand-derived list is VAR's rule
    assert phi_indices(K, n) == VAR_CASES[case]


def test_phi_indices_match_var_on_a_grid():
    for K in range(2, 17):
        for n in range(1, 11):
            assert phi_indices(K, n) == var_phi_indices(K, n), (K, n)
    assert phi_indices(1, 4) == [0]                            # one scale (VAR would divide by zero)


def test_msvq_uses_var_phis_for_its_scales():
    q = MultiScaleVQ(8, 16, [1, 2, 3, 4, 5, 6, 8, 10, 13, 16], phi_count=3, kmeans_init=False)
    assert q.phi_of_scale == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


# ---------------------------------------------------------------------- codes of a training step

def moving_batch(n: int = 8, dim: int = 8, size: int = 4, seed: int = 0) -> torch.Tensor:
    """Latents far from the random initial codebook, so one EMA step moves the codes a lot."""
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(n, dim, size, size, generator=g) + 5.0


def rebuild(q: MultiScaleVQ, codebook: torch.Tensor, indices: list[torch.Tensor]) -> torch.Tensor:
    """f_hat from the ids, reading the codes from `codebook` (V, d) instead of the live one."""
    f_hat = 0
    for k, ids in enumerate(indices):
        codes = rearrange(q.vq.project_out(codebook[ids]), "b h w c -> b c h w")
        f_hat = f_hat + q.upsample_and_refine(codes, k)
    return f_hat


def perturb_phis(q: MultiScaleVQ) -> None:
    """Phi away from the identity, so every scale's contribution is visible in f_hat."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for phi in q.phis:
            phi.conv.weight.add_(0.05 * torch.randn(phi.conv.weight.shape, generator=g))


@pytest.mark.parametrize("options", [
    dict(threshold_ema_dead_code=0),                            # EMA step only
    dict(threshold_ema_dead_code=1e9),                          # EMA step, then every code restarted
    dict(threshold_ema_dead_code=1e9, learnable_codebook=True),  # restarts alone (no EMA)
], ids=["ema", "ema+restart", "restart"])
def test_training_step_reconstructs_with_the_codes_that_chose_the_ids(options):
    torch.manual_seed(0)
    q = MultiScaleVQ(8, 16, [1, 2, 4], kmeans_init=False, ema_decay=0.5, **options)
    perturb_phis(q)
    z = moving_batch()
    with torch.no_grad():
        q.eval()
        ref = q(z)                                              # eval: no codebook update
        q.train()
        old = q.vq.codebook.detach().clone()                    # (V, d), before the step
        out = q(z)
    new = q.vq.codebook.detach()
    assert (new - old).abs().max() > 1.0                        # the step did move the codebook
    assert all(torch.equal(a, b) for a, b in zip(out.indices, ref.indices))
    expected = rebuild(q, old, out.indices)
    torch.testing.assert_close(out.z_q, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.z_q, ref.z_q, rtol=0, atol=1e-5)
    # the codebook after the step (and restarted codes: batch vectors) must not leak into f_hat
    assert (out.z_q - rebuild(q, new, out.indices)).abs().max() > 1e-2
