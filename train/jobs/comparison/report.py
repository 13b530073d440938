"""The comparison's record: every setting and number in one results dict, written as report.md,
the plots and results.json by `tokgen.eval.compare.write_report` (which holds the table, the plots
and the markdown)."""
from __future__ import annotations

from pathlib import Path

from ...distributed import world_size
from .config import CompareConfig
from .measure import Reference
from .plan import Plan

# What a judged figure means when the generators were not given what the judge reads:
# (the generators' condition, what the judge reads) -> the note under the table.
_NOTES = {
    ("class", "caption"): "The generators are class-conditional but the judge reads captions: a class label does "
                          "not fix every attribute a caption names (shapes: size and position), so caption match "
                          "is bounded well below 100%; read the per-attribute columns the label does fix.",
    ("none", "caption"): "The generators are unconditional: the judge scores samples against the conditions of the "
                         "val items anyway, so judged figures are near chance; read FD, KID, precision, recall.",
}
_NOTES[("none", "label")] = _NOTES[("none", "caption")]


def results(config: CompareConfig, plan: Plan, ref: Reference, training: dict, rows: list[dict], device,
            command: str | None) -> dict:
    """The results dict of eval/compare.py: settings, the headline judged figure, the rows
    (generators, then the references), the training of each family, the notes."""
    judge = ref.judge
    note = _NOTES.get((config.condition, judge.condition)) if judge is not None else None
    return {"settings": settings(config, plan, ref, training, device, command),
            "quality_key": judge.headline if judge is not None else None, "rows": rows + ref.rows,
            "training": training, "notes": [note] if note else []}


def family_facts(families) -> dict[str, dict]:
    """What each family declares about its steps and likelihood, for the report's notes (eval/
    compare.py writes them without importing the generators)."""
    from tokgen.generators import family_class

    return {f: {"name": family_class(f).display_name, "fixed_steps": family_class(f).fixed_steps,
                "likelihood": family_class(f).likelihood} for f in families}


def settings(config: CompareConfig, plan: Plan, ref: Reference, training: dict, device,
             command: str | None) -> dict:
    import torch

    from ...precision import resolve_precision

    # the training precision as the families' runs recorded it (each Trainer chose it for its
    # device); the setting itself where they differ or a run predates the record
    trained = [t.get("precision") for t in training.values()]
    mixed_precision = trained[0] if trained[0] and all(t == trained[0] for t in trained) \
        else config.train.mixed_precision
    n = config.n
    return {
        "command": command,
        "tokenizer": str(Path(config.tokenizer).resolve()), "tokens": str(Path(config.tokens).resolve()),
        "dataset": plan.source, "spec": plan.spec, "families": plan.families, "size": config.size,
        "condition": config.condition,
        "budget": {"max_steps": config.train.max_steps, "max_minutes": config.train.max_minutes},
        "mixed_precision": mixed_precision, "overrides": plan.overrides, "runs": str(plan.runs),
        "seed": config.seed, "n": n, "nll_n": config.nll_n,
        "conditions": f"the first {n} val items",
        "reference": f"the statistics in {config.fid_stats}" if config.fid_stats else f"the first {n} test images",
        "fid_stats": str(Path(config.fid_stats).resolve()) if config.fid_stats else None,
        "processes": world_size(),
        "sample_steps": plan.steps,
        "family_facts": family_facts(plan.families),
        "sampling": {k: v for k, v in config.to_dict()["sampling"].items() if k != "steps"},
        "sample_batch_size": config.sample_batch_size, "device": str(device),
        "precision": resolve_precision(config.precision, device, flag="--precision").to_dict(),
        "judge": f"{plan.source} judge" if ref.judge is not None else None, "feature_space": ref.feature_space,
        "kid": {"subset_size": min(1000, n), "subsets": 100}, "precision_recall_k": 3,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "config": config.to_dict(),
    }


def write(config: CompareConfig, results: dict, extra_report: list[str]) -> Path:
    from tokgen.eval.compare import write_report

    return write_report(config.out, results, extra=list(extra_report))
