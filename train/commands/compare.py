"""`tokgen compare`: the main job.  One tokenizer, one token folder; every requested generator
family trained on the same tokens with the same budget, then sampled, judged, timed and reported.

    tokgen compare --tokens runs/tokens-shapes --tokenizer runs/tok/tokenizer --max-steps 2000
    tokgen compare --tokens ... --tokenizer ... --families maskgit d3pm --sample-steps maskgit=4,8,12 d3pm=16,64
    tokgen compare ... --max-steps 3000 --set d3pm:transition=uniform --lr 1e-3
    tokgen compare --config compare.yaml --max-steps 500     # settings from a file, flags on top
    accelerate launch --multi_gpu --num_processes 4 -m tokgen compare --tokens ... --tokenizer ...

The budget is --max-steps optimizer steps per family (at the train-generator batch: the same
training images for every family and on every machine); --max-minutes is an optional wall-time
cap.  For each family the run folder <runs>/<family> is trained as `tokgen train-generator` trains
(the same library function, without its own evaluation), judging --curve-n samples at
--curve-points evenly spaced steps on the way (quality against training images seen); a folder
that already holds a generator finished with the same training settings is loaded instead, and
one with other settings (a larger budget, say) is resumed (--retrain: start afresh).  The
training flags of train-generator (--batch-size, --lr, ...) apply to every family; --train-flags
"..." gives them as one string.  Then, on the main process only (the others
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
import shlex

from .compare_flags import add_compare_flags, config_from_flags
from .config_file import add_config_argument
from .options import parse_args

HELP = "train every generator family on one tokenizer's tokens with one budget; sample, judge, time, report"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokgen compare", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_config_argument(p)
    add_compare_flags(p)
    return p


def main(argv: list[str]) -> int:
    from ..jobs.comparison import compare

    args = parse_args(build_parser(), argv)
    report = compare(config_from_flags(vars(args)), command="tokgen compare " + shlex.join(argv))
    if report is not None:
        print(f"[compare] report: {report}")
    return 0
