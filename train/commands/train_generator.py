"""`tokgen train-generator`: train a generator (AR, MaskGIT/Muse, VAR, D3PM, any registered family)
on a token folder, with Accelerate.

    tokgen extract-tokens --tokenizer runs/tok/tokenizer --out runs/tokens-shapes
    tokgen train-generator --tokens runs/tokens-shapes --tokenizer runs/tok/tokenizer \\
        --family maskgit --size small --condition text --max-minutes 5 --out-dir runs/gen-maskgit
    tokgen train-generator --tokens runs/tokens-shapes --family ar --condition class \\
        --set depth=6 --set positions=sinusoidal_2d --mixed-precision bf16 --ema-decay 0.999
    accelerate launch --multi_gpu --num_processes 4 -m tokgen train-generator --tokens ... --family var

The run folder gets checkpoints (resumed automatically: run the same command again), log.jsonl,
TensorBoard logs, run.json (what was built), text-tokenizer.json (caption models), sample grids
under samples/ (with --tokenizer: the first --preview-n val conditions, a fixed seed, samples above
the decoded real tokens), the final generator under generator/ (save_pretrained; EMA weights when
--ema-decay > 0) and eval.json: the last logs, the validation loss and, with --tokenizer and a
dataset that has a judge, --eval-n samples for val conditions scored by the judge next to the
same judge on the decoded real tokens (the tokenizer's ceiling), with the sampling settings used.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from . import is_main_process
from .options import add_dataclass_options, dataclass_from_args, parse_overrides

TEXT_TOKENIZER = "text-tokenizer.json"
HELP = "train a generator (AR, MaskGIT, VAR, D3PM) on extracted tokens, with Accelerate"

# What differs from the loop's generic defaults for a generator on the embedded data.
TRAIN_DEFAULTS = {"out_dir": "runs/generator", "batch_size": 64, "lr": 5e-4, "max_steps": 20_000,
                  "save_every": 500, "sample_every": 500, "log_every": 25}


def build_parser() -> argparse.ArgumentParser:
    from tokgen.generators import CONDITIONS, FAMILIES, SIZES

    from ..engine import TrainConfig
    from ..schedule import ScheduleConfig
    from ..tasks.generator import OptimConfig, SampleConfig

    p = argparse.ArgumentParser(prog="tokgen train-generator", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--tokens", required=True, help="a token folder written by `tokgen extract-tokens`")
    p.add_argument("--tokenizer", help="the tokenizer folder the tokens came from: sample grids and the judged "
                                       "evaluation decode with it (and VAR takes its scale steps from it)")
    p.add_argument("--family", default="maskgit", choices=sorted(FAMILIES), help="generator family")
    p.add_argument("--size", default="small", choices=list(SIZES), help="size preset (width, depth, heads)")
    p.add_argument("--condition", default="class", choices=CONDITIONS,
                   help="class labels, captions (text: a BPE tokenizer is trained on the train captions) or none")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field of the family's config (repeatable), e.g. --set depth=6")
    p.add_argument("--text-vocab-size", type=int, default=512, help="BPE vocabulary for --condition text")
    p.add_argument("--preview-n", type=int, default=8, help="val conditions in each sample grid")
    p.add_argument("--val-n", type=int, default=256, help="val items in the validation loss (0 = none)")
    p.add_argument("--curve-n", type=int, default=0,
                   help="samples judged at every --eval-every step and at the end: caption match (or class accuracy) "
                        "against training images seen, in log.jsonl as eval/judge/... (0 = off; needs --tokenizer)")
    p.add_argument("--eval-n", type=int, default=256,
                   help="samples judged after training, for the first N val conditions (0 = skip; needs --tokenizer)")
    add_dataclass_options(p, TrainConfig, defaults=TRAIN_DEFAULTS, title="training (TrainConfig)")
    add_dataclass_options(p, OptimConfig, title="optimizer: AdamW (OptimConfig)")
    add_dataclass_options(p, ScheduleConfig, title="learning rate: warm-up, then decay over the budget (ScheduleConfig)")
    add_dataclass_options(p, SampleConfig, title="sampling for the grids and the judged evaluation (SampleConfig)")
    return p


def main(argv: list[str]) -> int:
    result = train(argv)
    if result is not None:
        print(json.dumps(result, indent=2))
        print(f"generator saved to {Path(result['run']) / 'generator'}; sample grids in "
              f"{Path(result['run']) / 'samples'}")
    return 0


def train(argv: list[str]) -> dict | None:
    """Train, save and judge one generator as `main` does, without printing: the result that
    eval.json holds, on the main process (None on the others). `tokgen compare` calls this."""
    args = build_parser().parse_args(argv)
    from accelerate.utils import set_seed

    from ..checkpoint import resolve_resume
    from ..engine import TrainConfig, Trainer
    from ..schedule import ScheduleConfig
    from ..tasks.generator import GeneratorTask, OptimConfig, SampleConfig, judged_evaluation

    train_config = dataclass_from_args(TrainConfig, args)
    sampling = dataclass_from_args(SampleConfig, args)
    set_seed(train_config.seed)   # the initial weights are a function of --seed
    try:
        train, val, tokenizer = _load_inputs(args)
        resuming = resolve_resume(train_config.resume, train_config.out_dir) is not None
        generator = _build(args, train, val, train_config.out_dir, resuming)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    try:
        task = GeneratorTask(generator, train, val=val, tokenizer=tokenizer,
                             optim=dataclass_from_args(OptimConfig, args),
                             schedule=dataclass_from_args(ScheduleConfig, args), sampling=sampling,
                             preview_n=args.preview_n, val_n=args.val_n, curve_n=args.curve_n)
    except (ValueError, FileNotFoundError) as e:
        hint = "" if tokenizer is not None else \
            f" (the {args.family!r} family may need the tokenizer: pass --tokenizer DIR)"
        raise SystemExit(f"error: {e}{hint}") from None
    try:
        _record_run(args, generator, train_config.out_dir, resuming)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    trainer = Trainer(task, task.dataset, train_config)
    logs = trainer.fit()
    if not trainer.is_main_process:
        return None

    out = Path(train_config.out_dir)
    result = {"run": str(out), "family": args.family, "size": args.size, "condition": generator.config.condition,
              "tokens": args.tokens, "steps": logs["step"], "minutes": logs["minutes"], "stopped": logs["stopped"],
              "precision": logs["precision"],
              "logs": {k: v for k, v in logs.items() if isinstance(v, (int, float)) and k not in ("step", "minutes")}}
    with trainer.ema_weights("generator"):
        model = trainer.unwrap("generator").generator
        model.save_pretrained(out / "generator")
        if args.eval_n and tokenizer is not None and val is not None:
            result["eval"] = judged_evaluation(model, tokenizer, val, args.eval_n,
                                               sampling, train_config.seed)
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    return result


def _load_inputs(args):
    from tokgen.tokenizers_vq import VQTokenizer
    from tokgen.data.tokens import TokenDataset

    from ..tasks.generator import check_same_spec

    train = TokenDataset(args.tokens, "train")
    val = TokenDataset(args.tokens, "val") if "val" in train.meta.get("splits", {}) else None
    tokenizer = None
    if args.tokenizer:
        tokenizer = VQTokenizer.from_pretrained(args.tokenizer)
        check_same_spec(train.spec, tokenizer, f"the token folder {args.tokens}")
    return train, val, tokenizer


def _build(args, train, val, out_dir: str, resuming: bool):
    """The generator, from the flags and the data; a resumed run reuses its text tokenizer."""
    from tokgen.generators import size_preset
    from tokgen.generators.text import load_text_tokenizer

    from ..tasks.generator import build_from_tokens

    saved_text = Path(out_dir) / TEXT_TOKENIZER
    text_tokenizer = load_text_tokenizer(saved_text) if resuming and saved_text.is_file() else None
    config = {**size_preset(args.size), "condition": args.condition, **parse_overrides(args.set)}
    return build_from_tokens(train, args.family, config, text_vocab_size=args.text_vocab_size,
                             text_tokenizer=text_tokenizer, extra_captions=val.captions if val is not None else ())


def _record_run(args, generator, out_dir: str, resuming: bool) -> None:
    """run.json says what was built (after the tokenizer was attached); a resumed run must build
    the same model."""
    out = Path(out_dir)
    record = {"family": args.family, "spec": generator.spec.to_dict(), "config": generator.config.to_dict(),
              "tokens": str(args.tokens)}
    run_file = out / "run.json"
    if resuming and run_file.is_file():
        before = json.loads(run_file.read_text())
        changed = sorted(k for k in set(before["config"]) | set(record["config"])
                         if before["config"].get(k) != record["config"].get(k))
        if before["family"] != record["family"] or changed:
            raise ValueError(f"{out} holds a {before['family']!r} run with other settings ({changed or 'family'}); "
                             "resume it with the same flags, or train into a new --out-dir (or --resume none)")
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(record, indent=2))
        if generator.text_tokenizer is not None:
            generator.text_tokenizer.save(str(out / TEXT_TOKENIZER))
