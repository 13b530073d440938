"""The comparison's plan: every input checked before anything is trained, and what each family
will get (its sampling step counts, its config overrides, its run folder)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CompareConfig


@dataclass
class Plan:
    families: list[str]                       # in the order given
    steps: dict[str, list[int | None]]        # sampling step counts per family (None: the family's fixed count)
    overrides: dict[str, dict[str, Any]]      # config fields per family
    runs: Path                                # <runs>/<family> are the run folders
    spec: dict                                # the tokenizer spec of the tokens
    source: str                               # the dataset the tokens came from
    dataset_options: dict                     # and its options (num_objects), as extract-tokens recorded them


def make_plan(config: CompareConfig) -> Plan:
    """Families, step counts, overrides, the token folder against the tokenizer and against its
    dataset, the sizes of the splits.  Raises ValueError / FileNotFoundError naming the fix."""
    from tokgen.data.tokens import TokenDataset
    from tokgen.generators import family_class
    from tokgen.tokenizers_vq import VQTokenizer

    from tokgen.generators import as_spec

    from ...tasks.generator import check_same_spec
    from ..checks import check_compare, check_folder, check_multiscale

    check_compare(config)                     # every setting, before the tokens or the tokenizer are read
    if config.fid_stats:
        check_fid_stats(config.fid_stats)
    check_folder(config.tokens, "--tokens", "a token folder", "pass the folder `tokgen extract-tokens --out` wrote")
    check_folder(config.tokenizer, "--tokenizer", "a tokenizer folder",
                 "pass the folder train-tokenizer wrote (<out-dir>/tokenizer)")
    families = list(dict.fromkeys(config.families))
    for family in families:
        family_class(family)                  # an unknown family: ValueError naming the known ones
    if config.n < 4:
        raise ValueError(f"--n must be at least 4 (precision/recall needs k + 1 = 4 samples), got {config.n}")
    if config.train.max_steps < 1 or config.train.max_minutes < 0:
        raise ValueError(f"need --max-steps >= 1 and --max-minutes >= 0, got {config.train.max_steps} and "
                         f"{config.train.max_minutes}")
    val = TokenDataset(config.tokens, "val")  # FileNotFoundError: no token folder / no val split
    for family in families:
        check_multiscale(family, as_spec(val.spec).scales, "--families", f"the token folder {config.tokens}")
    splits = val.meta.get("splits", {})
    if "test" not in splits or "train" not in splits:
        raise ValueError(f"{config.tokens} has splits {sorted(splits)}, but compare trains on train, conditions on "
                         "val and measures against test: extract them with "
                         "`tokgen extract-tokens --splits train,val,test`")
    for what, need, split in (("--n", config.n, "val"), ("--nll-n", config.nll_n, "test")):
        if need > splits[split]:
            raise ValueError(f"{what} {need} needs {need} {split} items but {config.tokens} has {splits[split]}: "
                             f"lower {what} or extract more {split} items")
    tokenizer = VQTokenizer.from_pretrained(config.tokenizer)
    check_same_spec(val.spec, tokenizer, f"the token folder {config.tokens}")
    _check_source(val, tokenizer.spec.image_size, config.tokens, config.n)
    return Plan(families=families, steps=sample_steps(config.sample_steps, families),
                overrides=family_overrides(config.overrides, families),
                runs=Path(config.runs) if config.runs else Path(config.out) / "runs", spec=val.spec,
                source=val.source, dataset_options=val.dataset_options)


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


def sample_steps(given: dict[str, tuple[int, ...]], families: list[str]) -> dict[str, list[int | None]]:
    """The step counts of each family: its `compare_steps` (a family whose count is fixed, one
    None), the given ones instead where a family has them."""
    from tokgen.generators import family_class

    steps = {f: list(family_class(f).compare_steps) or [None] for f in families}
    for family, counts in given.items():
        if family not in families:
            raise ValueError(f"--sample-steps names {family!r}, which is not among --families {families}")
        fixed = family_class(family).fixed_steps
        if fixed is not None:
            raise ValueError(f"{family} samples with a fixed step count ({fixed}): drop it from --sample-steps")
        counts = list(counts)
        if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts):
            raise ValueError(f"--sample-steps {family}={counts}: give positive integers, e.g. {family}=8,16")
        steps[family] = list(dict.fromkeys(counts))
    return steps


def family_overrides(overrides: dict[str, Any], families: list[str]) -> dict[str, dict[str, Any]]:
    """{"depth": 6} (every family) and {"d3pm:transition": "uniform"} (one family, if compared),
    each field checked against the family's config before anything is trained."""
    from tokgen.generators import family_class

    out: dict[str, dict[str, Any]] = {f: {} for f in families}
    for key, value in overrides.items():
        family, _, name = key.rpartition(":")
        if not name:
            raise ValueError(f"--set expects [FAMILY:]KEY=VALUE, got {key!r} (e.g. --set d3pm:timesteps=200)")
        if family:
            family_class(family)              # a misspelt family is an error; one not compared is ignored
        for f in ([family] if family in families else []) if family else families:
            config = family_class(f).config_class
            if name not in {x.name for x in dataclasses.fields(config)}:
                raise ValueError(f"--set {key}={value!r}: {config.__name__} has no field {name!r}; set it for the "
                                 f"families that have it, e.g. --set maskgit:{name}={value!r}")
            out[f][name] = value
    return out


INCEPTION_DIM = 2048                          # Inception-v3 pool3 features: the space of FID statistics files


def check_fid_stats(path: str) -> None:
    """--fid-stats: an .npz with mu (2048,) and sigma (2048, 2048), and the Inception weights on
    this machine to take the samples' features in the same space.  Raises FileNotFoundError /
    ValueError naming the file (and the keys found and wanted) or the weights' places."""
    from tokgen.eval.features import find_inception_weights
    from tokgen.eval.metrics import read_fid_stats

    read_fid_stats(path, dim=INCEPTION_DIM)
    try:
        find_inception_weights()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--fid-stats {path} holds Inception statistics, so the samples need Inception "
                                f"features: {e}") from None
