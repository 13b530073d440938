"""The generator bench's contract (bench/bench_generators.py, bench/limits.py, bench/peer_harness.py):
its JSON carries ours, the arithmetic limit, the measured matmul rate and what peer columns are
missing and why; and the FLOP count the limit rests on is the model's closed-form count.  No
timing is checked here: timings live in bench/."""
import importlib
import json
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
        yield {name: importlib.import_module(name) for name in ("bench_generators", "limits", "peer_harness", "side_by_side")}
    finally:
        sys.path.remove(str(BENCH))


def tiny_ar(side=3, codebook=64, width=32, depth=2, heads=4, mlp_ratio=4.0):
    spec = {"codebook_size": codebook, "scales": [side], "image_size": 16 * side, "channels": 3}
    torch.manual_seed(0)
    return build_generator("ar", spec, {"width": width, "depth": depth, "heads": heads, "mlp_ratio": mlp_ratio,
                                        "condition": "class", "num_classes": 10}).eval()


def block_flops(tokens, keys, width, depth, mlp_ratio):
    """Closed form for `tokens` new positions through the core, each attending to `keys` keys:
    qkv (3D^2) + out projection (D^2) + MLP (2 r D^2) multiply-adds per token and layer, and
    q.k + a.v (2 D per key) for attention; 2 FLOPs per multiply-add."""
    linear = tokens * (4 + 2 * mlp_ratio) * width ** 2
    attention = 2 * width * keys
    return 2 * depth * (linear + attention)


def test_one_ar_decode_step_counts_the_closed_form(bench):
    """One KV-cached decode step (one new token against a cache of 5 positions, then the head):
    the counter sees exactly the linear layers, the attention over the cache length and the head."""
    limits = bench["limits"]
    model, B, D, L, r, V = tiny_ar(), 2, 32, 2, 4.0, 64
    cache = model.core.new_cache(B, 8, like=torch.zeros(1))
    with torch.inference_mode():
        model.core(torch.randn(B, 5, D), mask="causal", cache=cache)           # prefill 5 positions
        count = limits.count_flops(lambda: model.head(model.core(torch.randn(B, 1, D), mask="causal",
                                                                  cache=cache)[:, 0]))
    assert count["total"] == B * (block_flops(1, 6, D, L, r) + 2 * D * V)
    assert set(count["by_op"]) >= {"addmm", "_scaled_dot_product_flash_attention_for_cpu"}


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_ar_generate_counts_prefill_every_step_and_the_head(bench, cfg):
    """The whole timed call: 1 class-token prefill, N-1 cached steps whose i-th attends to i+2
    keys, the head on all N; guidance doubles the batch."""
    limits = bench["limits"]
    side, D, L, r, V = 3, 32, 2, 4.0, 64
    model, N, B = tiny_ar(side), side * side, 2
    rows = 2 * B if cfg > 1 else B
    cond = model.make_condition(labels=[1, 2])
    count = limits.count_flops(lambda: model.generate(cond, num_samples=B, cfg_scale=cfg,
                                                      generator=torch.Generator().manual_seed(0)))
    expected = rows * (block_flops(1, 1, D, L, r) + sum(block_flops(1, i + 2, D, L, r) for i in range(N - 1))
                       + N * 2 * D * V)
    assert count["total"] == expected


def test_causal_attention_counts_the_lower_triangle(bench):
    limits = bench["limits"]
    q = torch.randn(1, 2, 8, 4)
    full = limits.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))["total"]
    causal = limits.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q,
                                                                                          is_causal=True))["total"]
    assert full == 2 * 2 * (1 * 2 * 8 * 8 * 4) and causal == full * 9 // 16


# ~30 s on 2 cores (the matched-size AR model, counted under FlopCounterMode): run with -m slow
@pytest.mark.slow
def test_quick_run_without_peers_prints_ours_the_limit_and_the_missing_peers(bench, capsys):
    code = bench["bench_generators"].main(["--quick", "--peers", "none", "--families", "ar",
                                           "--precisions", "fp32", "--threads", "1"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rate = report["matmul_rate"]["float32"]
    assert rate["start"]["gflops"] > 0 and rate["end"] == rate["after"]["ar"]
    assert rate["used_gflops"] == {"ar": max(rate["start"]["gflops"], rate["end"]["gflops"])}
    assert report["machine"]["cpu_capability"] and "load_average_before" in report["machine"]
    assert "commit" in report["code"] and isinstance(report["code"]["modified"], list)
    ar = report["families"]["ar"]
    assert ar["flops"]["generate"]["default"]["guided_s"] == 2 * ar["flops"]["generate"]["default"]["unguided_s"]
    for workload in ("unguided_s", "guided_s"):
        figure = ar["fp32"]["limit"]["generate"]["default"][workload]
        assert figure["ours_s"] == ar["fp32"]["generate"]["default"][workload]
        assert figure["limit_s"] > 0 and figure["ours_over_limit"] > 0
    peers = report["peers"]
    assert peers["available"] == [] and set(peers["missing"]) == {"llamagen", "dalle"}
    assert all("--peers none" in peers["why"][k] for k in peers["missing"])
    assert ar["peers"] == {}
    rows = report["table"]
    assert {r["workload"] for r in rows} == {"generate unguided, default", "generate guided, default",
                                             "train fwd+bwd, 16 images"}
    assert all(r["peers"] == {} and r["limit_s"] > 0 for r in rows)


def test_peers_without_a_venv_are_missing_with_the_reason(bench, monkeypatch, tmp_path):
    monkeypatch.setenv("PEERS_PY", str(tmp_path / "no-python"))
    found = bench["peer_harness"].discover("auto", ["maskgit", "d3pm"], "cpu")
    assert found["available"] == [] and found["missing"] == ["muse"]
    assert "no peers venv" in found["why"]["muse"] and found["families_without_peer"] == ["d3pm"]
    on_gpu = bench["peer_harness"].discover("auto", ["var"], "cuda")
    assert on_gpu["missing"] == ["var"] and "CPU only" in on_gpu["why"]["var"]


@pytest.mark.parametrize("argv, message", [
    (["--peers", "llamagen", "auto"], "stand alone"),
    (["--peers", "nope"], "unknown peer nope"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--families", "nope"], "unknown families"),
])
def test_bad_flags_are_one_clear_error(bench, argv, message):
    with pytest.raises(SystemExit, match=message):
        bench["bench_generators"].main(argv)


def test_side_by_side_ratios_come_from_the_run(bench):
    """Peer / ours per figure, from the figures given (two rounds: medians)."""
    side = bench["side_by_side"]
    ours = [{"fp32": {"precision": "fp32", "train_s": t, "generate": {"default": {"unguided_s": t, "guided_s": 2 * t}}},
             "flops": {"train_s": 3e9, "generate": {"default": {"unguided_s": 1e9, "guided_s": 2e9}}}} for t in (1.0, 3.0)]
    theirs = {"llamagen": [{"guided_s": 8.0, "unguided_s": 4.0, "train_s": 4.0}] * 2}
    entry = side.family_entry(ours, theirs)
    assert entry["fp32"]["train_s"] == 2.0
    assert entry["peers"]["LlamaGen"]["peer_over_ours"]["fp32"] == {"unguided": 2.0, "guided": 2.0, "train": 2.0}
    side.add_limits(entry, {"fp32": 100.0})
    assert entry["fp32"]["limit"]["generate"]["default"]["guided_s"]["limit_s"] == pytest.approx(0.02)
    rows = side.table({"ar": entry}, ["fp32"])
    assert rows[1]["peers"]["LlamaGen"] == {"peer_s": 8.0, "peer_over_ours": 2.0}


FAKE_PEER = '''
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
C.setup()
calls = {}
def gen():
    calls["gen"] = calls.get("gen", 0) + 1
def decode():
    calls["decode"] = calls.get("decode", 0) + 1
g, _ = C.time_fn(gen)
C.time_fn(decode)
C.emit({"headline": {"params": 5_000_000, "gen_median_s": 2.0, "train_images_per_s": 8.0,
                     "train_tokens_per_s": 2048.0, "forward_passes": 10,
                     "note": f"gen {calls['gen']} decode {calls['decode']}"},
        "headline_nocfg": {"note": "no unguided path"}, "train": {"median_s": 2.0}})
'''


def test_a_peer_script_runs_in_its_python_with_the_runs_asked_and_its_decoder_once(bench, monkeypatch, tmp_path):
    """The harness script runs as a subprocess of PEERS_PY with BENCH_RUNS / BENCH_WARMUP; the
    decoder it also times (not compared) runs once; its headline becomes the peer's figures."""
    common = Path(__file__).resolve().parents[2] / "shared" / "peers-bench" / "_common.py"
    if not common.is_file():
        pytest.skip(f"the shared peers harness is not at {common.parent}")
    (tmp_path / "_common.py").write_text(common.read_text())
    (tmp_path / "bench_var.py").write_text(FAKE_PEER)
    monkeypatch.setenv("PEERS_BENCH_DIR", str(tmp_path))
    monkeypatch.setenv("PEERS_PY", sys.executable)
    figures = bench["peer_harness"].run_peer("var", runs=3, warmup=1, threads=1)
    assert figures["guided_s"] == 2.0 and figures["unguided_s"] is None and figures["train_s"] == 2.0
    assert figures["params_M"] == 5.0 and figures["runs"] == 3 and figures["threads"] == 1
    assert figures["note"] == "gen 4 decode 1"                  # 3 runs + 1 warm-up; the decoder once
    (tmp_path / "bench_var.py").write_text("import sys; sys.exit('no checkout')")
    failed = bench["peer_harness"].run_peer("var", runs=1, warmup=0, threads=1)
    assert failed["error"] == "exit code 1" and "no checkout" in failed["stderr_tail"]
