"""`tokgen demo`: the main job on the embedded data, offline, on a laptop CPU, from scratch.

    tokgen demo                                        # 28 minutes on a 2-core AVX2 CPU (README)
    tokgen demo --tokenizer-steps 3000 --steps-per-family 3000 --n 1000 --nll-n 256
    tokgen demo --families maskgit var --steps-per-family 2000
    tokgen demo --tokenizer runs/tok/tokenizer         # reuse a trained tokenizer: skip its stage

Stages: captioned grids of the embedded data; the judges' own accuracy; the multi-scale shapes
tokenizer (`shapes-tiny-msvq` at --tokenizer-scales 1,2,4,8) trained for --tokenizer-steps and
judged; its tokens extracted (the train split limited to --token-limit items); then `tokgen
compare` on those tokens: the four generator families (AR, MaskGIT, VAR, D3PM),
caption-conditioned, size mini (width 128, depth 4), batch 16, lr 1e-3, each trained for
--steps-per-family optimizer steps and judged on a small sample at --curve-points points along the
way (quality against training images seen), then --n samples per family and step count, judged,
measured, timed. The report folder (--out) gets report.md (the comparison table first, then the
data, judges and tokenizer), the grids, quality_vs_time.png, quality_vs_training.png and
results.json.

Every budget is counted in optimizer steps at a fixed batch, i.e. in training images seen, never
in wall minutes: the same seed gives the same figures on a fast machine and a slow one (up to
float rounding, and bf16 where `auto` picks it), and the wall time is measured and reported per
stage and per family.  --tokenizer-minutes and --minutes-per-family are optional caps on top (a
run they stop depends on the machine; the report says so).  Precision is chosen per device
(`auto`: bf16 only where it is native and fast, float32 elsewhere; train/precision.py).
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

from ..distributed import is_main_process, wait_for_everyone
from .config_file import add_config_argument
from .options import parse_args

# The demo's token scales: 85 tokens (1 + 4 + 16 + 64).  In paired runs at the demo's budget every family
# matched as many captions or more on them as on the preset's 130 (README, "Why AR and D3PM learned slowly").
DEMO_SCALES = "1,2,4,8"

HELP = "run the main job on the embedded data: tokenizer, tokens, four generators compared (report.md)"


def build_parser() -> argparse.ArgumentParser:
    from tokgen.generators import FAMILIES

    from ..precision import CHOICES, SAMPLING_CHOICES

    p = argparse.ArgumentParser(prog="tokgen demo", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_config_argument(p)
    p.add_argument("--out", default="tokgen-out/demo", help="report folder (its run folders are rebuilt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge-n", type=int, default=500, help="test images per judge measurement")
    t = p.add_argument_group("the tokenizer and its tokens")
    t.add_argument("--tokenizer", help="use this trained tokenizer folder instead of training one")
    t.add_argument("--tokenizer-preset", default="shapes-tiny-msvq",
                   help="tokenizer preset (multi-scale: VAR needs it)")
    t.add_argument("--tokenizer-scales", default=None, metavar="S1,S2,...",
                   help=f"token scales of a multi-scale preset (default {DEMO_SCALES}; '' keeps the preset's own, "
                        "1,2,3,4,6,8 for shapes-tiny-msvq): 85 tokens instead "
                        "of 130 make every generator step cheaper, and every family matched as many or more "
                        "captions on them in paired runs (README, \"Why AR and D3PM learned slowly\")")
    t.add_argument("--tokenizer-steps", type=int, default=1_000,
                   help="optimizer steps of the tokenizer at its preset batch (32): 1,000 steps judged 99.6-100%% "
                        "(README)")
    t.add_argument("--tokenizer-batch-size", type=int, default=None,
                   help="tokenizer training batch (default: the preset's, 32 for the shapes presets)")
    t.add_argument("--tokenizer-minutes", type=float, default=0.0,
                   help="optional wall-time cap on the tokenizer (0 = none)")
    t.add_argument("--tokenizer-eval-n", type=int, default=500,
                   help="test images reconstructed and judged after training")
    t.add_argument("--tokenizer-precision", default="fp32", choices=CHOICES,
                   help="tokenizer training precision: fp32 even where bf16 is fast, as bf16 hurt the codebook "
                        "(README); auto = bf16 where the device runs it fast")
    t.add_argument("--token-limit", type=int, default=8_000,
                   help="train items encoded (1,000 steps at batch 16 see 2 epochs of 8,000; the 432 one-object "
                        "captions about 37 times each)")
    t.add_argument("--eval-items", type=int, default=256,
                   help="val and test items encoded (at least --n and --nll-n)")
    c = p.add_argument_group("the comparison (tokgen compare)")
    c.add_argument("--families", nargs="+", default=sorted(FAMILIES), metavar="FAMILY",
                   help="generator families to compare (default: every registered one)")
    c.add_argument("--steps-per-family", type=int, default=1_000,
                   help="optimizer steps of each family at --batch-size (so the same training images for every family)")
    c.add_argument("--minutes-per-family", type=float, default=0.0,
                   help="optional wall-time cap on each family's training (0 = none)")
    c.add_argument("--size", default="mini", help="generator size preset (mini: width 128, depth 4)")
    c.add_argument("--batch-size", type=int, default=16,
                   help="generator training batch: on a small CPU budget more, smaller steps learned more "
                        "(VAR, mini: batch 16 831 steps 82.5%% caption match; batch 32 454 steps 61%%)")
    c.add_argument("--lr", type=float, default=1e-3, help="generator learning rate (peak of the warm-up + cosine)")
    c.add_argument("--generator-precision", default="auto", choices=CHOICES,
                   help="generator training precision (auto: bf16 where the device runs it fast, else fp32)")
    c.add_argument("--n", type=int, default=200, help="samples per family and step count")
    c.add_argument("--sample-steps", nargs="+", default=["maskgit=8", "d3pm=16"], metavar="FAMILY=S1,S2",
                   help="sampling step counts (compare's --sample-steps)")
    c.add_argument("--precision", default="auto", choices=SAMPLING_CHOICES,
                   help="sampling and likelihood forwards: float32 or bfloat16 autocast (auto: bf16 where fast)")
    c.add_argument("--nll-n", type=int, default=32,
                   help="held-out items for NLL / the D3PM bound (T forwards each for D3PM)")
    c.add_argument("--curve-points", type=int, default=4,
                   help="judged points during each family's training (quality against training images seen)")
    c.add_argument("--curve-n", type=int, default=50,
                   help="samples judged at each of those points (a curve, so a small sample: +-7 points at 50; "
                        "the final evaluation judges --n)")
    c.add_argument("--compare-flags", default="", metavar="FLAGS",
                   help="more `tokgen compare` flags as one string, e.g. \"--cfg-scale 2 --set depth=6\"")
    return p


def _cap(minutes: float) -> str:
    return f" (capped at {minutes:g} min)" if minutes else ""


def _stage(title: str, number: int, total: int) -> float:
    print(f"[demo {number}/{total}] {title}", flush=True)
    return time.perf_counter()


def main(argv: list[str]) -> int:
    from ..jobs.checks import check_compare

    args = parse_args(build_parser(), argv)
    _check_budgets(args)                            # a bad value: `error: ...` (tokgen.train.cli)
    _check_tokenizer_scales(args)
    comparison = _compare_config(args)              # every setting checked before the first stage
    check_compare(comparison)
    return _run(args, comparison, "tokgen demo " + shlex.join(argv))


def _run(args, comparison, command: str) -> int:
    from ..jobs.comparison import compare

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"seconds": {}}
    grids: dict = {}
    main_process = is_main_process()
    total = 5
    if main_process:   # the machine and its matmul rate now; the rate again at the end (a shared host varies)
        results["machine"] = _machine()

    if main_process:   # quick and single-process: only the main process writes the grids and measures the judges
        t = _stage("embedded data: writing captioned grids", 1, total)
        grids = _data_grids(out)
        results["seconds"]["data"] = round(time.perf_counter() - t, 1)
        t = _stage(f"judges: shapes on {args.judge_n} test images (clean, degraded), digits", 2, total)
        results.update(_judges(args))
        results["seconds"]["judges"] = round(time.perf_counter() - t, 1)

    t = _stage(_tokenizer_title(args), 3, total) if main_process else time.perf_counter()
    trained = _tokenizer(args, out)
    if trained is not None:
        results["tokenizer"] = trained.to_dict()
        grids["tokenizer reconstructions (top: test images, bottom: reconstructions)"] = \
            sorted((out / "tokenizer-run" / "samples").glob("*.png"))[-1]
    results["seconds"]["tokenizer"] = round(time.perf_counter() - t, 1)

    if main_process:
        t = _stage(f"tokens: encoding {args.token_limit:,} train and {_eval_items(args):,} val and test items",
                   4, total)
        _extract(comparison.tokenizer, Path(comparison.tokens), args)
        results["seconds"]["tokens"] = round(time.perf_counter() - t, 1)
    wait_for_everyone()       # the others wait while the main process extracts the tokens

    if main_process:
        _stage(f"compare: {', '.join(comparison.families)}, {comparison.train.max_steps:,} steps of "
               f"{comparison.train.batch_size} each{_cap(comparison.train.max_minutes)}, {comparison.n} samples",
               5, total)
    t = time.perf_counter()
    report = compare(comparison, command=command,
                     extra_report=_report_sections(out, results, grids) if main_process else [],
                     extra_results={"demo": results, "title": "tokgen demo"} if main_process else None)
    if report is not None:
        results["seconds"]["compare"] = round(time.perf_counter() - t, 1)
        results["seconds"]["total"] = round(time.perf_counter() - start, 1)
        _record_total(out, report, results)
        print(f"[demo] {results['seconds']['total'] / 60:.1f} min in all; report: {report}")
    return 0


def _check_budgets(args) -> None:
    import math

    for flag, value in (("--tokenizer-steps", args.tokenizer_steps), ("--steps-per-family", args.steps_per_family),
                        ("--tokenizer-batch-size", 1 if args.tokenizer_batch_size is None else args.tokenizer_batch_size),
                        ("--judge-n", args.judge_n), ("--token-limit", args.token_limit),
                        ("--eval-items", args.eval_items)):
        if value < 1:
            raise ValueError(f"{flag} {value}: must be >= 1")
    if args.tokenizer_eval_n < 0:
        raise ValueError(f"--tokenizer-eval-n {args.tokenizer_eval_n}: must be >= 0 (0 = skip)")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: must be >= 0")
    for flag, value in (("--tokenizer-minutes", args.tokenizer_minutes), ("--minutes-per-family", args.minutes_per_family)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{flag} {value}: must be >= 0 (0 = no cap)")
    if args.tokenizer:
        from ..jobs.checks import check_folder

        check_folder(args.tokenizer, "--tokenizer", "a tokenizer folder",
                     "pass the folder train-tokenizer wrote (<out-dir>/tokenizer), or leave --tokenizer out to train one")
    from ..jobs.checks import check_output_folder

    check_output_folder(args.out, "--out")


def _record_total(out: Path, report: Path, results: dict) -> None:
    """The compare stage and the whole demo are timed only once the report exists: add them and the
    machine (its matmul rate measured again) to results.json and to the report's wall-time table."""
    from tokgen.eval.compare import RESULTS, load_results, save_results

    from ..machine import fp32_matmul_gflops

    machine = results["machine"]
    machine["fp32_matmul_gflops_end"] = fp32_matmul_gflops(device=machine["device"])
    saved = load_results(out / RESULTS)
    saved.setdefault("demo", {}).update(seconds=results["seconds"], machine=machine)
    save_results(saved, out / RESULTS)
    seconds = results["seconds"]
    text = Path(report).read_text().replace(
        _STAGE_TIMES_PENDING, f"| compare (training, curve points and evaluation of every family) | "
                              f"{seconds['compare']:,.0f} |\n| **total** | **{seconds['total']:,.0f}** "
                              f"({seconds['total'] / 60:.1f} min) |\n\n{_machine_text(machine)}")
    Path(report).write_text(text)


def _machine() -> dict:
    import torch

    from ..machine import describe

    return describe("cuda" if torch.cuda.is_available() else "cpu")


def _machine_text(m: dict) -> str:
    """The machine under the stage times: another machine's wall time compares through the rates."""
    where = f"GPU {m['gpu']}" if "gpu" in m else f"CPU {m.get('cpu') or 'unknown'} ({m['cpu_capability']})"
    shape = " @ ".join(f"{a}x{b}" for a, b in ((m["matmul_shape"][0], m["matmul_shape"][1]),
                                                (m["matmul_shape"][1], m["matmul_shape"][2])))
    return (f"Machine: {where}, {m['threads']} threads, torch {m['torch']}. Float32 matmul rate ({shape}, measured "
            f"in this run): {m['fp32_matmul_gflops']:g} GFLOP/s at the start, {m['fp32_matmul_gflops_end']:g} at "
            f"the end. To compare these times with another machine's, scale by the two machines' rates.")


# ---------------------------------------------------------------------------- stages

def _data_grids(out: Path) -> dict:
    import torch

    from tokgen.eval.visualize import save_captioned_grid
    from tokgen.data import build_dataset

    grids = {}
    for name in ("shapes", "digits", "photos"):
        ds = build_dataset(name, "train")
        items = [ds[i] for i in range(16)]
        images = torch.stack([it["image"] for it in items])
        titles = [it["caption"] or str(it["label"]) for it in items]
        grids[f"{name}: 16 training items"] = save_captioned_grid(images, titles, out / f"data-{name}.png", ncol=8,
                                                                  suptitle=f"{name}: {len(ds)} training items")
    return grids


def _judges(args) -> dict:
    from tokgen.eval.judges import digits as digits_judge
    from tokgen.eval.judges import shapes as shapes_judge

    return {"shapes_judge": shapes_judge.measure(args.judge_n, 32, 1, args.seed),
            "digits_judge": digits_judge.measure(args.seed)}


def _check_tokenizer_scales(args) -> None:
    """--tokenizer-scales resolved (DEMO_SCALES for a multi-scale preset unless given) and put
    through the tokenizer config's own checks, before the first stage rather than minutes later
    in train-tokenizer."""
    from tokgen.tokenizers_vq import PRESETS, get_preset

    if args.tokenizer_scales is None:
        preset = PRESETS.get(args.tokenizer_preset)
        args.tokenizer_scales = DEMO_SCALES if preset is not None and len(preset.spec.scales) > 1 else ""
    if not args.tokenizer_scales:
        return
    try:
        get_preset(args.tokenizer_preset, scales=_scales(args.tokenizer_scales))
    except ValueError as e:
        raise ValueError(f"--tokenizer-scales {args.tokenizer_scales!r}: {e} (or --tokenizer-scales '' "
                         f"for the preset's own scales)") from None


def _scales(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"--tokenizer-scales {text!r}: give whole numbers, e.g. {DEMO_SCALES}") from None


def _tokenizer_title(args) -> str:
    if args.tokenizer:
        return f"tokenizer: using {args.tokenizer}"
    scales = f" (scales {args.tokenizer_scales})" if args.tokenizer_scales else ""
    batch = "" if args.tokenizer_batch_size is None else f" of {args.tokenizer_batch_size}"
    return (f"tokenizer: training {args.tokenizer_preset}{scales} for {args.tokenizer_steps:,} steps{batch}"
            f"{_cap(args.tokenizer_minutes)}, then judging its "
            f"reconstructions of {args.tokenizer_eval_n} test images")


def _tokenizer(args, out: Path):
    """Train the tokenizer from scratch into OUT/tokenizer-run (every process trains); its result
    on the main process.  None with --tokenizer (a trained one is used) and on the other processes."""
    if args.tokenizer:
        return None
    from ..jobs.tokenizer import TokenizerRunConfig, preset_train_config, train_tokenizer

    run = out / "tokenizer-run"
    if is_main_process():
        shutil.rmtree(run, ignore_errors=True)   # a demo always starts from scratch
    batch = {} if args.tokenizer_batch_size is None else {"batch_size": args.tokenizer_batch_size}
    train = preset_train_config(args.tokenizer_preset, max_steps=args.tokenizer_steps,
                                max_minutes=args.tokenizer_minutes, mixed_precision=args.tokenizer_precision,
                                out_dir=str(run), seed=args.seed, resume=None, **batch)
    scales = {"scales": list(_scales(args.tokenizer_scales))} if args.tokenizer_scales else {}
    return train_tokenizer(TokenizerRunConfig(preset=args.tokenizer_preset, overrides=scales, train=train,
                                              eval_n=args.tokenizer_eval_n))


def _extract(tokenizer: str, tokens: Path, args) -> None:
    """Train tokens (limited), then val and test (enough for --n and --nll-n), into one folder."""
    from ..jobs.tokens import ExtractConfig, extract_tokens

    shutil.rmtree(tokens, ignore_errors=True)
    for splits, limit in ((("train",), args.token_limit), (("val", "test"), _eval_items(args))):
        extract_tokens(ExtractConfig(tokenizer=tokenizer, out=str(tokens), splits=splits, limit=limit))


def _eval_items(args) -> int:
    return max(args.eval_items, args.n, args.nll_n)


def _compare_config(args):
    """compare's settings: the demo's budgets, afresh (retrain), the step counts of the families
    compared; then --compare-flags on top, read by compare's own flag definitions."""
    import dataclasses

    from ..jobs.comparison import CompareConfig
    from .compare_flags import add_compare_flags, config_from_flags, parse_sample_steps
    from .options import given_flags

    out = Path(args.out)
    base = CompareConfig(tokens=str(out / "tokens"), tokenizer=args.tokenizer or str(out / "tokenizer-run" / "tokenizer"))
    train = dataclasses.replace(base.train, max_steps=args.steps_per_family, max_minutes=args.minutes_per_family,
                                mixed_precision=args.generator_precision, seed=args.seed,
                                batch_size=args.batch_size, lr=args.lr)
    steps = {f: s for f, s in parse_sample_steps(args.sample_steps).items() if f in args.families}
    config = dataclasses.replace(base, out=args.out, retrain=True, families=tuple(args.families), size=args.size,
                                 condition="text", train=train, curve_points=args.curve_points,
                                 curve_n=args.curve_n, n=args.n, nll_n=args.nll_n, precision=args.precision,
                                 sample_steps=steps)
    parser = argparse.ArgumentParser(prog="tokgen demo --compare-flags", add_help=False)
    add_compare_flags(parser, required=False)
    given, unknown = given_flags(parser, args.compare_flags)
    if unknown:
        raise ValueError(f"--compare-flags {args.compare_flags!r}: {' '.join(unknown)} is not a flag of "
                         "`tokgen compare` (see tokgen compare --help)")
    return config_from_flags(given, base=config)


# ---------------------------------------------------------------------------- the demo's report sections

def _report_sections(out: Path, results: dict, grids: dict) -> list[str]:
    """The data, the judges and the tokenizer, after the comparison's own sections."""
    s = results["shapes_judge"]
    attrs = ("shape", "color", "size", "position", "caption_match")
    lines = ["## The judges", "",
             f"Shapes judge on {s['n']} real test images (32 px, one object); degraded = Gaussian blur "
             f"sigma {s['degradation']['blur_sigma']}, noise {s['degradation']['noise_sigma']}, "
             f"colour shift {s['degradation']['color_shift']}.", "",
             "| images | " + " | ".join(attrs) + " |", "|---" * (len(attrs) + 1) + "|"]
    for kind in ("clean", "degraded"):
        lines.append(f"| {kind} | " + " | ".join(f"{100 * s[kind][a]:.1f}%" for a in attrs) + " |")
    d = results["digits_judge"]["accuracy"]
    lines += ["", "Digits judge, test accuracy: "
              + ", ".join(f"{size} px {100 * acc['test']:.1f}%" for size, acc in d.items()), ""]
    if "tokenizer" in results:
        lines += _tokenizer_section(results["tokenizer"])
    lines += _stage_times(results)
    lines += ["## The data and the tokenizer's reconstructions", ""]
    lines += [f"**{name}**\n\n![{name}]({Path(path).relative_to(out)})\n" for name, path in grids.items()]
    return lines


def _tokenizer_section(t: dict) -> list[str]:
    test = t.get("test")
    if not test:
        return []
    scales = " / ".join(f"{100 * v['usage']:.1f}%" for v in test["scales"].values())
    judge = test.get("judge", {})
    return ["## The tokenizer", "",
            f"`{t['preset']}` (scales {', '.join(test['scales'])}, codebook {test['codebook_size']}) trained from "
            f"scratch for {t['steps']:,} steps" + (f" of {t['batch_size']} ({t['images_seen']:,} images)"
                                                   if t.get("images_seen") else "")
            + f", {_precision_text(t.get('precision'))}, in {t['minutes']:.1f} min (stopped by {t.get('stopped', '?')}); "
            f"{test['n']} test images reconstructed:", "",
            "| PSNR | SSIM | codebook usage per scale | perplexity | judge: caption match | shape | colour | size "
            "| position |", "|---|---|---|---|---|---|---|---|---|",
            f"| {test['psnr']:.2f} dB | {test['ssim']:.3f} | {scales} | {test['all_scales']['perplexity']:.1f} | "
            + " | ".join(f"{100 * judge.get(a, float('nan')):.1f}%"
                         for a in ("caption_match", "shape", "color", "size", "position")) + " |", ""]


def _precision_text(choice) -> str:
    from tokgen.eval.compare import precision_text

    return precision_text(choice) if choice else "precision not recorded"


_STAGE_TIMES_PENDING = "| compare | (timed when the report is written) |"


def _stage_times(results: dict) -> list[str]:
    """Wall time of every stage (the compare stage and the total are filled in at the end)."""
    seconds = results.get("seconds", {})
    return ["## Wall time per stage", "", "| stage | seconds |", "|---|---|",
            *[f"| {stage} | {value:,.0f} |" for stage, value in seconds.items()], _STAGE_TIMES_PENDING,
            "", "Each family's training, curve points and evaluation are timed apart in the Training table above.", ""]


if __name__ == "__main__":
    from tokgen.train.cli import main as tokgen

    sys.exit(tokgen(["demo", *sys.argv[1:]]))
