"""MaskGIT's "log" and "exp" schedules depend on the token count, and MaskGIT (google-research/maskgit,
`maskgit/libml/parallel_decode.py` with `mask_schedule.py`) takes it per row:
unknown_number_in_the_beginning = sum(inputs == mask_token, axis=-1), then
mask_len = floor(unknown_number_in_the_beginning * mask_ratio(ratio, unknown_number_in_the_beginning)).
So with inpainting masks that differ between rows, each row keeps floor(N_row gamma_{N_row}(r)) masked."""

from __future__ import annotations

import math

import pytest
import torch

from tokgen.generators import build_generator
from tokgen.generators.schedules import mask_ratio, num_masked_after_step

V, SIDE = 8, 4
N = SIDE * SIDE


def gamma(schedule: str, r: float, total: int) -> float:
    """MaskGIT's mask_schedule.py for one row with `total` unknown tokens."""
    if schedule == "log":
        return -math.log2(r) / math.log2(total)
    return 1.0 - 2.0 ** (-math.log2(total) * (1.0 - r))


def expected_counts(schedule: str, steps: int, unknown: list[int]) -> list[list[int]]:
    """Masked tokens per row after each step: floor(N_row gamma((t+1)/T)) clamped to
    [1, masked_before - 1], 0 after the last step (the rule documented in generators/schedules.py)."""
    masked, out = list(unknown), []
    for t in range(steps):
        row = []
        for b, n_row in enumerate(unknown):
            if t == steps - 1:
                n = 0
            else:
                n = math.floor(n_row * gamma(schedule, (t + 1) / steps, n_row))
                n = min(max(1, min(masked[b] - 1, n)), masked[b])
            row.append(n)
        masked = row
        out.append(row)
    return out


def make(schedule: str):
    torch.manual_seed(0)
    spec = {"codebook_size": V, "scales": [SIDE], "image_size": 4 * SIDE, "channels": 3}
    config = dict(width=32, depth=2, heads=4, condition="none", num_classes=0, mask_schedule=schedule)
    model = build_generator("maskgit", spec, config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.double().eval()


def known_rows() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows with different inpainting masks: 14 and 6 tokens unknown."""
    tokens = torch.randint(0, V, (2, N), generator=torch.Generator().manual_seed(3))
    fixed = torch.zeros(2, N, dtype=torch.bool)
    fixed[0, :2] = True
    fixed[1, 3:13] = True
    return tokens, fixed


@pytest.mark.parametrize("schedule", ["log", "exp"])
def test_each_row_keeps_its_own_floor_n_gamma_masked(schedule):
    model = make(schedule)
    tokens, fixed = known_rows()
    unknown = (~fixed).sum(1).tolist()
    assert unknown == [14, 6]
    steps, trace = 4, []
    with torch.no_grad():
        final = model._decode((tokens, fixed), None, steps, 1.0, {}, torch.Generator().manual_seed(0),
                              on_step=lambda t, toks, fx: trace.append(fx.clone()))
    counts = [(~fx).sum(1).tolist() for fx in trace]
    # The first step, unclamped: floor(N_row gamma_{N_row}(1/4)) for each row.
    first = [math.floor(n * gamma(schedule, 1 / steps, n)) for n in unknown]
    assert first == ([7, 4] if schedule == "log" else [12, 4])   # by hand: -log2(1/4)/log2(N); 1 - N^(-3/4)
    assert counts[0] == first
    # With the batch-wide count (max = 14) the 6-token row would keep another number masked.
    assert math.floor(6 * gamma(schedule, 1 / steps, 14)) != first[1]
    assert counts == expected_counts(schedule, steps, unknown)
    assert torch.equal(final[fixed], tokens[fixed])


@pytest.mark.parametrize("schedule", ["log", "exp"])
def test_num_masked_after_step_is_per_row(schedule):
    unknown = torch.tensor([14, 6, 40, 2])
    for steps in (3, 4, 8):
        masked = unknown.clone()
        for t in range(steps):
            masked = num_masked_after_step(schedule, t, steps, unknown, masked)
            if t == 0:
                n = [math.floor(u * gamma(schedule, 1 / steps, u)) for u in unknown.tolist()]
                n = [max(1, min(u - 1, k)) for u, k in zip(unknown.tolist(), n)]
                assert masked.tolist() == n, (steps, masked.tolist(), n)
        assert masked.eq(0).all()


def test_rows_with_fewer_than_two_unknown_tokens_do_not_break_log_exp():
    """A complete row (0 unknown) or a single unknown token: log2(N) would be 0 for that row; the
    clamp to [1, masked_now - 1] decides those rows anyway, and other rows keep their own count."""
    for schedule in ("log", "exp"):
        unknown = torch.tensor([0, 1])
        assert num_masked_after_step(schedule, 0, 4, unknown, unknown.clone()).tolist() == [0, 1]
        unknown = torch.tensor([0, 1, 6])
        got = num_masked_after_step(schedule, 0, 4, unknown, unknown.clone()).tolist()
        assert got == [0, 1, math.floor(6 * gamma(schedule, 0.25, 6))]


def test_mask_ratio_takes_per_row_totals():
    totals = torch.tensor([6, 14, 256])
    for schedule in ("log", "exp"):
        got = mask_ratio(schedule, 0.25, totals)
        want = torch.tensor([gamma(schedule, 0.25, n) for n in totals.tolist()], dtype=torch.float64)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(mask_ratio(schedule, 0.25, 14), want[1])
    with pytest.raises(ValueError, match="total"):
        mask_ratio("log", 0.5, torch.tensor([6, 1]))
