"""Every setting of a job checked before any data or model is built: numbers in range, names known,
devices present, input paths there.  Each check raises `ConfigValueError` (a ValueError) tagged
with the config field, which the command line reports as that field's flag (`--lr 0: must be
> 0 ...`); path problems raise FileNotFoundError / NotADirectoryError naming the path."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tokgen.errors import ConfigValueError, UsageError, at_least, check_device, check_ranges, in_range, positive

from ..engine import check_train_config as check_train  # noqa: F401  (the training loop owns its config's checks)


def check_optim(optim) -> None:
    """An optimizer config with Adam's fields (the generators' AdamW, the tokenizer's Adam recipe)."""
    check_ranges(optim, [
        ("weight_decay", at_least(0), "the weight decay must be >= 0"),
        ("beta1", in_range(0, 1, high_open=True), "Adam's beta1 must be in [0, 1)"),
        ("beta2", in_range(0, 1, high_open=True), "Adam's beta2 must be in [0, 1)"),
    ])


def check_schedule(schedule) -> None:
    """A ScheduleConfig (warm-up, then decay)."""
    from ..schedule import LR_SCHEDULES

    check_ranges(schedule, [
        ("warmup_steps", at_least(0), "the warm-up must be >= 0 steps"),
        ("min_lr_ratio", in_range(0, 1), "the final learning rate ratio must be in [0, 1]"),
    ], integers=("warmup_steps",))
    if schedule.lr_schedule not in LR_SCHEDULES:
        raise ConfigValueError("lr_schedule", schedule.lr_schedule, f"must be one of {', '.join(LR_SCHEDULES)}")


def check_sampling(sampling) -> None:
    """A SampleConfig (it checks itself; fields may have been set after it was built)."""
    sampling.validate()


def check_folder(path: Any, flag: str, what: str, fix: str) -> Path:
    """An existing folder, else FileNotFoundError / NotADirectoryError naming the flag and path."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"{flag} {folder}: no {what.removeprefix('a ')} there (no such folder); {fix}")
    if not folder.is_dir():
        raise NotADirectoryError(f"{flag} {folder} is a file, not {what}; {fix}")
    return folder


def check_output_folder(path: Any, flag: str) -> None:
    """A folder to write into: not an existing file."""
    if Path(path).exists() and not Path(path).is_dir():
        raise NotADirectoryError(f"{flag} {path} is a file: name a folder to write into")


def check_generator_run(config) -> None:
    """A GeneratorRunConfig, before anything is loaded."""
    from tokgen.generators import CONDITIONS, SIZES, family_class

    family_class(config.family)                      # an unknown family: ValueError naming the known ones
    if config.size not in SIZES:
        raise ConfigValueError("size", config.size, f"must be one of {', '.join(SIZES)}")
    if config.condition not in CONDITIONS:
        raise ConfigValueError("condition", config.condition, f"must be one of {', '.join(CONDITIONS)}")
    _check_counts(config)
    check_train(config.train)
    check_optim(config.optim)
    check_schedule(config.schedule)
    check_sampling(config.sampling)
    check_folder(config.tokens, "--tokens", "a token folder", "pass the folder `tokgen extract-tokens --out` wrote")
    if config.tokenizer:
        check_folder(config.tokenizer, "--tokenizer", "a tokenizer folder",
                     "pass the folder train-tokenizer wrote (<out-dir>/tokenizer)")
    check_output_folder(config.train.out_dir, "--out-dir")


def _check_counts(config) -> None:
    counts = [(name, at_least(0), "must be >= 0 (0 = none)") for name in
              ("preview_n", "val_n", "curve_n", "eval_n", "nll_n", "grid_n", "curve_points") if hasattr(config, name)]
    check_ranges(config, [("text_vocab_size", at_least(258), "a byte-level BPE needs more than its 256 byte "
                                                             "symbols: give >= 258 (e.g. 512)"), *counts],
                 integers=("text_vocab_size", *(c[0] for c in counts)))


def check_multiscale(family: str, scales, flag: str, where: str) -> None:
    """A family made for multi-scale tokens (`needs_multiscale`, VAR) refuses single-scale ones."""
    from tokgen.generators import family_class

    scales = list(scales)
    if family_class(family).needs_multiscale and len(scales) < 2:
        raise UsageError(f"{flag} {family}: the {family!r} family predicts the next scale of a multi-scale "
                         f"tokenizer, but {where} has a single scale {scales}: extract tokens with a multi-scale "
                         f"tokenizer (e.g. train-tokenizer --preset shapes-tiny-msvq), or choose another family")


def check_extract(config) -> None:
    """An ExtractConfig, before the tokenizer or the dataset is loaded."""
    from ..precision import SAMPLING_CHOICES
    from .tokens import SPLITS

    check_ranges(config, [("limit", at_least(0), "must be >= 0 items per split (0 = all)"),
                          ("batch_size", at_least(1), "must be >= 1 image")], integers=("limit", "batch_size"))
    if not config.splits or any(s not in SPLITS for s in config.splits):
        raise ConfigValueError("splits", ",".join(config.splits), f"give a comma-separated subset of "
                                                                  f"{','.join(SPLITS)}")
    if config.precision not in SAMPLING_CHOICES:
        raise ConfigValueError("precision", config.precision, f"must be one of {', '.join(SAMPLING_CHOICES)}")
    check_device(config.device)
    check_folder(config.tokenizer, "--tokenizer", "a tokenizer folder",
                 "pass the folder train-tokenizer wrote (<out-dir>/tokenizer)")
    check_output_folder(config.out, "--out")
    _check_dataset_options(config.dataset, config.dataset_options)
    _check_extract_scale(config)


def _check_extract_scale(config) -> None:
    """The sharding settings of an ExtractConfig (views normalised to a tuple)."""
    from tokgen.data.tokens import VIEWS

    if type(config.shard_size) is not int or config.shard_size < 1:
        raise ConfigValueError("shard_size", config.shard_size, "must be an int >= 1 item per shard")
    if type(config.num_workers) is not int or config.num_workers < 0:
        raise ConfigValueError("num_workers", config.num_workers, "must be an int >= 0 (0 = load in the process)")
    views = tuple(config.views)
    if any(v not in VIEWS for v in views) or len(set(views)) != len(views):
        raise ConfigValueError("views", ",".join(views), f"give distinct views among {', '.join(VIEWS)} "
                                                         "(crops are not available yet)")
    config.views = views


def check_tokenizer_run(config) -> None:
    """A TokenizerRunConfig (the train and schedule settings, when given)."""
    check_ranges(config, [("eval_n", at_least(0), "must be >= 0 test images (0 = skip)")], integers=("eval_n",))
    for name in ("overrides", "loss_overrides", "dataset_options"):
        if not isinstance(getattr(config, name), dict):
            raise ConfigValueError(name, getattr(config, name), "must be a mapping of field names to values")
    if config.train is not None:
        check_train(config.train)
        check_output_folder(config.train.out_dir, "--out-dir")
    if config.schedule is not None:
        check_schedule(config.schedule)
    _check_dataset_options(config.dataset, config.dataset_options)


def check_compare(config) -> None:
    """A CompareConfig, before the tokens or the tokenizer are read."""
    from tokgen.generators import SIZES, family_class

    from ..precision import SAMPLING_CHOICES

    if not config.families:
        raise ConfigValueError("families", list(config.families), "name at least one family")
    for family in config.families:
        family_class(family)
    if config.size not in SIZES:
        raise ConfigValueError("size", config.size, f"must be one of {', '.join(SIZES)}")
    if config.condition not in ("text", "class", "none"):
        raise ConfigValueError("condition", config.condition, "must be one of text, class, none")
    check_ranges(config, [("n", at_least(4), "precision/recall needs k + 1 = 4 samples: give >= 4"),
                          ("sample_batch_size", at_least(1), "must be >= 1 image")],
                 integers=("n", "sample_batch_size"))
    _check_counts(config)
    if config.curve_points and config.curve_n < 1:
        raise ConfigValueError("curve_n", config.curve_n, "must be >= 1 sample with --curve-points > 0 "
                                                          "(or --curve-points 0)")
    if config.precision not in SAMPLING_CHOICES:
        raise ConfigValueError("precision", config.precision, f"must be one of {', '.join(SAMPLING_CHOICES)}")
    check_device(config.device)
    check_train(config.train)
    check_optim(config.optim)
    check_schedule(config.schedule)
    check_sampling(config.sampling)


def _check_dataset_options(dataset: str, options: dict) -> None:
    """The dataset options the commands pass (num_objects: shapes only, 1 or 2)."""
    if "num_objects" in options:
        value = options["num_objects"]
        if not str(dataset).startswith("shapes"):
            raise ConfigValueError("num_objects", value, f"is an option of --dataset shapes, not {dataset}")
        if value not in (1, 2) or isinstance(value, bool):
            raise ConfigValueError("num_objects", value, "shapes images hold 1 or 2 objects")


__all__ = ["check_compare", "check_extract", "check_folder", "check_generator_run", "check_multiscale",
           "check_optim", "check_sampling", "check_schedule", "check_tokenizer_run", "check_train"]
