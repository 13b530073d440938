"""`tokgen compare`: the main job.  One tokenizer, one token folder; every requested generator
family trained on the same tokens with the same budget, then sampled, judged, timed and reported.

    tokgen compare --tokens runs/tokens-shapes --tokenizer runs/tok/tokenizer --max-steps 2000
    tokgen compare --tokens ... --tokenizer ... --families maskgit d3pm --sample-steps maskgit=4,8,12 d3pm=16,64
    tokgen compare ... --max-steps 3000 --set d3pm:transition=uniform --train-flags "--lr 1e-3"
    accelerate launch --multi_gpu --num_processes 4 -m tokgen compare --tokens ... --tokenizer ...

The budget is --max-steps optimizer steps per family (at the train-generator batch: the same
training images for every family and on every machine); --max-minutes is an optional wall-time
cap.  For each family the run folder <runs>/<family> is trained by `tokgen train-generator`
(called in process, with --eval-n 0), judging --curve-n samples at --curve-points evenly spaced
steps on the way (quality against training images seen); a folder that already holds a generator
finished with the same training flags is loaded instead, and one with other flags (a larger
budget, say) is resumed (--retrain: start afresh).  Then, on the main process only (the others
exit once training is done):

- N samples per family and sampling step count, for the conditions (captions or labels) of the
  first N validation items, one seed for all;
- the dataset's judge on them (caption match and per-attribute accuracy for shapes, class
  accuracy for digits); Frechet distance, KID and precision/recall against N real test images in
  the judge's feature space (eval/features.py), next to the same figures for N real validation
  images (the real-vs-real floor) and for the decoded real validation tokens (the tokenizer's ceiling);
- sampling seconds per image and network evaluations (NFE) per image, counted while sampling;
- NLL in bits per token on held-out test items where the family defines one (AR, VAR exact;
  D3PM its ELBO bound; MaskGIT none).

The report folder gets report.md (one table, best values in bold), quality_vs_time.png,
quality_vs_training.png, a grid of samples per family and step count, and results.json with every
number and setting, the wall time of each family's training, curve points and evaluation included.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import is_main_process, world_size
from .options import add_dataclass_options, dataclass_from_args

HELP = "train every generator family on one tokenizer's tokens with one budget; sample, judge, time, report"

DEFAULT_FAMILIES = ("ar", "maskgit", "var", "d3pm")
# sampling step counts of the families that have a choice (the others: their one fixed count)
DEFAULT_SAMPLE_STEPS = {"maskgit": [8], "d3pm": [16, 64]}
FIXED_STEPS = {"ar": "one step per token", "var": "one step per scale"}
TRAIN_RECORD = "compare-train.json"   # the train-generator flags a finished run was trained with


def build_parser() -> argparse.ArgumentParser:
    from tokgen.generators import SIZES

    from ..precision import CHOICES, SAMPLING_CHOICES
    from ..tasks.generator import SampleConfig

    p = argparse.ArgumentParser(prog="tokgen compare", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--tokens", required=True, help="a token folder with train, val and test splits "
                                                   "(`tokgen extract-tokens`)")
    p.add_argument("--tokenizer", required=True, help="the tokenizer folder the tokens were extracted with")
    p.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), metavar="FAMILY",
                   help=f"generator families to compare (default: {' '.join(DEFAULT_FAMILIES)})")
    p.add_argument("--out", default="tokgen-out/compare", help="report folder")
    p.add_argument("--runs", help="where each family's run folder goes (default: OUT/runs)")
    p.add_argument("--retrain", action="store_true", help="train every family afresh, even if its run folder "
                                                          "holds a finished generator")
    p.add_argument("--seed", type=int, default=0, help="seeds training (initial weights, data order) and sampling")
    g = p.add_argument_group("training: the same for every family")
    g.add_argument("--max-steps", type=int, default=2_000,
                   help="optimizer-step budget per family: at a fixed batch, the same training images on any "
                        "machine, so the same seed gives the same figures")
    g.add_argument("--max-minutes", type=float, default=0.0,
                   help="optional wall-time cap per family (0 = none); a run it stops depends on the machine")
    g.add_argument("--size", default="small", choices=list(SIZES), help="size preset of every generator")
    g.add_argument("--condition", default="text", choices=("text", "class", "none"),
                   help="what the generators are conditioned on (text: the captions; shapes' judge reads them)")
    g.add_argument("--mixed-precision", default="auto", choices=CHOICES,
                   help="training precision (auto: bf16 where the training device runs it fast, else fp32)")
    g.add_argument("--set", action="append", metavar="[FAMILY:]KEY=VALUE",
                   help="override a config field of every family, or of one (repeatable), e.g. "
                        "--set depth=6 --set d3pm:transition=uniform")
    g.add_argument("--train-flags", default="", metavar="FLAGS",
                   help="more `tokgen train-generator` flags for every family, as one string, e.g. \"--lr 1e-3\"")
    s = p.add_argument_group("sampling and evaluation")
    s.add_argument("--n", type=int, default=500, help="samples per family and step count (and real images per set)")
    s.add_argument("--sample-steps", nargs="+", default=[], metavar="FAMILY=S1,S2",
                   help="sampling step counts, e.g. maskgit=4,8,12 d3pm=16,64 (default: maskgit=8 d3pm=16,64; "
                        "AR and VAR have fixed counts)")
    s.add_argument("--sample-batch-size", type=int, default=64,
                   help="images sampled (and decoded, and scored for NLL) at once")
    s.add_argument("--precision", default="auto", choices=SAMPLING_CHOICES,
                   help="sampling and likelihood forwards in float32 or under bfloat16 autocast (auto: bf16 "
                        "where --device runs it fast)")
    s.add_argument("--nll-n", type=int, default=256, help="held-out test items for NLL / ELBO (0 = skip)")
    s.add_argument("--grid-n", type=int, default=16, help="samples shown in each family's grid")
    s.add_argument("--curve-points", type=int, default=5,
                   help="judged points during training, evenly spaced over --max-steps (the last at the end): "
                        "quality against training images seen (0 = none)")
    s.add_argument("--curve-n", type=int, default=100, help="samples judged at each of those points")
    s.add_argument("--device", default=None, help="where to sample and evaluate (default: cuda when available)")
    add_dataclass_options(p, SampleConfig, skip=("steps",), title="sampling settings (SampleConfig)")
    return p


# ---------------------------------------------------------------------------- the command

class _Stages:
    """`[compare k/n] title` lines, printed by the main process only."""

    def __init__(self, total: int):
        self.total, self.k = total, 0

    def __call__(self, title: str) -> None:
        self.k += 1
        if is_main_process():
            print(f"[compare {self.k}/{self.total}] {title}", flush=True)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    path = run(args, argv)
    if path is not None:
        print(f"[compare] report: {path}")
    return 0


def run(args: argparse.Namespace, argv: list[str], extra_report: list[str] = (),
        extra_results: dict | None = None) -> Path | None:
    """The whole comparison.  Returns report.md's path on the main process; None on the others,
    which leave once every family is trained.  `extra_report` (markdown lines) and
    `extra_results` go into the report and results.json as well (the demo's own sections)."""
    try:
        plan = _plan(args)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    stage = _Stages(2 * len(plan.families) + 3)
    stage(f"inputs: tokens {args.tokens} ({plan.source}, spec {plan.spec}); sampling steps: "
          + "; ".join(f"{f} {_steps_text(plan.steps[f])}" for f in plan.families))
    training = {family: _train_or_load(args, family, plan, stage) for family in plan.families}
    if not is_main_process():
        return None
    results = _evaluate(args, argv, plan, training, stage)
    results.update(extra_results or {})
    stage(f"report: {Path(args.out) / 'report.md'}, quality_vs_time.png, results.json")
    from tokgen.eval.compare import write_report

    return write_report(args.out, results, extra=list(extra_report))


# ---------------------------------------------------------------------------- checking the inputs

@dataclass
class Plan:
    families: list[str]                       # in the order given
    steps: dict[str, list[int | None]]        # sampling step counts per family (None: the family's own)
    overrides: dict[str, list[str]]           # --set KEY=VALUE per family
    train_flags: list[str]                    # more train-generator flags, for every family
    runs: Path                                # <runs>/<family> are the run folders
    spec: dict                                # the tokenizer spec of the tokens
    source: str                               # the dataset the tokens came from
    dataset_options: dict                     # and its options (num_objects), as extract-tokens recorded them


def _plan(args) -> Plan:
    """Every input checked before any training: families, step counts, overrides, the token
    folder against the tokenizer and against its dataset, the sizes of the splits."""
    from tokgen.generators import family_class
    from tokgen.tokenizers_vq import VQTokenizer
    from tokgen.data.tokens import TokenDataset

    from ..tasks.generator import check_same_spec

    families = list(dict.fromkeys(args.families))
    for family in families:
        family_class(family)                  # an unknown family: ValueError naming the known ones
    if args.n < 4:
        raise ValueError(f"--n must be at least 4 (precision/recall needs k + 1 = 4 samples), got {args.n}")
    if args.max_steps < 1 or args.max_minutes < 0:
        raise ValueError(f"need --max-steps >= 1 and --max-minutes >= 0, got {args.max_steps} and {args.max_minutes}")
    val = TokenDataset(args.tokens, "val")    # FileNotFoundError: no token folder / no val split
    splits = val.meta.get("splits", {})
    if "test" not in splits or "train" not in splits:
        raise ValueError(f"{args.tokens} has splits {sorted(splits)}, but compare trains on train, conditions on "
                         "val and measures against test: extract them with "
                         "`tokgen extract-tokens --splits train,val,test`")
    for what, need, split in (("--n", args.n, "val"), ("--nll-n", args.nll_n, "test")):
        if need > splits[split]:
            raise ValueError(f"{what} {need} needs {need} {split} items but {args.tokens} has {splits[split]}: "
                             f"lower {what} or extract more {split} items")
    tokenizer = VQTokenizer.from_pretrained(args.tokenizer)
    check_same_spec(val.spec, tokenizer, f"the token folder {args.tokens}")
    _check_source(val, tokenizer.spec.image_size, args.tokens, args.n)
    return Plan(families=families, steps=_sample_steps(args.sample_steps, families),
                overrides=_overrides(args.set, families), train_flags=shlex.split(args.train_flags),
                runs=Path(args.runs) if args.runs else Path(args.out) / "runs", spec=val.spec, source=val.source,
                dataset_options=val.dataset_options)


def _check_source(split, image_size: int, tokens: str, n: int, m: int = 16) -> None:
    """The real images come from the dataset itself (with the options the tokens were extracted
    with): its first items must be the token folder's, and its val and test splits must hold n
    images each."""
    from tokgen.data import build_dataset

    source, options = split.source, split.dataset_options
    ds = build_dataset(source, "val", image_size, **options)
    for name, size in (("val", len(ds)), ("test", len(build_dataset(source, "test", image_size, **options)))):
        if size < n:
            raise ValueError(f"--n {n} needs {n} real {name} images but {source!r} has {size}: lower --n")
    m = min(m, len(split), len(ds))
    items = [ds[i] for i in range(m)]
    if [it["caption"] for it in items] != list(split.captions[:m]) or \
            [it["label"] for it in items] != split.labels[:m].tolist():
        raise ValueError(f"the val items of {tokens} are not the first items of the {source!r} val split at "
                         f"{image_size} px (captions or labels differ): extract the tokens from that dataset "
                         "with `tokgen extract-tokens`")


def _sample_steps(items: list[str], families: list[str]) -> dict[str, list[int | None]]:
    """--sample-steps maskgit=4,8 d3pm=16,64 on top of the defaults; AR and VAR have one fixed count."""
    steps = {f: list(DEFAULT_SAMPLE_STEPS.get(f, [None])) for f in families}
    for item in items:
        family, sep, values = item.partition("=")
        if not sep:
            raise ValueError(f"--sample-steps expects FAMILY=S1,S2 (e.g. maskgit=4,8,12), got {item!r}")
        if family not in families:
            raise ValueError(f"--sample-steps names {family!r}, which is not among --families {families}")
        if family in FIXED_STEPS:
            raise ValueError(f"{family} samples with a fixed step count ({FIXED_STEPS[family]}): "
                             f"drop it from --sample-steps")
        try:
            counts = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            counts = []
        if not counts or min(counts) < 1:
            raise ValueError(f"--sample-steps {item!r}: give positive integers, e.g. {family}=8,16")
        steps[family] = list(dict.fromkeys(counts))
    return steps


def _overrides(pairs: list[str] | None, families: list[str]) -> dict[str, list[str]]:
    """--set depth=6 (every family) and --set d3pm:transition=uniform (one family, if compared),
    each field checked against the family's config before anything is trained."""
    import dataclasses

    from tokgen.generators import family_class

    out: dict[str, list[str]] = {f: [] for f in families}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        family, _, field = key.rpartition(":")
        if not sep or not field:
            raise ValueError(f"--set expects [FAMILY:]KEY=VALUE, got {pair!r} (e.g. --set d3pm:timesteps=200)")
        if family:
            family_class(family)              # a misspelt family is an error; one not compared is ignored
        for f in ([family] if family in families else []) if family else families:
            config = family_class(f).config_class
            if field not in {x.name for x in dataclasses.fields(config)}:
                raise ValueError(f"--set {pair!r}: {config.__name__} has no field {field!r}; set it for the "
                                 f"families that have it, e.g. --set maskgit:{field}={value}")
            out[f].append(f"{field}={value}")
    return out


# ---------------------------------------------------------------------------- training

def _steps_text(steps: list[int | None]) -> str:
    return ", ".join(str(s) for s in steps if s is not None) or "fixed"


def _budget_text(args) -> str:
    parts = [f"{args.max_steps:,} steps"] + ([f"{args.max_minutes:g} min"] if args.max_minutes else [])
    return " or ".join(parts)


def _train_argv(args, family: str, plan: Plan) -> list[str]:
    """The `tokgen train-generator` flags of one family: everything but the family is shared."""
    argv = ["--tokens", str(args.tokens), "--tokenizer", str(args.tokenizer), "--family", family,
            "--size", args.size, "--condition", args.condition, "--max-steps", str(args.max_steps),
            "--max-minutes", str(args.max_minutes), "--mixed-precision", args.mixed_precision,
            "--seed", str(args.seed), "--out-dir", str(plan.runs / family),
            "--eval-n", "0",          # compare does the judged evaluation itself
            "--sample-every", "0"]    # no sample grids inside the budget
    for override in plan.overrides[family]:
        argv += ["--set", override]
    return argv + _curve_argv(args, family, plan) + plan.train_flags


def _curve_argv(args, family: str, plan: Plan) -> list[str]:
    """The judged points during training: every max_steps / curve_points steps (and at the end),
    curve_n samples drawn with the sampling settings of the final evaluation (the family's
    first sampling step count)."""
    if not args.curve_points or not args.curve_n:
        return ["--eval-every", "0"]
    argv = ["--eval-every", str(max(1, args.max_steps // args.curve_points)), "--curve-n", str(args.curve_n)]
    for name, value in _sampling_flags(args).items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    steps = plan.steps[family][0]
    return argv + (["--steps", str(steps)] if steps is not None else [])


def _sampling_flags(args) -> dict:
    """The SampleConfig flags as given, steps aside (compare sets those per family): None leaves a
    setting to each family's default, which every result row records resolved."""
    import dataclasses

    from ..tasks.generator import SampleConfig

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(SampleConfig) if f.name != "steps"}


def _train_or_load(args, family: str, plan: Plan, stage) -> dict:
    """Train one family with `tokgen train-generator` (every process: the Trainer distributes it),
    unless its run folder holds a generator finished with the very same flags."""
    from . import train_generator

    run_dir, argv = plan.runs / family, _train_argv(args, family, plan)
    record = run_dir / TRAIN_RECORD
    finished = not args.retrain and (run_dir / "generator" / "config.json").is_file() and record.is_file() \
        and json.loads(record.read_text()).get("argv") == argv
    if finished:
        stage(f"{family}: loading the generator finished in {run_dir} with the same training flags")
    else:
        stage(f"train {family}: size {args.size}, condition {args.condition}, {_budget_text(args)}, "
              f"precision {args.mixed_precision} -> {run_dir}")
        if args.retrain and world_size() == 1:
            shutil.rmtree(run_dir, ignore_errors=True)
        try:
            train_generator.train(argv + (["--resume", "none"] if args.retrain else []))
        except SystemExit as e:
            if not isinstance(e.code, str):
                raise
            hint = "; or pass --retrain to train it afresh" if "resume it with the same flags" in e.code else ""
            raise SystemExit(f"{e.code} (training {family} in {run_dir}){hint}") from None
        if is_main_process():
            record.write_text(json.dumps({"argv": argv}, indent=2))
    if not is_main_process():
        return {}
    done = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").is_file() else {}
    curve = training_curve(run_dir / "log.jsonl")
    curve_minutes = curve[-1]["curve_seconds"] / 60 if curve and curve[-1].get("curve_seconds") else 0.0
    minutes = done.get("minutes")
    return {"run": str(run_dir), "loaded": finished, "steps": done.get("steps"),
            "images_seen": curve[-1]["images_seen"] if curve else None, "minutes": minutes,
            "train_minutes": minutes - curve_minutes if minutes is not None else None, "curve_minutes": curve_minutes,
            "stopped": done.get("stopped"), "precision": done.get("precision"), "logs": done.get("logs", {}),
            "curve": curve}


def training_curve(log: Path) -> list[dict]:
    """The evaluations a run logged (log.jsonl lines with eval/images_seen): step, images seen,
    the judge's scores at that point (when it judged) and the curve's wall seconds so far."""
    points = []
    if not log.is_file():
        return points
    for line in log.read_text().splitlines():
        entry = json.loads(line) if line.strip() else {}
        if "eval/images_seen" not in entry:
            continue
        judge = {k.removeprefix("eval/judge/"): v for k, v in entry.items() if k.startswith("eval/judge/")}
        points.append({"step": entry["step"], "images_seen": int(entry["eval/images_seen"]), "judge": judge or None,
                       "curve_seconds": entry.get("eval/curve_seconds")})
    return points


# ---------------------------------------------------------------------------- evaluation (main process)

@dataclass
class Reference:
    """What every family is measured against: the judge, the feature space, the N real test
    images' features, the conditions' targets."""
    judge: object | None
    extractor: object | None
    feature_space: str
    real_features: object | None              # (N, D) numpy
    targets: object                           # N captions or labels for the judge
    titles: list[str]                         # the samples' conditions, for grid captions
    rows: list[dict]                          # the floor and ceiling rows


def _evaluate(args, argv: list[str], plan: Plan, training: dict, stage) -> dict:
    import torch

    from tokgen.tokenizers_vq import VQTokenizer
    from tokgen.data.tokens import TokenDataset

    start = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = VQTokenizer.from_pretrained(args.tokenizer, device=device).eval()
    val, test = TokenDataset(args.tokens, "val"), TokenDataset(args.tokens, "test")
    stage(f"references: {args.n} real val images (the real-vs-real floor) and their tokens decoded (the "
          f"tokenizer's ceiling), against {args.n} real test images")
    ref = _references(args, plan, tokenizer, val, device)
    rows = []
    for family in plan.families:
        stage(f"evaluate {family}: {args.n} samples per sampling step count ({_steps_text(plan.steps[family])}), "
              f"NLL on {args.nll_n} test items")
        began = time.perf_counter()
        family_rows = _evaluate_family(args, plan, family, tokenizer, val, test, ref, device)
        training[family]["eval_seconds"] = round(time.perf_counter() - began, 1)
        rows += [{**row, "train_steps": training[family].get("steps"),
                  "train_images": training[family].get("images_seen")} for row in family_rows]
    settings = _settings(args, argv, plan, device, ref, _sampling_flags(args), training)
    settings["evaluation_seconds"] = round(time.perf_counter() - start, 1)
    return {"settings": settings, "quality_key": _quality_key(ref.judge), "rows": rows + ref.rows,
            "training": training, "notes": _notes(args, ref)}


def _references(args, plan: Plan, tokenizer, val, device) -> Reference:
    """The floor (real val vs real test) and the ceiling (decoded val tokens vs real test) rows."""
    from tokgen.eval.compare import judge_and_features
    from tokgen.eval.judges import judge_for
    from tokgen.data import build_dataset

    from ..tasks.generator import decode_tokens

    n, size, batch = args.n, tokenizer.spec.image_size, args.sample_batch_size
    judge = judge_for(plan.source, size, plan.dataset_options)
    extractor, feature_space = _extractor(judge, device)
    targets = _targets(judge, val, n)
    titles = [c or f"class {int(y)}" for c, y in zip(val.captions[:n], val.labels[:n])]   # what the items show
    real = lambda split: _real_batches(build_dataset(plan.source, split, size, **plan.dataset_options), n, batch)   # noqa: E731
    _, real_features, _ = judge_and_features(((x, None) for x in real("test")), None, extractor)
    rows = []
    decoded = decode_tokens(tokenizer, [s[:n] for s in val.scales], batch)
    sets = (("floor", "real vs real (floor)", "grid-real.png", real("val")),
            ("ceiling", "tokenizer ceiling", "grid-tokenizer.png", decoded))
    for kind, label, grid, images in sets:
        scores, feats, first = judge_and_features(_with_targets(images, targets, batch), judge, extractor,
                                                  keep=args.grid_n)
        rows.append({"kind": kind, "label": label, "judge": scores, **_distribution(feats, real_features, args),
                     "grid": _grid(args.out, grid, first, titles, f"{label}: {n} val items")})
    conditions = {"text": titles, "class": [f"class {int(y)}" for y in val.labels[:n]],
                  "none": ["unconditional"] * n}[args.condition]                      # what the samples were given
    return Reference(judge, extractor, feature_space, real_features, targets, conditions, rows)


def _evaluate_family(args, plan: Plan, family: str, tokenizer, val, test, ref: Reference, device):
    """Every step count of one family: samples for the val conditions, timed and counted, then
    judged and measured; and its NLL / ELBO on the test items."""
    from tokgen.eval.compare import judge_and_features
    from tokgen.generators import load_generator
    from tokgen.generators.sampling import guided

    from ..tasks.generator import SampleConfig, attach_tokenizer, condition_rows, decode_tokens

    n, batch = args.n, args.sample_batch_size
    generator = load_generator(plan.runs / family / "generator", spec=tokenizer.spec, device=device)
    attach_tokenizer(generator, tokenizer)
    rows_cond = condition_rows(generator, val.labels[:n], list(val.captions[:n]))
    nll, nll_kind = _likelihood(generator, test, args)
    rows = []
    for steps in plan.steps[family]:
        sampling = dataclass_from_args(SampleConfig, args, steps=steps)
        try:
            settings = sampling.resolved(generator)
            nfe = _count_nfe(generator, rows_cond, sampling, args)         # also the timing's warm-up
            maps, seconds = _sample(generator, rows_cond, sampling, args, f"{family} {steps or 'fixed'} steps")
        except ValueError as e:
            raise SystemExit(f"error: sampling {family} at {steps} steps: {e}") from None
        batches = _with_targets(decode_tokens(tokenizer, maps, batch), ref.targets, batch)
        scores, feats, first = judge_and_features(batches, ref.judge, ref.extractor, keep=args.grid_n)
        per_pass = 2 if guided(settings["cfg_scale"]) else 1             # CFG: [cond; null] rows, 2 per step
        shown_steps = steps if steps is not None else (nfe / per_pass if nfe is not None else None)
        name = f"grid-{family}-{steps}.png" if steps is not None else f"grid-{family}.png"
        rows.append({"kind": "generator", "label": family, "family": family, "steps": shown_steps,
                     "nfe_per_image": nfe, "seconds_per_image": seconds, "judge": scores,
                     **_distribution(feats, ref.real_features, args), "nll_bits": nll, "nll_kind": nll_kind,
                     "sampling": settings,
                     "grid": _grid(args.out, name, first, ref.titles,
                                   f"{family}, {shown_steps:g} steps, cfg {settings['cfg_scale']:g}"
                                   if shown_steps else family)})
    return rows


# ---------------------------------------------------------------------------- sampling, timing, counting

def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count_nfe(generator, rows: dict, sampling, args, probe: int = 4) -> float | None:
    """Network evaluations per image: the rows that pass through the shared transformer core
    (`generator.core`), per image, while sampling `probe` images.  Counting rows makes the doubled
    [conditional; null] batch of guidance count twice.  The run is also the timing's warm-up."""
    from ..precision import autocast
    from ..tasks.generator import sample_tokens

    core = getattr(generator, "core", None)
    rows_seen = [0]

    def count(module, inputs, kwargs, output):
        x = inputs[0] if inputs else next(iter(kwargs.values()))
        rows_seen[0] += x.shape[0]

    probe = min(probe, args.n)
    handle = core.register_forward_hook(count, with_kwargs=True) if core is not None else None
    try:
        with autocast(args.precision, generator.device):
            sample_tokens(generator, {k: v[:probe] for k, v in rows.items()}, probe, sampling, args.seed, probe)
    finally:
        if handle is not None:
            handle.remove()
    return rows_seen[0] / probe if core is not None else None


def _sample(generator, rows: dict, sampling, args, desc: str):
    """args.n token maps for the condition rows, batch by batch (batch i seeded seed + i), and
    the wall seconds per image it took."""
    import torch
    from tqdm.auto import tqdm

    from ..precision import autocast
    from ..tasks.generator import sample_tokens

    n, batch, device = args.n, args.sample_batch_size, generator.device
    chunks = []
    _sync(device)
    start = time.perf_counter()
    with tqdm(total=n, desc=f"sampling {desc}", unit="img", disable=not is_main_process()) as bar:
        for i, lo in enumerate(range(0, n, batch)):
            hi = min(n, lo + batch)
            with autocast(args.precision, device):
                chunks.append(sample_tokens(generator, {k: v[lo:hi] for k, v in rows.items()}, hi - lo, sampling,
                                            args.seed + i, hi - lo))
            bar.update(hi - lo)
    _sync(device)
    seconds = (time.perf_counter() - start) / n
    return [torch.cat([c[k] for c in chunks]).cpu() for k in range(len(chunks[0]))], seconds


def _likelihood(generator, split, args) -> tuple[float | None, str | None]:
    """Mean bits per token on the first args.nll_n items of `split` with their conditions: the
    variational bound where the family defines `elbo_bits` (D3PM), the exact NLL where it defines
    `nll_bits` (AR, VAR); (None, None) for a family with neither (MaskGIT)."""
    import torch
    from tqdm.auto import tqdm

    from ..precision import autocast
    from ..tasks.generator import condition_rows

    bound, exact = getattr(generator, "elbo_bits", None), getattr(generator, "nll_bits", None)
    fn, kind = (bound, "elbo") if callable(bound) else (exact, "exact") if callable(exact) else (None, None)
    n, batch, device = args.nll_n, args.sample_batch_size, generator.device
    if fn is None or n == 0:
        return None, kind
    rows = condition_rows(generator, split.labels[:n], list(split.captions[:n]))
    g = torch.Generator(device=device).manual_seed(args.seed)
    total = 0.0
    for lo in tqdm(range(0, n, batch), desc=f"{generator.family}: {'ELBO' if kind == 'elbo' else 'NLL'}",
                   unit="batch", disable=not is_main_process()):
        hi = min(n, lo + batch)
        tokens = [s[lo:hi].to(device) for s in split.scales]
        cond = {k: v[lo:hi].to(device) for k, v in rows.items()} or None
        with autocast(args.precision, device):
            bits = fn(tokens, cond, generator=g) if kind == "elbo" else fn(tokens, cond)
        total += bits.double().sum().item()
    return total / n, kind


# ---------------------------------------------------------------------------- images and features

def _real_batches(dataset, n: int, batch: int):
    import torch

    for lo in range(0, n, batch):
        yield torch.stack([dataset[i]["image"] for i in range(lo, min(n, lo + batch))])


def _with_targets(batches, targets, batch: int):
    """Pair consecutive image batches with their slice of `targets`."""
    lo = 0
    for images in batches:
        yield images, targets[lo:lo + len(images)]
        lo += len(images)


def _targets(judge, split, n: int):
    if judge is None:
        return [None] * n
    return list(split.captions[:n]) if judge.condition == "caption" else split.labels[:n]


def _extractor(judge, device) -> tuple[object | None, str]:
    """The judge's features; for a dataset without a judge, Inception-v3's when its weights are on
    this machine; else none (FD, KID, precision and recall are then n/a)."""
    from tokgen.eval.features import JudgeFeatures, feature_extractor

    if judge is not None:
        features = JudgeFeatures(judge)
        return features, f"the {features.name}'s {features.dim}-d features"
    try:
        return feature_extractor("inception").to(device), "Inception-v3 pool features (2048-d)"
    except (FileNotFoundError, ValueError) as e:
        return None, f"none: no judge for this dataset and no Inception weights ({str(e).splitlines()[0]})"


def _distribution(feats, real_features, args) -> dict:
    from tokgen.eval.compare import distribution_metrics

    return distribution_metrics(feats, real_features, seed=args.seed)


def _grid(out: str, name: str, images, titles: list[str], title: str) -> str | None:
    from tokgen.eval.visualize import save_captioned_grid

    if images is None or not len(images):
        return None
    save_captioned_grid(images, titles[:len(images)], Path(out) / name, ncol=8, suptitle=title)
    return name


# ---------------------------------------------------------------------------- the record

def _quality_key(judge) -> str | None:
    if judge is None:
        return None
    return "caption_match" if judge.condition == "caption" else "accuracy"


def _settings(args, argv: list[str], plan: Plan, device, ref: Reference, sampling: dict,
              training: dict) -> dict:
    import torch

    from ..precision import resolve_precision

    # the training precision as the families' runs recorded it (each Trainer chose it for its
    # device); the flag itself where they differ or a run predates the record
    trained = [t.get("precision") for t in training.values()]
    mixed_precision = trained[0] if trained[0] and all(t == trained[0] for t in trained) else args.mixed_precision

    return {
        "command": "tokgen compare " + shlex.join(argv),
        "tokenizer": str(Path(args.tokenizer).resolve()), "tokens": str(Path(args.tokens).resolve()),
        "dataset": plan.source, "spec": plan.spec, "families": plan.families, "size": args.size,
        "condition": args.condition, "budget": {"max_steps": args.max_steps, "max_minutes": args.max_minutes},
        "mixed_precision": mixed_precision, "overrides": plan.overrides, "train_flags": plan.train_flags,
        "runs": str(plan.runs), "seed": args.seed, "n": args.n, "nll_n": args.nll_n,
        "conditions": f"the first {args.n} val items", "reference": f"the first {args.n} test images",
        "sample_steps": plan.steps, "sampling": {k: v for k, v in sampling.items() if k != "steps"},
        "sample_batch_size": args.sample_batch_size, "device": str(device),
        "precision": resolve_precision(args.precision, device, flag="--precision").to_dict(),
        "judge": f"{plan.source} judge" if ref.judge is not None else None, "feature_space": ref.feature_space,
        "kid": {"subset_size": min(1000, args.n), "subsets": 100}, "precision_recall_k": 3,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }


def _notes(args, ref: Reference) -> list[str]:
    notes = []
    if args.condition == "class" and ref.judge is not None and ref.judge.condition == "caption":
        notes.append("The generators are class-conditional but the judge reads captions: a class label does not "
                     "fix every attribute a caption names (shapes: size and position), so caption match is "
                     "bounded well below 100%; read the per-attribute columns the label does fix.")
    if args.condition == "none" and ref.judge is not None:
        notes.append("The generators are unconditional: the judge scores samples against the conditions of "
                     "the val items anyway, so judged figures are near chance; read FD, KID, precision, recall.")
    return notes
