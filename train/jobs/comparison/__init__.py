"""The main job: one tokenizer, one token folder; every requested generator family trained on the
same tokens with the same budget, then sampled, judged, timed and reported.

    report = compare(CompareConfig(tokens="runs/tokens", tokenizer="runs/tok/tokenizer",
                                   families=("maskgit", "d3pm"), sample_steps={"maskgit": (4, 8, 12)}))

In three parts: the plan (plan.py: every input checked before any training), the run (run.py:
each family trained by `train_generator`, or loaded where its run folder holds a generator
finished with the same config; measure.py: the reference rows and every family at every step
count through the one evaluation path, under several processes each process drawing and
measuring its share, the main process gathering the figures) and the report (report.py: the
results dict that `tokgen.eval.compare.write_report` turns into report.md, the plots and
results.json).
"""
from __future__ import annotations

import time
from pathlib import Path

from ...distributed import is_main_process, world_size
from .config import DEFAULT_FAMILIES, CompareConfig

__all__ = ["CompareConfig", "DEFAULT_FAMILIES", "compare"]


class _Stages:
    """`[compare k/n] title` lines, printed by the main process only."""

    def __init__(self, total: int):
        self.total, self.k = total, 0

    def __call__(self, title: str) -> None:
        self.k += 1
        if is_main_process():
            print(f"[compare {self.k}/{self.total}] {title}", flush=True)


def compare(config: CompareConfig, *, command: str | None = None, extra_report: list[str] = (),
            extra_results: dict | None = None) -> Path | None:
    """The whole comparison.  Returns report.md's path on the main process; None on the others,
    which return once every family is trained.  `command` (the command line that ran it) goes
    into the report's Reproduce section; `extra_report` (markdown lines) and `extra_results` into
    the report and results.json as well (the demo's own sections).  Raises ValueError /
    FileNotFoundError for bad inputs, before any training."""
    from . import report
    from .plan import make_plan
    from .run import train_or_load

    plan = make_plan(config)
    stage = _Stages(2 * len(plan.families) + 3)
    stage(f"inputs: tokens {config.tokens} ({plan.source}, spec {plan.spec}); sampling steps: "
          + "; ".join(f"{f} {_steps_text(plan.steps[f])}" for f in plan.families))
    training = {family: train_or_load(config, plan, family, stage) for family in plan.families}
    if not is_main_process() and world_size() == 1:
        return None
    results = _evaluate(config, plan, training, stage, command)    # every process: each samples its share
    if not is_main_process():
        return None
    results.update(extra_results or {})
    stage(f"report: {Path(config.out) / 'report.md'}, quality_vs_time.png, results.json")
    return report.write(config, results, extra_report)


def _evaluate(config: CompareConfig, plan, training: dict, stage, command: str | None) -> dict:
    """The references and every family measured, as the results dict (main process; None on the
    others, which draw and measure their shares)."""
    from tokgen.data.tokens import TokenDataset
    from tokgen.tokenizers_vq import VQTokenizer

    from ...distributed import process_device
    from . import report
    from .measure import evaluate_family, references

    start = time.perf_counter()
    device = process_device(config.device)
    tokenizer = VQTokenizer.from_pretrained(config.tokenizer, device=device).eval()
    val, test = TokenDataset(config.tokens, "val"), TokenDataset(config.tokens, "test")
    against = f"the statistics in {config.fid_stats}" if config.fid_stats else f"{config.n} real test images"
    stage(f"references: {config.n} real val images (the real-vs-real floor) and their tokens decoded (the "
          f"tokenizer's ceiling), against {against}")
    ref = references(config, plan, tokenizer, val, device)
    rows = []
    for family in plan.families:
        stage(f"evaluate {family}: {config.n} samples per sampling step count ({_steps_text(plan.steps[family])}), "
              f"NLL on {config.nll_n} test items")
        began = time.perf_counter()
        family_rows = evaluate_family(config, plan, family, tokenizer, val, test, ref, device)
        if not is_main_process():
            continue
        training[family]["eval_seconds"] = round(time.perf_counter() - began, 1)
        rows += [{**row, "train_steps": training[family].get("steps"),
                  "train_images": training[family].get("images_seen")} for row in family_rows]
    if not is_main_process():
        return None
    results = report.results(config, plan, ref, training, rows, device, command)
    results["settings"]["evaluation_seconds"] = round(time.perf_counter() - start, 1)
    return results


def _steps_text(steps: list[int | None]) -> str:
    return ", ".join(str(s) for s in steps if s is not None) or "fixed"
