"""The bench's kernel floor (bench/floor.py) and its interleaved D3PM/MaskGIT step pair: the
recorder sees exactly the model's matmul and attention calls, each storage gets one stand-in
buffer, and every family's generate and training calls replay.  No timing is checked here:
timings live in bench/."""
import importlib
import sys
from pathlib import Path

import pytest
import torch

from tokgen.generators import build_generator

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield {name: importlib.import_module(name) for name in ("floor", "bench_generators", "side_by_side")}
    finally:
        sys.path.remove(str(BENCH))


def tiny(family, side=3, codebook=32, **extra):
    scales = [1, 2, side] if family == "var" else [side]
    spec = {"codebook_size": codebook, "scales": scales, "image_size": 16 * side, "channels": 3}
    config = {"width": 32, "depth": 2, "heads": 4, "mlp_ratio": 2.0, "condition": "class", "num_classes": 10, **extra}
    if family == "var":
        config["scale_inputs"] = "learned"
    torch.manual_seed(0)
    return build_generator(family, spec, config).eval()


def names(calls):
    return [func.overloadpacket.__name__ for func, _, _ in calls]


def test_one_decode_step_records_each_linear_and_the_attention_over_the_cache(bench):
    floor = bench["floor"]
    model, B, D = tiny("ar"), 2, 32
    cache = model.core.new_cache(B, 8, like=torch.zeros(1))
    with torch.inference_mode():
        model.core(torch.randn(B, 5, D), mask="causal", cache=cache)           # prefill 5 positions
        calls = floor.record_kernels(lambda: model.head(model.core(torch.randn(B, 1, D), mask="causal",
                                                                    cache=cache)[:, 0]))
    # per layer: qkv, attention, out projection, MLP in and out; then the head
    assert names(calls) == ["linear", "scaled_dot_product_attention", "linear", "linear", "linear"] * 2 + ["linear"]
    sdpa = [args for func, args, _ in calls if "scaled_dot_product" in str(func)]
    assert [a[1].shape for a in sdpa] == [(B, 4, 6, 8)] * 2                   # keys: the 5 cached + the new one
    weights = {args[1].key for func, args, _ in calls if func.overloadpacket.__name__ == "linear"}
    assert len(weights) == 9                                                  # 9 distinct weights, one buffer each


def test_views_of_one_storage_share_one_buffer_large_enough_for_all(bench):
    floor = bench["floor"]
    base = torch.zeros(4, 10)
    calls = floor.record_kernels(lambda: (torch.mm(base[:2, :3], base[:3, :2].contiguous()),
                                          torch.mm(base[2:, :], torch.ones(10, 1))))
    buffers = floor._buffers(calls)
    keys = {t.key for _, args, _ in calls for t in args}
    assert len(keys) == 3 and len(buffers) == 3                               # base, the copy, the ones
    assert buffers[calls[0][1][0].key].numel() == 40                          # rows 2..3 of base reach element 40


@pytest.mark.parametrize("family", ["ar", "maskgit", "d3pm", "var"])
def test_every_family_generate_and_training_step_replay(bench, family):
    floor = bench["floor"]
    model = tiny(family)
    cond = model.make_condition(labels=[1, 2])
    generate = lambda: model.generate(cond, num_samples=2, cfg_scale=2.0, steps=2 if family in ("maskgit", "d3pm") else None,  # noqa: E731
                                      generator=torch.Generator().manual_seed(0))
    calls = floor.record_kernels(generate)
    assert "linear" in names(calls) and any("scaled_dot_product" in n for n in names(calls))
    assert floor.replay_seconds(calls, torch.device("cpu"), repeats=1) > 0

    model.train()
    tokens = [torch.randint(0, 32, (2, s, s)) for s in model.spec.scales]

    def step():
        loss, _ = model.loss(tokens, cond)
        loss.backward()
    calls = floor.record_kernels(step)
    backward = [n for n in names(calls) if "backward" in n or n == "mm"]
    assert backward, names(calls)                                             # the backward matmuls are recorded too
    assert floor.replay_seconds(calls, torch.device("cpu"), repeats=1) > 0


def test_limits_carry_the_floor_beside_the_limit(bench):
    side = bench["side_by_side"]
    entry = {"fp32": {"precision": "fp32", "train_s": 2.0, "generate": {"default": {"unguided_s": 1.0}},
                      "floor_s": {"train_s": 1.0, "generate": {"default": {"unguided_s": 0.5}}}},
             "flops": {"train_s": 1e9, "generate": {"default": {"unguided_s": 1e8}}}}
    side.add_limits(entry, {"fp32": 100.0})
    fig = entry["fp32"]["limit"]["generate"]["default"]["unguided_s"]
    assert fig == pytest.approx({"ours_s": 1.0, "limit_s": 0.001, "ours_over_limit": 1000.0, "floor_s": 0.5,
                                 "ours_over_floor": 2.0, "floor_over_limit": 500.0})
    assert entry["fp32"]["limit"]["train_s"]["ours_over_floor"] == 2.0


def test_step_pair_reports_both_steps_and_their_ratio(bench, monkeypatch):
    """The pair at a tiny size: each family's step from its own timings, the ratio of the two."""
    bg = bench["bench_generators"]
    monkeypatch.setattr(bg, "MATCHED", dict(width=16, depth=1, heads=2, mlp_ratio=2.0))
    monkeypatch.setattr(bg, "SIDE", 2)
    monkeypatch.setattr(bg, "CODEBOOK", 16)
    monkeypatch.setattr(bg, "NUM_CLASSES", 4)
    precision = bg.resolve_precision("fp32", torch.device("cpu"), flag="--precisions")
    pair = bg.step_pair("class", precision, 1, torch.device("cpu"), None)
    assert pair["maskgit_steps"] == 12 and pair["d3pm_steps"] == [16, 64]
    for kind in ("unguided", "guided"):
        f = pair[kind]
        assert f["maskgit_step_s"] > 0
        assert f["d3pm_over_maskgit"] == pytest.approx(f["d3pm_step_s"] / f["maskgit_step_s"])
