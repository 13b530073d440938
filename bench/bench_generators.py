"""Sampling and training speed of every registered generator family at the peers' matched
configuration (../shared/PEERS.md), with the peers' own figures as ratios beside ours.

    python bench/bench_generators.py                      # every family, float32 and auto (a few minutes)
    python bench/bench_generators.py --quick              # one repeat, no warm-up: a smoke test
    python bench/bench_generators.py --families ar maskgit --precisions fp32
    python bench/bench_generators.py --precisions fp32 bf16   # bf16 even where it is slow

Precisions: fp32; bf16; auto = bf16 where this device runs it fast, else fp32 (train/precision.py;
a precision that resolves to one already timed is not timed twice).

Matched configuration: 16x16 = 256 tokens per image (VAR: its 10 scales 1..16, 680 tokens),
codebook 1024, width 256, depth 4, 8 heads of 32, MLP ratio 4, 1000 classes; generation batch 8,
guided (cfg 3: the conditional and null rows in one doubled batch) and unguided; training batch 16,
one forward + backward (no optimizer step); median of 5 runs after 1 warm-up; 2 threads.
Random weights: token generation only, the image decoder is not timed.  Prints one JSON object;
bench/README.md says what each figure means.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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

# PEERS.md, same machine kind, same matched configuration.  Seconds for 8 images; tokens/s.
PEERS = {
    "ar": {"LlamaGen": {"guided_s": 1.81, "unguided_s": 1.11, "train_tok_s": 6515},
           "DALLE-pytorch": {"guided_s": 2.41, "unguided_s": 1.31, "train_tok_s": 2955}},
    "maskgit": {"muse-maskgit-pytorch": {"guided_s": 3.89, "unguided_s": 2.11, "train_tok_s": 3992}},
    "var": {"VAR": {"guided_s": 0.74, "unguided_s": None, "train_tok_s": 4927}},
}
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


def timed(fn, repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of fn() over `repeats` runs after `warmup` untimed ones."""
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_generation(model, steps: int | None, repeats: int, warmup: int) -> dict:
    cond = condition(model, GEN_BATCH)
    run = lambda cfg: lambda: model.generate(cond, num_samples=GEN_BATCH, steps=steps, cfg_scale=cfg,  # noqa: E731
                                              generator=torch.Generator(model.device).manual_seed(0))
    out = {"unguided_s": timed(run(1.0), repeats, warmup, model.device)}
    if cond is not None:
        out["guided_s"] = timed(run(CFG), repeats, warmup, model.device)
    return out


def bench_training(model, precision: Choice, repeats: int, warmup: int) -> dict:
    model.train()
    g = torch.Generator().manual_seed(1)
    tokens = [torch.randint(0, CODEBOOK, (TRAIN_BATCH, s, s), generator=g).to(model.device)
              for s in model.spec.scales]
    cond = condition(model, TRAIN_BATCH)
    def step():
        with autocast(precision, model.device):
            loss, _ = model.loss(tokens, cond)
        loss.backward()
        model.zero_grad(set_to_none=True)

    seconds = timed(step, repeats, warmup, model.device)
    model.eval()
    n = TRAIN_BATCH * model.spec.tokens_per_image
    return {"train_s": seconds, "train_tok_s": n / seconds, "train_img_s": TRAIN_BATCH / seconds}


def bench_family(family: str, condition_kind: str, precisions: dict[str, Choice], repeats: int, warmup: int,
                 device: torch.device, text_tokenizer) -> dict:
    model = build(family, condition_kind, text_tokenizer).to(device)
    result = {"params_M": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2),
              "scales": list(model.spec.scales), "tokens_per_image": model.spec.tokens_per_image}
    timed_as: dict[str, dict] = {}                                  # chosen precision -> its timings
    for name, precision in precisions.items():
        if precision.chosen not in timed_as:
            timings = bench_training(model, precision, repeats, warmup)  # float32 weights (bf16: autocast)
            sampler = model.to(precision.dtype)                     # bf16: bfloat16 weights
            timings["generate"] = {_steps_label(s): bench_generation(sampler, s, repeats, warmup)
                                   for s in steps_timed(family)}
            model.float()
            timed_as[precision.chosen] = timings
        result[name] = {"precision": precision.chosen, **timed_as[precision.chosen]}
    result.update(_per_step(family, result, list(precisions)))
    result["speedup_vs_peer"] = _speedups(family, result, list(precisions))
    return result


def _steps_label(steps: int | None) -> str:
    return "default" if steps is None else f"{steps} steps"


def _per_step(family: str, result: dict, precisions: list[str]) -> dict:
    """Families timed at two step counts (D3PM): the marginal cost of one step, from the difference."""
    steps = steps_timed(family)
    if len(steps) < 2:
        return {}
    lo, hi = steps[0], steps[-1]
    out = {}
    for p in precisions:
        gen = result[p]["generate"]
        out[p] = {k: (gen[_steps_label(hi)][k] - gen[_steps_label(lo)][k]) / (hi - lo)
                  for k in gen[_steps_label(hi)]}
    return {"seconds_per_step": out}


def _speedups(family: str, result: dict, precisions: list[str]) -> dict:
    """Peer time / our time for generation (at the first matched step count), our tokens/s / the
    peer's for training: above 1 means we are faster."""
    out = {}
    for peer, figures in PEERS.get(family, {}).items():
        out[peer] = {}
        for p in precisions:
            ours = next(iter(result[p]["generate"].values()))
            ratios = {"train": result[p]["train_tok_s"] / figures["train_tok_s"]}
            for kind in ("guided_s", "unguided_s"):
                if figures[kind] and kind in ours:
                    ratios[kind.removesuffix("_s")] = figures[kind] / ours[kind]
            out[peer][p] = {k: round(v, 2) for k, v in ratios.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    families = args.families or sorted(FAMILIES)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise SystemExit(f"error: unknown families {unknown}: registered are {sorted(FAMILIES)}")
    repeats, warmup = (1, 0) if args.quick else (args.repeats, 1)
    device = torch.device(args.device)
    # resolved after set_num_threads: the CPU probe times matmuls on the threads the bench uses
    precisions = {p: resolve_precision(p, device, flag="--precisions") for p in dict.fromkeys(args.precisions)}
    text_tokenizer = train_text_tokenizer(CAPTIONS * 4, vocab_size=300) \
        if condition_kind(args.condition).uses_captions else None
    report = {"machine": describe(device),   # with the float32 matmul rate: the limit's basis
              "config": {**MATCHED, "codebook_size": CODEBOOK, "tokens": f"{SIDE}x{SIDE}",
                         "var_scales": list(VAR_SCALES),
                         "condition": args.condition, "generation_batch": GEN_BATCH, "cfg_scale": CFG,
                         "train_batch": TRAIN_BATCH, "repeats": repeats, "warmup": warmup,
                         "steps": {f: list(steps_timed(f)) for f in families}},
              "precisions": {p: c.to_dict() for p, c in precisions.items()},
              "families": {}}
    for family in families:
        print(f"[bench] {family} ...", file=sys.stderr, flush=True)
        report["families"][family] = bench_family(family, args.condition, precisions, repeats, warmup,
                                                   device, text_tokenizer)
    print(json.dumps(_rounded(report), indent=2))
    return 0


def _rounded(x):
    if isinstance(x, float):
        return round(x, 4) if abs(x) < 100 else round(x, 1)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return [_rounded(v) for v in x] if isinstance(x, list) else x


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
    p.add_argument("--device", default="cpu")
    return p


if __name__ == "__main__":
    sys.exit(main())
