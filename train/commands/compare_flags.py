"""Compare's flags, parsed into a `CompareConfig`: `tokgen compare` takes them, and so does the
demo's --compare-flags.  --train-flags "..." (train-generator's training flags for every family,
as one string) is read here, once, into the same typed fields as --batch-size, --lr and the rest."""
from __future__ import annotations

import argparse
import dataclasses

from .generator_flags import add_training_flags
from .options import add_dataclass_options, given_flags, parse_overrides

# TrainConfig fields that are compare's own flags (--seed: also the sampling seed)
OWN_TRAIN = ("max_steps", "max_minutes", "mixed_precision", "seed")


def add_compare_flags(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    from tokgen.generators import FAMILIES, SIZES
    from tokgen.pipeline import SampleConfig

    from ..jobs.comparison.config import DEFAULT_FAMILIES, PER_FAMILY, TRAIN
    from ..precision import CHOICES, SAMPLING_CHOICES

    p.add_argument("--tokens", required=required, help="a token folder with train, val and test splits "
                                                       "(`tokgen extract-tokens`)")
    p.add_argument("--tokenizer", required=required, help="the tokenizer folder the tokens were extracted with")
    p.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), metavar="FAMILY",
                   help=f"generator families to compare (default: {' '.join(DEFAULT_FAMILIES)})")
    p.add_argument("--out", default="tokgen-out/compare", help="report folder")
    p.add_argument("--runs", help="where each family's run folder goes (default: OUT/runs)")
    p.add_argument("--retrain", action="store_true", help="train every family afresh, even if its run folder "
                                                          "holds a finished generator")
    p.add_argument("--seed", type=int, default=0, help="seeds training (initial weights, data order) and sampling")
    g = p.add_argument_group("training: the same for every family")
    g.add_argument("--max-steps", type=int, default=TRAIN["max_steps"],
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
                   help="train-generator's training flags for every family as one string, e.g. \"--batch-size 16 "
                        "--lr 1e-3\": the same as giving them to compare (they win over those given)")
    add_training_flags(p, defaults=TRAIN, skip=PER_FAMILY + OWN_TRAIN, title=", every family")
    s = p.add_argument_group("sampling and evaluation")
    s.add_argument("--n", type=int, default=500, help="samples per family and step count (and real images per set)")
    s.add_argument("--sample-steps", nargs="+", default=[], metavar="FAMILY=S1,S2",
                   help="sampling step counts, e.g. maskgit=4,8,12 d3pm=16,64 (default: each family's own, "
                        + " ".join(f"{f}={','.join(map(str, c.compare_steps))}" for f, c in FAMILIES.items()
                                   if c.compare_steps)
                        + "; " + ", ".join(f for f, c in FAMILIES.items() if c.fixed_steps) + " have fixed counts)")
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
    s.add_argument("--fid-stats", default=None, metavar="NPZ",
                   help="the real set's Inception statistics (.npz with mu, sigma: pytorch-fid's or ADM's, e.g. "
                        "VIRTUAL_imagenet256_labeled.npz), read offline: FD against them in Inception-v3 features "
                        "(the weights must be on this machine) instead of featurizing the test split")
    add_dataclass_options(p, SampleConfig, skip=("steps",), title="sampling settings (SampleConfig)")


def config_from_flags(values: dict, base=None):
    """The CompareConfig of compare's flags: `values` holds {dest: value} of all of them (base
    None), or of those given, applied over `base`.  Raises ValueError for a malformed value."""
    from tokgen.pipeline import SampleConfig

    from ..engine import TrainConfig
    from ..jobs.comparison import CompareConfig
    from ..schedule import ScheduleConfig
    from ..tasks.generator import OptimConfig

    values = {k: v for k, v in values.items() if k != "config"}
    values.update(train_flags(values.pop("train_flags", "") or ""))
    if base is None:
        base = CompareConfig(tokens=values.pop("tokens"), tokenizer=values.pop("tokenizer"))
    changes = {}
    if "set" in values:
        changes["overrides"] = parse_overrides(values.pop("set"))
    if "sample_steps" in values:
        changes["sample_steps"] = parse_sample_steps(values.pop("sample_steps"))
    if "families" in values:
        changes["families"] = tuple(values.pop("families"))
    for name, cls in (("train", TrainConfig), ("optim", OptimConfig), ("schedule", ScheduleConfig),
                      ("sampling", SampleConfig)):
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: values.pop(k) for k in list(values) if k in names}
        if given:
            changes[name] = dataclasses.replace(getattr(base, name), **given)
    return dataclasses.replace(base, **changes, **values)


def train_flags(text: str) -> dict:
    """--train-flags "--batch-size 16 --lr 1e-3" -> {"batch_size": 16, "lr": 0.001}: the training
    flags of train-generator that compare passes on to every family."""
    if not text.strip():
        return {}
    from ..jobs.comparison.config import PER_FAMILY, TRAIN

    parser = argparse.ArgumentParser(prog="tokgen compare --train-flags", add_help=False)
    add_training_flags(parser, defaults=TRAIN, skip=PER_FAMILY)
    given, unknown = given_flags(parser, text)
    if unknown:
        raise ValueError(f"--train-flags {text!r}: {' '.join(unknown)} is not a training flag compare passes on to "
                         "every family (the family, its run folder, its judged points and the sampling are set by "
                         "compare's own flags)")
    return given


def parse_sample_steps(items: list[str]) -> dict[str, tuple[int, ...]]:
    """["maskgit=4,8", "d3pm=16,64"] -> {"maskgit": (4, 8), "d3pm": (16, 64)}."""
    steps = {}
    for item in items:
        family, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--sample-steps expects FAMILY=S1,S2 (e.g. maskgit=4,8,12), got {item!r}")
        try:
            steps[family] = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"--sample-steps {item!r}: give positive integers, e.g. {family}=8,16") from None
    return steps
