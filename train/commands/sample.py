"""`tokgen sample`: draw images from a trained generator and write a captioned PNG grid.

    tokgen sample --generator runs/gen/generator --tokenizer runs/tok/tokenizer \\
        --captions "a large red circle at the top left" "a small blue square at the center" \\
        --num-per-prompt 8 --cfg-scale 3 --seed 0 --out grid.png
    tokgen sample --generator runs/gen-class/generator --tokenizer runs/tok/tokenizer --classes 3 7 --steps 16
    tokgen sample --generator runs/gen-uncond/generator --tokenizer runs/tok/tokenizer --num-per-prompt 16
    tokgen sample ... --prompts-file prompts.txt      # one caption (or class id) per line

One row per prompt, --num-per-prompt images each; the same --seed (and --batch-size) gives the same
grid.  A thin wrapper over `tokgen.Pipeline` (tokgen/pipeline.py), which your own code can call.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import add_dataclass_options, dataclass_from_args

HELP = "sample a trained generator for captions / classes and write a captioned PNG grid"


def build_parser() -> argparse.ArgumentParser:
    from ..precision import SAMPLING_CHOICES
    from ..tasks.generator import SampleConfig

    p = argparse.ArgumentParser(prog="tokgen sample", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--generator", required=True, help="a generator folder (train-generator's <out-dir>/generator)")
    p.add_argument("--tokenizer", required=True, help="the tokenizer folder its tokens came from (decodes the samples)")
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument("--captions", nargs="+", metavar="TEXT", help="captions, for a caption model")
    prompts.add_argument("--classes", nargs="+", type=int, metavar="ID",
                         help="class ids, for a class model (-1 = unconditional)")
    prompts.add_argument("--prompts-file", help="a text file, one caption (caption model) or class id (class model) "
                                                "per line")
    p.add_argument("--truncate", action="store_true",
                   help="cut captions longer than the model's text length instead of refusing them")
    p.add_argument("--num-per-prompt", type=int, default=8, help="images per prompt (one grid row each)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling: the same seed gives the same images")
    p.add_argument("--batch-size", type=int, default=64, help="images generated at once")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--precision", default="auto", choices=SAMPLING_CHOICES,
                   help="the generator's sampling forwards in float32 or under bfloat16 autocast (auto: bf16 "
                        "where the device runs it fast; decoding stays float32)")
    p.add_argument("--out", default="samples.png", help="the PNG grid to write")
    add_dataclass_options(p, SampleConfig, title="sampling (SampleConfig)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = run(args)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {path}")
    return 0


def run(args) -> Path:
    """A thin wrapper over `tokgen.Pipeline`: load it, turn the flags into prompts, sample, draw the grid."""
    import torch

    from tokgen.eval.visualize import save_captioned_grid
    from tokgen.pipeline import Pipeline, prompt_title

    from ..precision import autocast, resolve_precision
    from ..tasks.generator import SampleConfig

    if args.num_per_prompt < 1:
        raise ValueError(f"--num-per-prompt must be >= 1, got {args.num_per_prompt}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = Pipeline.from_pretrained(args.generator, tokenizer=args.tokenizer, device=device)
    labels, captions = _prompts(args, pipe.generator.config.condition)
    k = args.num_per_prompt
    sampling = dataclass_from_args(SampleConfig, args)
    precision = resolve_precision(args.precision, device)
    print(f"precision: {precision}")
    prompts = dict(labels=labels) if labels is not None else dict(captions=captions) if captions is not None else {}
    with autocast(precision, device):   # the generator's forwards; the pipeline decodes in float32 (as compare)
        images = pipe(**prompts, num_per_prompt=k, seed=args.seed, batch_size=args.batch_size,
                      truncate=args.truncate, output_type="pt", **vars(sampling))
    settings = sampling.resolved(pipe.generator)
    title = (f"{pipe.generator.family} | cfg {settings['cfg_scale']:g} | steps {settings['steps'] or 'default'} | "
             f"T {settings['temperature']:g} | seed {args.seed}")
    rows = labels if labels is not None else captions if captions is not None else [None]
    titles = [prompt_title(row) for row in rows for _ in range(k)]
    return save_captioned_grid(images, titles, args.out, ncol=k if k > 1 else min(8, len(titles)), suptitle=title)


def _prompts(args, condition: str) -> tuple[list[int] | None, list[str] | None]:
    """(labels, captions), one entry per prompt, the one the model does not take None (both for an
    unconditional model), checked against what the model was trained on."""
    file_lines = None
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts-file {path}: no such file")
        file_lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not file_lines:
            raise ValueError(f"--prompts-file {path} has no prompts: write one caption or class id per line")
    given = "--captions" if args.captions else "--classes" if args.classes else None
    if condition == "none":
        if given or file_lines:
            raise ValueError(f"this generator is unconditional (trained with --condition none): drop "
                             f"{given or '--prompts-file'} and set the count with --num-per-prompt")
        return None, None
    if condition == "class":
        if args.captions:
            raise ValueError("this generator is class-conditional (trained on class labels), not on captions: "
                             "pass --classes ID ... instead of --captions")
        classes = args.classes if args.classes else _class_ids(file_lines) if file_lines else None
        if not classes:
            raise ValueError("this generator is class-conditional: pass --classes ID ... (or --prompts-file)")
        return classes, None
    if args.classes:
        raise ValueError("this generator is caption-conditional (trained on captions), not on class labels: pass "
                         "--captions \"a large red circle at the top left\" ... instead of --classes")
    captions = args.captions or file_lines
    if not captions:
        raise ValueError("this generator is caption-conditional: pass --captions TEXT ... (or --prompts-file)")
    return None, list(captions)


def _class_ids(lines: list[str]) -> list[int]:
    try:
        return [int(line) for line in lines]
    except ValueError:
        raise ValueError("this generator is class-conditional, so --prompts-file must hold one class id per line "
                         f"(got {lines[0]!r} ...)") from None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
