"""Train one generator family on a token folder, save it and judge it.

    result = train_generator(GeneratorRunConfig(tokens="runs/tokens", tokenizer="runs/tok/tokenizer",
                                                family="maskgit", condition="text"))
    result.eval["judge"]["caption_match"]

The run folder gets checkpoints (a second call with the same config resumes), log.jsonl, run.json
(what was built), text-tokenizer.json (caption models), sample grids, the final generator under
generator/ (EMA weights when train.ema_decay > 0; with the tokenizer it was trained on recorded,
`tokgen.pipeline.record_tokenizer`) and eval.json (`TrainResult.to_dict()`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokgen.pipeline import SampleConfig

from ..distributed import is_main_process
from ..engine import TrainConfig
from ..schedule import ScheduleConfig
from ..tasks.generator import OptimConfig

TEXT_TOKENIZER = "text-tokenizer.json"
# What differs from the loop's generic defaults for a generator on the embedded data.
TRAIN_DEFAULTS = {"out_dir": "runs/generator", "batch_size": 64, "lr": 5e-4, "max_steps": 20_000,
                  "save_every": 500, "sample_every": 500, "log_every": 25}


@dataclass
class GeneratorRunConfig:
    tokens: str                      # a token folder written by extract-tokens (train split; val for previews and evaluation)
    tokenizer: str | None = None     # the tokenizer folder the tokens came from: grids and the judged evaluation decode with it (VAR takes its scale steps from it)
    family: str = "maskgit"          # a registered family: ar | maskgit | var | d3pm
    size: str = "small"              # size preset (width, depth, heads)
    condition: str = "class"         # class | text (captions: a BPE tokenizer is trained on the train captions) | none
    overrides: dict[str, Any] = field(default_factory=dict)   # fields of the family's config over the size preset
    text_vocab_size: int = 512       # BPE vocabulary for condition text
    preview_n: int = 8               # val conditions in each sample grid
    val_n: int = 256                 # val items in the validation loss (0 = none)
    curve_n: int = 0                 # samples judged at every train.eval_every step (0 = off; needs the tokenizer)
    eval_n: int = 256                # samples judged after training for the first val conditions (0 = skip)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS))
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampling: SampleConfig = field(default_factory=SampleConfig)   # the grids, the curve points and the evaluation

    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists), e.g. to tell whether two runs were trained alike."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass
class TrainResult:
    run: str                         # the run folder
    family: str
    size: str
    condition: str
    tokens: str
    steps: int
    minutes: float
    stopped: str                     # what ended the training: max_steps, max_minutes, ...
    precision: Any                   # the training precision the Trainer chose
    logs: dict[str, float]           # the last logged values
    eval: dict | None = None         # the judged evaluation (EvalRecord), when there was one

    def to_dict(self) -> dict:
        """What eval.json holds."""
        out = dataclasses.asdict(self)
        if out["eval"] is None:
            del out["eval"]
        return out


class RunMismatchError(ValueError):
    """The run folder holds a run of other settings, which this config cannot resume."""


def train_generator(config: GeneratorRunConfig) -> TrainResult | None:
    """Train, save and judge one generator.  The result (also in eval.json) on the main process,
    None on the others.  Raises ValueError / FileNotFoundError for bad inputs before training."""
    from accelerate.utils import set_seed

    from tokgen.pipeline import record_tokenizer

    from ..checkpoint import resolve_resume
    from ..engine import Trainer
    from ..tasks.generator import GeneratorTask
    from .checks import check_generator_run

    check_generator_run(config)   # every setting, before anything is read or built
    set_seed(config.train.seed)   # the initial weights are a function of the seed
    train, val, tokenizer = _load_inputs(config)
    resuming = resolve_resume(config.train.resume, config.train.out_dir) is not None
    generator = _build(config, train, val, resuming)
    try:
        task = GeneratorTask(generator, train, val=val, tokenizer=tokenizer, optim=config.optim,
                             schedule=config.schedule, sampling=config.sampling, preview_n=config.preview_n,
                             val_n=config.val_n, curve_n=config.curve_n)
    except (ValueError, FileNotFoundError) as e:
        if tokenizer is not None:
            raise
        raise type(e)(f"{e} (the {config.family!r} family may need the tokenizer: pass --tokenizer DIR)") from None
    _record_run(config, generator, resuming)
    trainer = Trainer(task, task.dataset, config.train)
    logs = trainer.fit()
    if not trainer.is_main_process:
        return None

    out = Path(config.train.out_dir)
    result = TrainResult(run=str(out), family=config.family, size=config.size, condition=generator.config.condition,
                         tokens=config.tokens, steps=logs["step"], minutes=logs["minutes"], stopped=logs["stopped"],
                         precision=logs["precision"],
                         logs={k: v for k, v in logs.items()
                               if isinstance(v, (int, float)) and k not in ("step", "minutes")})
    with trainer.ema_weights("generator"):
        model = trainer.unwrap("generator").generator
        model.save_pretrained(out / "generator")
        if config.tokenizer:       # so that tokgen sample and Pipeline.from_pretrained find it
            record_tokenizer(out / "generator", config.tokenizer)
        if config.eval_n and tokenizer is not None and val is not None:
            result.eval = evaluation_record(model, tokenizer, val, config.eval_n, config.sampling, config.train.seed)
    (out / "eval.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def evaluation_record(generator, tokenizer, split, n: int, sampling: SampleConfig, seed: int,
                      batch_size: int = 64) -> dict:
    """eval.json's "eval": n samples for the first n conditions of `split`, judged, beside the same
    judge on the decoded real tokens of those items (the tokenizer's ceiling)."""
    from tokgen.pipeline import decode_tokens

    from ..evaluation import EvalConfig, dataset_judge, evaluate_generator, measure

    judge = dataset_judge(split, generator.spec.image_size)
    ev = evaluate_generator(generator, tokenizer, split, EvalConfig(n=n, seed=seed, batch_size=batch_size,
                                                                    sampling=sampling), judge=judge)
    record = {"n": ev.n, "conditioned_on": generator.config.condition, "source": split.source,
              "sampling": {**ev.sampling, "seed": seed, "batch_size": batch_size},
              "sample_seconds_per_image": ev.seconds_per_image, "judge": ev.judge}
    if judge is None:
        record["why"] = f"no embedded judge reads {split.source!r} images"
        return record
    real = decode_tokens(tokenizer, [s[:ev.n] for s in split.scales], batch_size)
    record["reference"] = measure(real, judge.targets(split.captions[:ev.n], split.labels[:ev.n]), judge,
                                  batchwise=False)[0]
    return record


def _load_inputs(config: GeneratorRunConfig):
    from tokgen.data.tokens import TokenDataset
    from tokgen.tokenizers_vq import VQTokenizer

    from tokgen.generators import as_spec

    from ..tasks.generator import check_same_spec
    from .checks import check_multiscale

    train = TokenDataset(config.tokens, "train")
    check_multiscale(config.family, as_spec(train.spec).scales, "--family", f"the token folder {config.tokens}")
    val = TokenDataset(config.tokens, "val") if "val" in train.meta.get("splits", {}) else None
    tokenizer = None
    if config.tokenizer:
        tokenizer = VQTokenizer.from_pretrained(config.tokenizer)
        check_same_spec(train.spec, tokenizer, f"the token folder {config.tokens}")
    return train, val, tokenizer


def _build(config: GeneratorRunConfig, train, val, resuming: bool):
    """The generator, from the config and the data; a resumed run reuses its text tokenizer."""
    from tokgen.generators import size_preset
    from tokgen.generators.text import load_text_tokenizer

    from ..tasks.generator import build_from_tokens

    saved_text = Path(config.train.out_dir) / TEXT_TOKENIZER
    text_tokenizer = load_text_tokenizer(saved_text) if resuming and saved_text.is_file() else None
    fields = {**size_preset(config.size), "condition": config.condition, **config.overrides}
    return build_from_tokens(train, config.family, fields, text_vocab_size=config.text_vocab_size,
                             text_tokenizer=text_tokenizer, extra_captions=val.captions if val is not None else ())


def _record_run(config: GeneratorRunConfig, generator, resuming: bool) -> None:
    """run.json says what was built (after the tokenizer was attached); a resumed run must build
    the same model."""
    out = Path(config.train.out_dir)
    record = {"family": config.family, "spec": generator.spec.to_dict(), "config": generator.config.to_dict(),
              "tokens": str(config.tokens)}
    run_file = out / "run.json"
    if resuming and run_file.is_file():
        before = json.loads(run_file.read_text())
        changed = sorted(k for k in set(before["config"]) | set(record["config"])
                         if before["config"].get(k) != record["config"].get(k))
        if before["family"] != record["family"] or changed:
            raise RunMismatchError(f"{out} holds a {before['family']!r} run with other settings "
                                   f"({changed or 'family'}); resume it with the same flags, or train into a new "
                                   "--out-dir (or --resume none)")
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(record, indent=2))
        if generator.text_tokenizer is not None:
            generator.text_tokenizer.save(str(out / TEXT_TOKENIZER))
