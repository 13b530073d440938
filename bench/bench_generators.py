"""Sampling and training speed of every registered generator family at the peers' matched
configuration (../shared/PEERS.md), side by side with the peers' own code run in the same session
with the machine's arithmetic limit (bench/limits.py) and with the time its matmul and attention
kernels took inside each call (bench/kernels.py).

    python bench/bench_generators.py                      # every family, float32 and auto, peers if set up
    python bench/bench_generators.py --quick --peers none # one repeat, no warm-up: a smoke test
    python bench/bench_generators.py --families ar maskgit --precisions fp32
    python bench/bench_generators.py --precisions fp32 bf16   # bf16 even where it is slow
    python bench/bench_generators.py --peers llamagen var --rounds 2   # ours, theirs, ours, theirs

Peers (bench/peer_harness.py): the harness ../shared/peers-bench runs each peer's own code in its own venv
(setup_peers.sh); per family, ours and the family's peers run one after the other, `--rounds`
times, and the ratios printed are from this run only.  Without the peers the bench prints ours and
the limit, and `peers.missing` / `peers.why` say what is absent.

Precisions: fp32; bf16; auto = bf16 where this device runs it fast, else fp32 (train/precision.py;
a precision that resolves to one already timed is not timed twice).

Matched configuration: 16x16 = 256 tokens per image (VAR: its 10 scales 1..16, 680 tokens),
codebook 1024, width 256, depth 4, 8 heads of 32, MLP ratio 4, 1000 classes; generation batch 8,
guided (cfg 3: the conditional and null rows in one doubled batch) and unguided; training batch 16,
one forward + backward (no optimizer step); median of 5 runs after 1 warm-up; 2 threads.
Random weights: token generation only, the image decoder is not timed.  Prints one JSON object;
bench/README.md says what each figure means.  Read every figure with the CPU model `machine` records.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import kernels  # noqa: E402
import limits  # noqa: E402
import peer_harness as peer_bench  # noqa: E402
import side_by_side  # noqa: E402

from tokgen.generators import (CONDITIONS, FAMILIES, build_generator, condition_kind, family_class,  # noqa: E402
                               train_text_tokenizer)
from tokgen.train.machine import describe  # noqa: E402
from tokgen.train.precision import SAMPLING_CHOICES, Choice, autocast, resolve_precision  # noqa: E402
from tokgen.train.tasks.generator import attach_tokenizer  # noqa: E402

MATCHED = dict(width=256, depth=4, heads=8, mlp_ratio=4.0)
CODEBOOK, SIDE, NUM_CLASSES = 1024, 16, 1000
GEN_BATCH, TRAIN_BATCH, CFG = 8, 16, 3.0
# the multi-scale maps a family that needs them (needs_multiscale: VAR) is timed on: the VAR
# peer's own 10 scales, so that its figures compare
VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

# Sampling steps matched to a peer's benchmark, kept here because they are this benchmark's
# configuration, not a fact of the family: muse-maskgit-pytorch was timed at 12 steps (PEERS.md),
# while `tokgen compare` sweeps MaskGIT's own compare_steps.  Every other family is timed at its
# compare_steps (D3PM: two counts, whose difference gives the cost of one step) or, where the
# count is fixed (AR, VAR: fixed_steps), at that count.
PEER_STEPS = {"maskgit": (12,)}

CAPTIONS = ["a large red circle at the top left", "a small blue square at the center",
            "a large green triangle at the bottom right", "a small yellow diamond at the top",
            "a large purple square at the left", "a small cyan circle at the bottom",
            "a large blue diamond at the right", "a small red triangle at the top right"]


def scale_interface(scales: tuple[int, ...]):
    """A random tiny multi-scale tokenizer (codebook 1024, no training): the scale steps VAR takes
    from its tokenizer (lookup, upsample and refine, downsample) at the right sizes.  Only its
    quantizer is ever run; the conv autoencoder around it is minimal."""
    from tokgen.tokenizers_vq import VQTokenizer, get_preset

    torch.manual_seed(0)
    config = get_preset("shapes-tiny-msvq", image_size=2 * scales[-1], channel_mults=(1, 2), base_width=8,
                        z_channels=32, codebook_size=CODEBOOK, scales=scales, kmeans_init=False,
                        mid_attention=False)
    return VQTokenizer(config).eval()


def steps_timed(family: str) -> tuple[int | None, ...]:
    """The sampling step counts a family is timed at (None: its fixed count)."""
    return PEER_STEPS.get(family) or family_class(family).compare_steps or (None,)


def build(family: str, condition: str, text_tokenizer):
    scales = VAR_SCALES if family_class(family).needs_multiscale else (SIDE,)
    tokenizer = scale_interface(scales) if len(scales) > 1 else None
    spec = tokenizer.spec if tokenizer is not None else \
        {"codebook_size": CODEBOOK, "scales": list(scales), "image_size": 16 * scales[-1], "channels": 3}
    kind = condition_kind(condition)
    config = {**MATCHED, "condition": condition, "num_classes": NUM_CLASSES if kind.uses_labels else 0}
    if kind.uses_captions:
        config["text_length"] = 16
    torch.manual_seed(0)
    model = build_generator(family, spec, config, text_tokenizer=text_tokenizer if kind.uses_captions else None)
    attach_tokenizer(model, tokenizer)
    return model.eval()


def condition(model, batch: int):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g).tolist()
    return model.make_condition(labels=labels, captions=(CAPTIONS * batch)[:batch])


def timed(fn, repeats: int, warmup: int, device: torch.device, flops: dict | None = None, key: str = "",
          kernel_s: dict | None = None) -> float:
    """Median wall time of fn() over `repeats` runs after `warmup` untimed ones.  With `flops`, one
    untimed run (an extra one when warmup is 0) runs under limits.count_flops and stores the call's
    FLOPs at flops[key]; with `kernel_s`, one runs under torch.profiler and kernel_s[key] gets the
    seconds spent in its matmul and attention kernels (kernels.py).  Both slow their run, and only
    untimed runs may be slowed."""
    if flops is not None:
        flops[key] = limits.count_flops(fn)["total"]
        warmup = max(warmup - 1, 0)
    if kernel_s is not None:
        kernel_s[key] = kernels.kernel_time(fn, device)["kernel_s"]
        warmup = max(warmup - 1, 0)
    for _ in range(warmup):
        fn()
    return statistics.median(wall_time(fn, device) for _ in range(repeats))


def wall_time(fn, device: torch.device) -> float:
    """Seconds of one fn() call, the device synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generation_calls(model, steps: int | None) -> dict:
    """The calls timed for generation at `steps`: {"unguided_s": fn, "guided_s": fn (conditional
    models)}; the same callables are timed and counted (limits.count_flops)."""
    cond = condition(model, GEN_BATCH)
    run = lambda cfg: lambda: model.generate(cond, num_samples=GEN_BATCH, steps=steps, cfg_scale=cfg,  # noqa: E731
                                              generator=torch.Generator(model.device).manual_seed(0))
    return {"unguided_s": run(1.0), **({"guided_s": run(CFG)} if cond is not None else {})}


def training_call(model, precision: Choice):
    """One training step as timed: forward + backward of a batch of 16, no optimizer step.  The
    caller puts the model in train mode."""
    g = torch.Generator().manual_seed(1)
    tokens = [torch.randint(0, CODEBOOK, (TRAIN_BATCH, s, s), generator=g).to(model.device)
              for s in model.spec.scales]
    cond = condition(model, TRAIN_BATCH)

    def step():
        with autocast(precision, model.device):
            loss, _ = model.loss(tokens, cond)
        loss.backward()
        model.zero_grad(set_to_none=True)
    return step


def bench_generation(model, steps: int | None, repeats: int, warmup: int, flops: dict | None = None,
                     kernel_s: dict | None = None) -> dict:
    return {k: timed(fn, repeats, warmup, model.device, flops, k, kernel_s)
            for k, fn in generation_calls(model, steps).items()}


def bench_training(model, precision: Choice, repeats: int, warmup: int, flops: dict | None = None,
                   kernel_s: dict | None = None) -> dict:
    model.train()
    seconds = timed(training_call(model, precision), repeats, warmup, model.device, flops, "train_s", kernel_s)
    model.eval()
    n = TRAIN_BATCH * model.spec.tokens_per_image
    return {"train_s": seconds, "train_tok_s": n / seconds, "train_img_s": TRAIN_BATCH / seconds}


def bench_family(family: str, condition_kind: str, precisions: dict[str, Choice], repeats: int, warmup: int,
                 device: torch.device, text_tokenizer) -> dict:
    """Our figures for one family, the FLOPs of each timed call (`flops`: counted in the first
    precision's warm-up runs; a precision changes the rate, not the count) and, per precision, the
    seconds its kernels took (`kernel_s`: the kernels differ with the dtype)."""
    model = build(family, condition_kind, text_tokenizer).to(device)
    result = {"params_M": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2),
              "scales": list(model.spec.scales), "tokens_per_image": model.spec.tokens_per_image}
    flops: dict = {}
    timed_as: dict[str, dict] = {}                                  # chosen precision -> its timings
    for name, precision in precisions.items():
        if precision.chosen not in timed_as:
            count = not timed_as                                    # the first precision timed counts
            in_kernels: dict = {}
            timings = bench_training(model, precision, repeats, warmup,  # float32 weights (bf16: autocast)
                                     flops if count else None, in_kernels)
            sampler = model.to(precision.dtype)                     # bf16: bfloat16 weights
            timings["generate"] = {}
            for s in steps_timed(family):
                counted = flops.setdefault("generate", {}).setdefault(_steps_label(s), {}) if count else None
                kernel_at = in_kernels.setdefault("generate", {}).setdefault(_steps_label(s), {})
                timings["generate"][_steps_label(s)] = bench_generation(sampler, s, repeats, warmup, counted, kernel_at)
            timings["kernel_s"] = in_kernels
            model.float()
            timed_as[precision.chosen] = timings
        result[name] = {"precision": precision.chosen, **timed_as[precision.chosen]}
    result["flops"] = flops
    result.update(_per_step(family, result, list(precisions)))
    return result


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _steps_label(steps: int | None) -> str:
    return "default" if steps is None else f"{steps} steps"


def _per_step(family: str, result: dict, precisions: list[str]) -> dict:
    """Families timed at two step counts (D3PM): the marginal cost of one step, from the difference
    of the two timings, of the two FLOP counts and of the two kernel times."""
    steps = steps_timed(family)
    if len(steps) < 2:
        return {}
    lo, hi = _steps_label(steps[0]), _steps_label(steps[-1])
    diff = lambda gen: {k: (gen[hi][k] - gen[lo][k]) / (steps[-1] - steps[0]) for k in gen[hi]}  # noqa: E731
    result["flops"]["per_step"] = diff(result["flops"]["generate"])
    for p in precisions:
        result[p]["kernel_s"]["per_step"] = diff(result[p]["kernel_s"]["generate"])
    return {"seconds_per_step": {p: diff(result[p]["generate"]) for p in precisions}}


def step_pair(condition_kind: str, precision: Choice, repeats: int, device: torch.device, text_tokenizer) -> dict:
    """D3PM's marginal step against MaskGIT's step at the same size, timed interleaved: each
    repeat runs MaskGIT at its peer's step count and D3PM at its two counts back to back, so the
    two families see the same machine (a family-by-family run lets minutes of host drift between
    them).  MaskGIT's step = its time / steps; D3PM's = the difference of its two times / the
    difference of the counts.  Medians over `repeats`."""
    calls = {}
    for family in ("maskgit", "d3pm"):
        model = build(family, condition_kind, text_tokenizer).to(device).to(precision.dtype)
        for steps in steps_timed(family):
            for kind, fn in generation_calls(model, steps).items():
                calls[(family, steps, kind)] = fn
    for fn in calls.values():                                         # one warm-up pass
        fn()
    times = {key: [] for key in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            times[key].append(wall_time(fn, device))
    med = {key: statistics.median(v) for key, v in times.items()}
    (mg_steps,), (lo, hi) = steps_timed("maskgit"), steps_timed("d3pm")
    out = {"precision": precision.chosen, "repeats": repeats, "maskgit_steps": mg_steps, "d3pm_steps": [lo, hi]}
    for kind in sorted({k for _, _, k in calls}):
        maskgit = med[("maskgit", mg_steps, kind)] / mg_steps
        d3pm = (med[("d3pm", hi, kind)] - med[("d3pm", lo, kind)]) / (hi - lo)
        out[kind.removesuffix("_s")] = {"maskgit_step_s": maskgit, "d3pm_step_s": d3pm, "d3pm_over_maskgit": d3pm / maskgit}
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    families = args.families or sorted(FAMILIES)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise SystemExit(f"error: unknown families {unknown}: registered are {sorted(FAMILIES)}")
    for flag, value, low in (("--repeats", args.repeats, 1), ("--rounds", args.rounds, 1), ("--threads", args.threads, 1)):
        if value < low:
            raise SystemExit(f"error: {flag} must be >= {low}, got {value}")
    selection = peer_bench.parse_selection(args.peers)
    device = _device(args.device)
    torch.set_num_threads(args.threads)
    repeats, warmup = (1, 0) if args.quick else (args.repeats, 1)
    # resolved after set_num_threads: the CPU probe times matmuls on the threads the bench uses
    precisions = {p: resolve_precision(p, device, flag="--precisions") for p in dict.fromkeys(args.precisions)}
    text_tokenizer = train_text_tokenizer(CAPTIONS * 4, vocab_size=300) \
        if condition_kind(args.condition).uses_captions else None
    load_before = os.getloadavg()
    dtypes = sorted({precision.dtype for precision in precisions.values()}, key=str)
    # --quick: a smaller GEMM (1024^3, 3 runs), enough for a smoke test; a figure uses machine.RATE_SHAPE
    rate_args = dict(shape=(1024, 1024, 1024), runs=3) if args.quick else {}
    rates = {_dtype_name(d): {"start": limits.matmul_rate(d, device, **rate_args)} for d in dtypes}
    peers = peer_bench.discover(selection, families, device.type, args.condition)
    report = {"machine": {**describe(device, rate=False), "load_average_before": load_before},
              "code": _code_version(),
              "config": {**MATCHED, "codebook_size": CODEBOOK, "tokens": f"{SIDE}x{SIDE}",
                         "var_scales": list(VAR_SCALES),
                         "condition": args.condition, "generation_batch": GEN_BATCH, "cfg_scale": CFG,
                         "train_batch": TRAIN_BATCH, "repeats": repeats, "warmup": warmup, "rounds": args.rounds,
                         "steps": {f: list(steps_timed(f)) for f in families}},
              "precisions": {p: c.to_dict() for p, c in precisions.items()},
              "matmul_rate": rates, "peers": peers, "families": {}}
    for family in families:
        family_peers = [k for k in peers["available"] if peer_bench.PEERS[k].family == family]
        ours, theirs = [], {k: [] for k in family_peers}
        for r in range(args.rounds):              # ours, then each peer, per round: they see the same load
            print(f"[bench] {family} round {r + 1}/{args.rounds}: ours ...", file=sys.stderr, flush=True)
            ours.append(bench_family(family, args.condition, precisions, repeats, warmup, device, text_tokenizer))
            for key in family_peers:
                print(f"[bench] {family} round {r + 1}/{args.rounds}: {key} ...", file=sys.stderr, flush=True)
                theirs[key].append(peer_bench.run_peer(key, runs=repeats, warmup=warmup, threads=args.threads))
        report["families"][family] = side_by_side.family_entry(ours, theirs)
        for d, r in rates.items():                # the host's speed drifts: a reading after each family
            r.setdefault("after", {})[family] = limits.matmul_rate(getattr(torch, d), device, **rate_args)
        _progress(family, report["families"][family])     # a long run shows its figures as it goes
    if {"d3pm", "maskgit"} <= set(families):
        print("[bench] d3pm step against maskgit step, interleaved ...", file=sys.stderr, flush=True)
        first = next(iter(precisions.values()))
        report["d3pm_step_vs_maskgit"] = step_pair(args.condition, first, repeats, device, text_tokenizer)
    report["machine"]["load_average_after"] = os.getloadavg()
    for d, r in rates.items():
        # a family's limit uses the better of the readings just before and just after it: what the
        # machine did at best while that family ran (a shared host's GEMM rate moved 120 -> 175
        # GFLOP/s within one run, 2026-12-02)
        readings = [r["start"]] + [r["after"][f] for f in families]
        r["end"] = readings[-1]
        r["used_gflops"] = {f: max(readings[i]["gflops"], readings[i + 1]["gflops"]) for i, f in enumerate(families)}
    for family, entry in report["families"].items():
        side_by_side.add_limits(entry, {p: rates[_dtype_name(c.dtype)]["used_gflops"][family]
                                        for p, c in precisions.items()})
    report["table"] = side_by_side.table(report["families"], list(precisions))
    side_by_side.print_table(report["table"])
    if "d3pm_step_vs_maskgit" in report:
        side_by_side.print_step_pair(report["d3pm_step_vs_maskgit"])
    report["warnings"] = _load_warnings(load_before, report["machine"]["load_average_after"], args.threads)
    for w in report["warnings"]:
        print(f"[bench] warning: {w}", file=sys.stderr)
    if peers["missing"]:
        print(f"[bench] peer columns missing: {', '.join(peers['missing'])} (see peers.why)", file=sys.stderr)
    print(json.dumps(_rounded(report), indent=2))
    return 0


def _progress(family: str, entry: dict) -> None:
    """One stderr line per family as soon as it is done: the seconds measured, ours and the peers'."""
    def secs(figs: dict) -> str:
        return " ".join(f"{k}={v:.3f}" for k, v in figs.items() if k.endswith("_s") and isinstance(v, float))
    precisions = [k for k, v in entry.items() if isinstance(v, dict) and "precision" in v]
    ours = "; ".join(f"{p}: train_s={entry[p]['train_s']:.3f} " + " ".join(
        f"[{label}] {secs(gen)}" for label, gen in entry[p]["generate"].items()) for p in precisions)
    theirs = "; ".join(f"{name}: {secs(info) or info.get('errors', [{}])[0].get('error')}"
                       for name, info in entry["peers"].items())
    print(f"[bench] {family} done. ours {ours}" + (f" | {theirs}" if theirs else ""), file=sys.stderr, flush=True)


def _code_version() -> dict:
    """The commit timed and the files that differ from it (other work in the tree changes figures)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD").strip() or None,
            "modified": [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]}


def _load_warnings(before: tuple, after: tuple, threads: int) -> list[str]:
    """A loaded machine: with more runnable threads than cores, every small op of a 2-thread
    decode waits for both of its threads to be scheduled, so step-bound figures (AR: 256 steps)
    slow down 10-100x, far more than the matmul rate does.  Such a run's figures are not figures."""
    cores = os.cpu_count() or 1
    # the bench itself accounts for about `threads` of the 1-minute load average by the end
    busy = [(when, load[0]) for when, load in (("before", before), ("after", after))
            if load[0] > (1.0 if when == "before" else threads + 1.0)]
    return [f"load average {load:.1f} {when} the run on {cores} cores: other processes competed for the CPU, "
            f"so these timings overstate ours and the peers' (rerun on an idle machine)" for when, load in busy]


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise SystemExit(f"error: --device {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name}: CUDA is not available in this torch ({torch.__version__})")
    return device


def _rounded(x):
    if isinstance(x, float):
        return round(x, 4) if abs(x) < 100 else round(x, 1)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return [_rounded(v) for v in x] if isinstance(x, (list, tuple)) else x


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", help=f"families to time (default: all registered, {sorted(FAMILIES)})")
    p.add_argument("--precisions", nargs="+", default=["fp32", "auto"], choices=SAMPLING_CHOICES,
                   help="fp32; bf16 = bfloat16 weights for sampling, bfloat16 autocast for training; auto = bf16 "
                        "where this device runs it fast, else fp32")
    p.add_argument("--condition", default="class", choices=CONDITIONS,
                   help="class labels (1000 classes, as LlamaGen / VAR), captions (as Muse / DALL-E), or none")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per figure (the median is reported)")
    p.add_argument("--quick", action="store_true", help="one timed run, no warm-up: a smoke test, not a figure")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (the peers run on the CPU only)")
    p.add_argument("--peers", nargs="+", default=["auto"], metavar="PEER",
                   help=f"auto (per timed family, the peers conditioned like ours, else all its peers, where set up), none, "
                        f"or some of {sorted(peer_bench.PEERS)}")
    p.add_argument("--rounds", type=int, default=1,
                   help="per family, ours then the peers, this many times; figures are the median over rounds")
    return p


if __name__ == "__main__":
    sys.exit(main())
