"""`tokgen sample`: draw images from a trained generator and write a captioned PNG grid.

    tokgen sample --generator runs/gen/generator \\
        --captions "a large red circle at the top left" "a small blue square at the center" \\
        --num-per-prompt 8 --cfg-scale 3 --seed 0 --out grid.png
    tokgen sample --generator runs/gen-class/generator --classes 3 7 --steps 16
    tokgen sample --generator runs/gen-uncond/generator --num-per-prompt 16
    tokgen sample ... --prompts-file prompts.txt      # one caption (or class id) per line
    tokgen sample --generator runs/gen/generator --captions "a small blue square at the center" \\
        --image photo.png --mask mask.png               # inpaint: redraw the mask's white region
    tokgen sample --generator runs/gen-class/generator --classes 3 --image photo.png --outpaint right:0.25

One row per prompt, --num-per-prompt images each; the same --seed (and --batch-size) gives the same
grid.  With --image, each row starts with the input, the region redrawn greyed out.  The tokenizer
is the one the generator folder recorded (train-generator records it) unless --tokenizer names
one.  A thin wrapper over `tokgen.Pipeline` (tokgen/pipeline.py: `__call__`, `inpaint`,
`prepare_outpaint`), which your own code can call.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import add_dataclass_options, dataclass_from_args

HELP = "sample a trained generator for captions / classes and write a captioned PNG grid"


def build_parser() -> argparse.ArgumentParser:
    from ..precision import SAMPLING_CHOICES
    from tokgen.pipeline import SampleConfig

    p = argparse.ArgumentParser(prog="tokgen sample", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--generator", required=True, help="a generator folder (train-generator's <out-dir>/generator)")
    p.add_argument("--tokenizer", help="the tokenizer folder its tokens came from (decodes the samples); default: "
                                       "the one the generator folder recorded (train-generator records it)")
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
    from tokgen.generators import FAMILIES

    any_mask = ", ".join(f for f, cls in sorted(FAMILIES.items()) if cls.known_support == "any")
    prefix_only = ", ".join(f for f, cls in sorted(FAMILIES.items()) if cls.known_support == "raster-prefix")
    edit = p.add_argument_group(f"inpainting / outpainting (families {any_mask}"
                                + (f"; {prefix_only}: the bottom only)" if prefix_only else ")"))
    edit.add_argument("--image", metavar="PATH", help="an image at the tokenizer's size to edit (with --mask or "
                                                      "--outpaint); its tokens outside the redrawn region are kept")
    edit.add_argument("--mask", metavar="PATH", help="a mask image of the same size: white = redraw, black = keep")
    edit.add_argument("--outpaint", metavar="SIDE[:FRACTION]",
                      help="shift the image away from SIDE (left, right, top, bottom) by FRACTION of its size "
                           "(default 0.5, whole tokens) and generate the uncovered strip")
    add_dataclass_options(p, SampleConfig, title="sampling (SampleConfig)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    path = run(args)                   # a bad input: `error: ...` (tokgen.train.cli)
    print(f"wrote {path}")
    return 0


def run(args) -> Path:
    """A thin wrapper over `tokgen.Pipeline`: load it, turn the flags into prompts, sample (or
    inpaint / outpaint --image), draw the grid."""
    import torch

    from tokgen.eval.visualize import save_captioned_grid
    from tokgen.pipeline import Pipeline, prompt_title

    from ..precision import autocast, resolve_precision
    from tokgen.pipeline import SampleConfig

    from tokgen.errors import check_device
    from ..jobs.checks import check_folder

    # every flag checked, and every input file read, before the models are loaded
    for flag, value in (("--num-per-prompt", args.num_per_prompt), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} {value}: must be >= 1")
    out = Path(args.out)
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder: name the PNG file to write, e.g. --out {out / 'samples.png'}")
    sampling = dataclass_from_args(SampleConfig, args)          # --top-p 1.5 and kin: `error: --top-p ...`
    check_device(args.device)
    check_folder(args.generator, "--generator", "a generator folder",
                 "pass the folder train-generator wrote (<out-dir>/generator)")
    if args.tokenizer:
        check_folder(args.tokenizer, "--tokenizer", "a tokenizer folder",
                     "pass the folder train-tokenizer wrote (<out-dir>/tokenizer)")
    outpaint = _edit_flags(args)
    file_lines = _read_prompts_file(args.prompts_file) if args.prompts_file else None
    image = _open_image(args.image, "--image") if args.image else None
    mask = _open_image(args.mask, "--mask") if args.mask else None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = Pipeline.from_pretrained(args.generator, tokenizer=args.tokenizer, device=device)
    labels, captions = _prompts(args, pipe.generator.conditioning, file_lines)
    k = args.num_per_prompt
    options = dict(num_per_prompt=k, seed=args.seed, batch_size=args.batch_size, truncate=args.truncate,
                   output_type="pt", **vars(sampling))
    inputs = None
    if image is not None:
        if outpaint:
            image, mask = pipe.prepare_outpaint(image, *outpaint)
        inputs = pipe.preview(image, mask)                                    # (1, 3, H, W)
    precision = resolve_precision(args.precision, device)
    print(f"precision: {precision}")
    with autocast(precision, device):   # the generator's forwards; the pipeline codes images in float32 (as compare)
        if inputs is None:
            prompts = dict(labels=labels) if labels is not None else dict(captions=captions) if captions else {}
            images = pipe(**prompts, **options)
        else:
            prompts = dict(labels=labels) if labels is not None else dict(prompt=captions) if captions else {}
            images = pipe.inpaint(image, mask, **prompts, **options)
    settings = sampling.resolved(pipe.generator)
    task = "" if inputs is None else f"outpaint {outpaint[0]} {outpaint[1]:g} | " if outpaint else "inpaint | "
    title = (f"{task}{pipe.generator.family} | cfg {settings['cfg_scale']:g} | "
             f"steps {settings['steps'] or 'default'} | T {settings['temperature']:g} | seed {args.seed}")
    rows = labels if labels is not None else captions if captions is not None else [None]
    titles = [prompt_title(row) for row in rows for _ in range(k)]
    if inputs is None:
        return save_captioned_grid(images, titles, args.out, ncol=k if k > 1 else min(8, len(titles)), suptitle=title)
    # each row: the input (the redrawn region greyed), then its k results
    grid = torch.cat([torch.cat([inputs, images[i * k:(i + 1) * k]]) for i in range(len(rows))])
    titles = [t for i in range(len(rows)) for t in ["input (grey: redrawn)"] + titles[i * k:(i + 1) * k]]
    return save_captioned_grid(grid, titles, args.out, ncol=k + 1, suptitle=title)


def _edit_flags(args) -> tuple[str, float] | None:
    """Check --image / --mask / --outpaint together; (side, fraction) of --outpaint, or None."""
    if (args.mask or args.outpaint) and not args.image:
        raise ValueError(f"{'--mask' if args.mask else '--outpaint'} needs --image PATH: the image to edit")
    if args.mask and args.outpaint:
        raise ValueError("pass --mask (inpaint a region) or --outpaint (extend a side), not both")
    if args.image and not (args.mask or args.outpaint):
        raise ValueError("--image needs --mask PATH (white = redraw) or --outpaint SIDE[:FRACTION]")
    if not args.outpaint:
        return None
    side, _, fraction = args.outpaint.partition(":")
    from tokgen.pipeline import SIDES

    if side not in SIDES:
        raise ValueError(f"--outpaint {args.outpaint}: the side must be one of {', '.join(SIDES)} (e.g. right:0.25)")
    try:
        value = float(fraction) if fraction else 0.5
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:                              # also NaN
        raise ValueError(f"--outpaint {args.outpaint}: the fraction must be a number in (0, 1), e.g. "
                         f"{side}:0.25")
    return side, value


def _open_image(path: str, flag: str):
    """A PIL image from a file, or a clear error for a missing or unreadable one."""
    from PIL import Image

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{flag} {file}: no such file")
    try:
        image = Image.open(file)
        image.load()
    except (OSError, SyntaxError, ValueError) as e:    # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{flag} {file} is not an image PIL can read ({e}): pass a PNG or JPEG file") from None
    return image


def _read_prompts_file(name: str) -> list[str]:
    """The non-empty lines of --prompts-file, or an error naming it (missing, a folder, not text, empty)."""
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts-file {path}: no such file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--prompts-file {path} is not UTF-8 text (a binary file?): write one caption or class id "
                         "per line") from None
    if "\0" in text:
        raise ValueError(f"--prompts-file {path} holds NUL bytes (a binary file?): write one caption or class id "
                         "per line")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"--prompts-file {path} has no prompts: write one caption or class id per line")
    return lines


def _prompts(args, kind, file_lines: list[str] | None = None) -> tuple[list[int] | None, list[str] | None]:
    """(labels, captions), one entry per prompt, the one the model does not take None (both for an
    unconditional model), checked against what the model was trained on (`kind`: its
    generator's condition kind); `file_lines`: --prompts-file's lines, already read."""
    if args.prompts_file and file_lines is None:
        file_lines = _read_prompts_file(args.prompts_file)
    given = "--captions" if args.captions else "--classes" if args.classes else None
    if not kind.conditional:
        if given or file_lines:
            raise ValueError(f"this generator is unconditional (trained with --condition none): drop "
                             f"{given or '--prompts-file'} and set the count with --num-per-prompt")
        return None, None
    if kind.uses_labels:
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
    from tokgen.train.cli import main as tokgen

    sys.exit(tokgen(["sample", *sys.argv[1:]]))
