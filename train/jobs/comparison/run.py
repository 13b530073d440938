"""The comparison's training: each family trained by `train_generator` into its run folder (every
process: the Trainer distributes it), or loaded where that folder holds a generator finished with
the very same config."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from ...distributed import is_main_process, world_size
from ..generator import GeneratorRunConfig, RunMismatchError, train_generator
from .config import CompareConfig
from .plan import Plan

TRAIN_RECORD = "compare-train.json"   # the config a finished run was trained with


def family_config(config: CompareConfig, plan: Plan, family: str) -> GeneratorRunConfig:
    """One family's training: everything but the family, its overrides and its run folder is
    shared.  The judged points during training sample with the final evaluation's settings (the
    family's first step count); train-generator's own evaluation is off (compare evaluates)."""
    curve = bool(config.curve_points and config.curve_n)
    train = dataclasses.replace(config.train, out_dir=str(plan.runs / family), sample_every=0, resume="auto",
                                eval_every=max(1, config.train.max_steps // config.curve_points) if curve else 0)
    return GeneratorRunConfig(tokens=str(config.tokens), tokenizer=str(config.tokenizer), family=family,
                              size=config.size, condition=config.condition, overrides=plan.overrides[family],
                              text_vocab_size=config.text_vocab_size, preview_n=config.preview_n, val_n=config.val_n,
                              curve_n=config.curve_n if curve else 0, eval_n=0, train=train, optim=config.optim,
                              schedule=config.schedule,
                              sampling=dataclasses.replace(config.sampling, steps=plan.steps[family][0]))


def train_or_load(config: CompareConfig, plan: Plan, family: str, stage) -> dict:
    """Train one family unless its run folder holds a generator finished with the same config;
    what its training gave (on the main process; {} on the others)."""
    run_dir, run_config = plan.runs / family, family_config(config, plan, family)
    record, wanted = run_dir / TRAIN_RECORD, run_config.to_dict()
    finished = not config.retrain and (run_dir / "generator" / "config.json").is_file() and record.is_file() \
        and json.loads(record.read_text()).get("config") == wanted
    if finished:
        stage(f"{family}: loading the generator finished in {run_dir} with the same training flags")
    else:
        stage(f"train {family}: size {config.size}, condition {config.condition}, {budget_text(config)}, "
              f"precision {config.train.mixed_precision} -> {run_dir}")
        if config.retrain:
            if world_size() == 1:
                shutil.rmtree(run_dir, ignore_errors=True)
            run_config = dataclasses.replace(run_config, train=dataclasses.replace(run_config.train, resume=None))
        try:
            train_generator(run_config)
        except RunMismatchError as e:
            raise RunMismatchError(f"{e} (training {family} in {run_dir}); or pass --retrain to train it afresh") \
                from None
        except (ValueError, FileNotFoundError) as e:
            raise type(e)(f"{e} (training {family} in {run_dir})") from None
        if is_main_process():
            record.write_text(json.dumps({"config": wanted}, indent=2))
    if not is_main_process():
        return {}
    return _trained(run_dir, finished)


def _trained(run_dir: Path, loaded: bool) -> dict:
    """What the run folder says about its training: steps, images seen, wall time apart from the
    judged points, the curve."""
    done = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").is_file() else {}
    curve = training_curve(run_dir / "log.jsonl")
    curve_minutes = curve[-1]["curve_seconds"] / 60 if curve and curve[-1].get("curve_seconds") else 0.0
    minutes = done.get("minutes")
    return {"run": str(run_dir), "loaded": loaded, "steps": done.get("steps"),
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


def budget_text(config: CompareConfig) -> str:
    parts = [f"{config.train.max_steps:,} steps"] + \
        ([f"{config.train.max_minutes:g} min"] if config.train.max_minutes else [])
    return " or ".join(parts)
