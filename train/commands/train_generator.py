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
from pathlib import Path

from .config_file import add_config_argument
from .generator_flags import add_training_flags
from .options import add_dataclass_options, dataclass_from_args, parse_args, parse_overrides

HELP = "train a generator (AR, MaskGIT, VAR, D3PM) on extracted tokens, with Accelerate"


def build_parser() -> argparse.ArgumentParser:
    from tokgen.generators import CONDITIONS, FAMILIES, SIZES
    from tokgen.pipeline import SampleConfig

    from ..jobs.generator import TRAIN_DEFAULTS

    p = argparse.ArgumentParser(prog="tokgen train-generator", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_config_argument(p)
    p.add_argument("--tokens", required=True, help="a token folder written by `tokgen extract-tokens`")
    p.add_argument("--tokenizer", help="the tokenizer folder the tokens came from: sample grids and the judged "
                                       "evaluation decode with it (and VAR takes its scale steps from it)")
    p.add_argument("--family", default="maskgit", choices=sorted(FAMILIES), help="generator family")
    p.add_argument("--size", default="small", choices=list(SIZES), help="size preset (width, depth, heads)")
    p.add_argument("--condition", default="class", choices=CONDITIONS,
                   help="class labels, captions (text: a BPE tokenizer is trained on the train captions) or none")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field of the family's config (repeatable), e.g. --set depth=6")
    p.add_argument("--curve-n", type=int, default=0,
                   help="samples judged at every --eval-every step and at the end: caption match (or class accuracy) "
                        "against training images seen, in log.jsonl as eval/judge/... (0 = off; needs --tokenizer)")
    p.add_argument("--eval-n", type=int, default=256,
                   help="samples judged after training, for the first N val conditions (0 = skip; needs --tokenizer)")
    add_training_flags(p, defaults=TRAIN_DEFAULTS)
    add_dataclass_options(p, SampleConfig, title="sampling for the grids and the judged evaluation (SampleConfig)")
    return p


def config_from_args(args: argparse.Namespace):
    """The GeneratorRunConfig the flags describe."""
    from tokgen.pipeline import SampleConfig

    from ..engine import TrainConfig
    from ..jobs.generator import GeneratorRunConfig
    from ..schedule import ScheduleConfig
    from ..tasks.generator import OptimConfig

    return GeneratorRunConfig(
        tokens=args.tokens, tokenizer=args.tokenizer, family=args.family, size=args.size, condition=args.condition,
        overrides=parse_overrides(args.set), text_vocab_size=args.text_vocab_size, preview_n=args.preview_n,
        val_n=args.val_n, curve_n=args.curve_n, eval_n=args.eval_n, train=dataclass_from_args(TrainConfig, args),
        optim=dataclass_from_args(OptimConfig, args), schedule=dataclass_from_args(ScheduleConfig, args),
        sampling=dataclass_from_args(SampleConfig, args))


def main(argv: list[str]) -> int:
    from ..jobs.generator import train_generator

    args = parse_args(build_parser(), argv)
    result = train_generator(config_from_args(args))     # a bad input: `error: ...` (tokgen.train.cli)
    if result is not None:
        print(json.dumps(result.to_dict(), indent=2))
        print(f"generator saved to {Path(result.run) / 'generator'}; sample grids in {Path(result.run) / 'samples'}")
    return 0
