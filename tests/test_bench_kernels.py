"""The bench's kernel time (bench/kernels.py) and its interleaved D3PM/MaskGIT step pair: the
profiler's kernel ops are told from composite and element-wise ones, a decode step counts each of
its matmul and attention calls, every family's generate and training calls are measured, and the
kernel time sits inside the run that measured it.  No speed is checked here: timings live in bench/."""
import importlib
import sys
import time
from pathlib import Path

import pytest
import torch

from tokgen.generators import build_generator

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield {name: importlib.import_module(name) for name in ("kernels", "bench_generators", "side_by_side")}
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


CPU = torch.device("cpu")


@pytest.mark.parametrize("name, kernel", [
    ("aten::addmm", True), ("aten::mm", True), ("aten::bmm", True), ("aten::convolution_backward", True),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", True),
    ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", True),
    ("aten::linear", False), ("aten::matmul", False), ("aten::scaled_dot_product_attention", False),
    ("aten::conv2d", False), ("aten::gelu", False), ("aten::copy_", False), ("aten::layer_norm", False),
])
def test_kernels_are_told_from_composite_and_elementwise_ops(bench, name, kernel):
    assert bench["kernels"].is_kernel(name) is kernel


def test_what_a_kernel_op_calls_counts_inside_it(bench):
    """addmm's copy of the bias into its output is addmm's time; a kernel called by another kernel
    op (a backward calling mm) is not counted twice; a kernel under a composite op counts."""
    kernels = bench["kernels"]

    class Event:
        def __init__(self, name, parent=None):
            self.name, self.cpu_parent = name, parent
    linear = Event("aten::linear")
    addmm = Event("aten::addmm", linear)
    conv_bwd = Event("aten::convolution_backward")
    assert not kernels._inside_kernel(addmm)                                  # under a composite: its own
    assert kernels._inside_kernel(Event("aten::copy_", addmm))
    assert kernels._inside_kernel(Event("aten::mm", Event("aten::t", conv_bwd)))


def test_one_decode_step_counts_each_linear_and_the_attention(bench):
    kernels = bench["kernels"]
    model, B, D = tiny("ar"), 2, 32
    cache = model.core.new_cache(B, 8, like=torch.zeros(1))
    with torch.inference_mode():
        model.core(torch.randn(B, 5, D), mask="causal", cache=cache)           # prefill 5 positions
        start = time.perf_counter()
        measured = kernels.kernel_time(lambda: model.head(model.core(torch.randn(B, 1, D), mask="causal",
                                                                      cache=cache)[:, 0]), CPU)
        wall = time.perf_counter() - start
    # per layer: qkv, out projection, MLP in and out (addmm each) and one attention; then the head
    assert measured["calls"] == 2 * (4 + 1) + 1
    assert set(measured["by_op"]) == {"addmm", "_scaled_dot_product_flash_attention_for_cpu"}
    assert 0 < measured["kernel_s"] <= wall


@pytest.mark.parametrize("family", ["ar", "maskgit", "d3pm", "var"])
def test_every_family_generate_and_training_step_is_measured(bench, family):
    kernels = bench["kernels"]
    model = tiny(family)
    cond = model.make_condition(labels=[1, 2])
    steps = 2 if family in ("maskgit", "d3pm") else None
    sampled = kernels.kernel_time(lambda: model.generate(cond, num_samples=2, cfg_scale=2.0, steps=steps,
                                                         generator=torch.Generator().manual_seed(0)), CPU)
    assert sampled["kernel_s"] > 0 and any("scaled_dot_product" in op for op in sampled["by_op"])

    model.train()
    tokens = [torch.randint(0, 32, (2, s, s)) for s in model.spec.scales]

    def step():
        loss, _ = model.loss(tokens, cond)
        loss.backward()
    trained = kernels.kernel_time(step, CPU)
    assert any(op.endswith("_backward") for op in trained["by_op"]), trained["by_op"]   # backward kernels count too
    assert trained["kernel_s"] > 0


def test_limits_carry_the_kernel_time_beside_the_limit(bench):
    side = bench["side_by_side"]
    entry = {"fp32": {"precision": "fp32", "train_s": 2.0, "generate": {"default": {"unguided_s": 1.0}},
                      "kernel_s": {"train_s": 1.0, "generate": {"default": {"unguided_s": 0.5}}}},
             "flops": {"train_s": 1e9, "generate": {"default": {"unguided_s": 1e8}}}}
    side.add_limits(entry, {"fp32": 100.0})
    fig = entry["fp32"]["limit"]["generate"]["default"]["unguided_s"]
    assert fig == pytest.approx({"ours_s": 1.0, "limit_s": 0.001, "ours_over_limit": 1000.0, "kernel_s": 0.5,
                                 "ours_over_kernels": 2.0, "kernels_over_limit": 500.0})
    assert entry["fp32"]["limit"]["train_s"]["ours_over_kernels"] == 2.0


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
