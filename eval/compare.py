"""The comparison report: one table, a plot of quality against sampling time, results.json.

This is the pure report side of `tokgen compare` (train/jobs/comparison/ plans, trains, samples and
measures, and assembles the results dict): it takes a results dict and writes files, so it is
testable without any model.  The results dict:

    {"settings": {...},                       # everything needed to reproduce the run
     "quality_key": "caption_match",          # the judged figure plotted against time
     "rows": [{"kind": "generator" | "floor" | "ceiling", "label": str, "family": str | None,
               "steps": int | None, "nfe_per_image": float | None, "seconds_per_image": float | None,
               "judge": {name: accuracy in [0, 1]} | None, "fd": float, "kid": float, "kid_std": float | None,
               "precision": float, "recall": float, "nll_bits": float | None,
               "nll_kind": "exact" | "elbo" | None, "train_steps": int | None, "grid": str | None}, ...],
     ...}                                      # anything else is kept in results.json as is

Frechet distance: Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium", NeurIPS 2017.  KID: Binkowski et al., "Demystifying MMD GANs", ICLR
2018.  Precision / recall: Kynkaanniemi et al., "Improved Precision and Recall Metric for
Assessing Generative Models", NeurIPS 2019.  Here all three are computed in the judge's feature
space (eval/features.py), not Inception's, and the real-vs-real row gives their floor at this N.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPORT, RESULTS, PLOT, CURVE_PLOT = "report.md", "results.json", "quality_vs_time.png", "quality_vs_training.png"

# judge keys -> column headers; keys not listed keep their own name
JUDGE_NAMES = {"caption_match": "caption match", "color": "colour", "found": "object found",
               "accuracy": "class accuracy"}
# the figure the plot puts on its y axis, in order of preference
QUALITY_KEYS = ("caption_match", "accuracy")


@dataclass(frozen=True)
class Column:
    header: str
    get: Callable[[dict], Any]                 # the raw value of a row (None when it has none)
    better: str | None                         # "max", "min" or None (not ranked)
    fmt: Callable[[Any, dict], str]            # raw value, row -> the cell's text


# ---------------------------------------------------------------------------- formatting

def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _na(fmt: Callable[[Any], str]) -> Callable[[Any, dict], str]:
    return lambda v, row: fmt(v) if is_number(v) else "n/a"


def _percent(v: float) -> str:
    return f"{100 * v:.1f}%"


def _number(v: float) -> str:
    """Three significant digits, without scientific notation for ordinary values."""
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    digits = max(0, 2 - int(math.floor(math.log10(abs(v)))))
    return f"{v:.{min(digits, 6)}f}" if abs(v) >= 1e-4 else f"{v:.2e}"


def _seconds(v: float) -> str:
    return f"{v:.2g}" if v < 1 else f"{v:.2f}"


def _nll(v: float, row: dict) -> str:
    if not is_number(v):
        return "n/a"
    return f"≤ {v:.3f}" if row.get("nll_kind") == "elbo" else f"{v:.3f}"


def _count(v: Any) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


# ---------------------------------------------------------------------------- the table

def judge_keys(results: dict) -> list[str]:
    """The judge's figures in the order they first appear, the headline figure first."""
    keys: list[str] = []
    for row in results["rows"]:
        for k in (row.get("judge") or {}):
            if k not in keys:
                keys.append(k)
    headline = quality_key(results)
    return ([headline] if headline in keys else []) + [k for k in keys if k != headline]


def quality_key(results: dict) -> str | None:
    """The judged figure of the plot: results["quality_key"], else the first of QUALITY_KEYS found."""
    if results.get("quality_key"):
        return results["quality_key"]
    found = {k for row in results["rows"] for k in (row.get("judge") or {})}
    return next((k for k in QUALITY_KEYS if k in found), next(iter(sorted(found)), None))


def columns(results: dict) -> list[Column]:
    """The report's columns: who and how, the judge's figures, the distribution metrics, speed,
    likelihood and training steps."""
    judged = [Column(JUDGE_NAMES.get(k, k), lambda r, k=k: (r.get("judge") or {}).get(k), "max", _na(_percent))
              for k in judge_keys(results)]
    return [
        Column("family", lambda r: r["label"], None, lambda v, r: str(v)),
        Column("sampling steps", lambda r: r.get("steps"), None, _na(_count)),
        Column("NFE / image", lambda r: r.get("nfe_per_image"), "min", _na(_count)),
        Column("s / image", lambda r: r.get("seconds_per_image"), "min", _na(_seconds)),
        *judged,
        Column("FD", lambda r: r.get("fd"), "min", _na(_number)),
        Column("KID", lambda r: r.get("kid"), "min", _na(_number)),
        Column("precision", lambda r: r.get("precision"), "max", _na(_percent)),
        Column("recall", lambda r: r.get("recall"), "max", _na(_percent)),
        Column("NLL bits / token", lambda r: r.get("nll_bits"), "min", _nll),
        Column("train steps", lambda r: r.get("train_steps"), None, _na(_count)),
    ]


def best_rows(values: list[Any], texts: list[str], better: str | None) -> set[int]:
    """Indices of the best values (ties, as displayed, all count); none when the column is not
    ranked, has no number, or every row ties (nothing to single out)."""
    numbers = [(v, i) for i, v in enumerate(values) if is_number(v)]
    if better is None or not numbers:
        return set()
    best_value, best_index = (max if better == "max" else min)(numbers, key=lambda p: p[0])
    best = {i for v, i in numbers if v == best_value or texts[i] == texts[best_index]}
    return set() if len(best) == len(numbers) > 1 else best


def table(results: dict) -> list[list[str]]:
    """Header and rows of the report's table: the generator rows with the best value of each
    ranked column in bold, then the reference rows (floor, ceiling), which are never ranked."""
    cols = columns(results)
    generated = [r for r in results["rows"] if r.get("kind", "generator") == "generator"]
    references = [r for r in results["rows"] if r.get("kind", "generator") != "generator"]
    cells = [[c.fmt(c.get(r), r) for c in cols] for r in generated]
    for j, c in enumerate(cols):
        for i in best_rows([c.get(r) for r in generated], [row[j] for row in cells], c.better):
            cells[i][j] = f"**{cells[i][j]}**"
    italic = lambda text: text if text == "n/a" else f"*{text}*"   # noqa: E731
    cells += [[italic(c.fmt(c.get(r), r)) for c in cols] for r in references]
    return [[c.header for c in cols], *cells]


def markdown_table(rows: list[list[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


# ---------------------------------------------------------------------------- the plot

def plot_quality_vs_time(results: dict, path: str | os.PathLike) -> Path | None:
    """Judged quality (y) against sampling seconds per image (x, log scale): one line per family
    through its step counts, each point labelled with its steps; the floor (real images) and the
    tokenizer's ceiling as horizontal lines.  Without a judge the y axis is the Frechet distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = quality_key(results)
    value = (lambda r: (r.get("judge") or {}).get(key)) if key else (lambda r: r.get("fd"))
    scale = 100.0 if key else 1.0
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    families: dict[str, list[dict]] = {}
    for r in results["rows"]:
        if r.get("kind", "generator") == "generator" and is_number(value(r)) and is_number(r.get("seconds_per_image")) \
                and r["seconds_per_image"] > 0:
            families.setdefault(r.get("family") or r["label"], []).append(r)
    for family, rows in families.items():
        rows = sorted(rows, key=lambda r: r["seconds_per_image"])
        xs, ys = [r["seconds_per_image"] for r in rows], [scale * value(r) for r in rows]
        line, = ax.plot(xs, ys, marker="o", label=family)
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"{_count(r['steps'])} steps" if is_number(r.get("steps")) else "", (x, y),
                        textcoords="offset points", xytext=(4, 4), fontsize=7, color=line.get_color())
    styles = {"floor": ("real images", ":"), "ceiling": ("tokenizer ceiling (decoded real tokens)", "--")}
    for r in results["rows"]:
        if r.get("kind") in styles and is_number(value(r)):
            name, style = styles[r["kind"]]
            ax.axhline(scale * value(r), color="grey", linestyle=style, linewidth=1, label=name)
    if not families:
        ax.text(0.5, 0.5, "no timed samples", transform=ax.transAxes, ha="center")
    else:
        ax.set_xscale("log")
    ax.set_xlabel("sampling seconds per image (log scale)")
    ax.set_ylabel(f"{JUDGE_NAMES.get(key, key)} (%)" if key else "Frechet distance (lower is better)")
    ax.set_title("quality against sampling time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_quality_vs_training(results: dict, path: str | os.PathLike) -> Path | None:
    """Judged quality (y) against training images seen (x): one line per family through the
    points its run judged during training (results["training"][family]["curve"]), the tokenizer's
    ceiling as a horizontal line.  None when no family has a judged point."""
    key = quality_key(results)
    curves = {}
    for family, t in (results.get("training") or {}).items():
        points = [(p["images_seen"], (p.get("judge") or {}).get(key)) for p in t.get("curve") or []]
        points = [(x, 100.0 * y) for x, y in points if is_number(y)]
        if points:
            curves[family] = points
    if not key or not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for family, points in curves.items():
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=family)
    for r in results["rows"]:
        if r.get("kind") == "ceiling" and is_number((r.get("judge") or {}).get(key)):
            ax.axhline(100.0 * r["judge"][key], color="grey", linestyle="--", linewidth=1, label=r["label"])
    ax.set_xlabel("training images seen")
    ax.set_ylabel(f"{JUDGE_NAMES.get(key, key)} (%)")
    ax.set_ylim(0, 102)
    ax.set_title("quality against training")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- results.json

def _jsonable(value: Any) -> Any:
    """Strict JSON: non-finite floats become null (read back as None, shown as "n/a"), paths strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return str(value)
    if hasattr(value, "item") and callable(value.item):       # numpy / torch scalars
        return _jsonable(value.item())
    return value


def save_results(results: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_jsonable(results), indent=2, allow_nan=False))
    os.replace(tmp, path)
    return path


def load_results(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------- report.md

def write_report(out: str | os.PathLike, results: dict, extra: list[str] = ()) -> Path:
    """report.md (the table, notes, the plot, the grids, training, how to reproduce; `extra`
    markdown lines at the end), quality_vs_time.png and results.json into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_quality_vs_time(results, out / PLOT)
    curve_plot = plot_quality_vs_training(results, out / CURVE_PLOT)
    results = {**results, "report": {"markdown": REPORT, "plot": PLOT,
                                     "training_plot": CURVE_PLOT if curve_plot else None}}
    save_results(results, out / RESULTS)
    s = results.get("settings", {})
    families = ", ".join(s.get("families", [])) or "the generators"
    title = results.get("title", "tokgen compare")
    lines = [f"# {title}: {families} on {s.get('dataset', 'one dataset')}", "",
             *_setup(s, results["rows"]), "", "## Results", "", markdown_table(table(results)), "", *_notes(results),
             *[f"- **Note**: {note}" for note in results.get("notes", [])], "",
             "## Quality against sampling time", "", f"![quality against sampling time]({PLOT})", ""]
    if curve_plot:
        lines += ["## Quality against training", "",
                  "Each family judged on a small sample at evenly spaced points of its training budget (the "
                  "samples per point and the points are in results.json): which approach learns fastest on "
                  "this data.", "", f"![quality against training]({CURVE_PLOT})", "", *_curve_table(results), ""]
    grids = [r for r in results["rows"] if r.get("grid")]
    if grids:
        lines += ["## Samples", ""]
        for r in grids:
            steps = f", {_count(r['steps'])} steps" if is_number(r.get("steps")) else ""
            lines += [f"**{r['label']}{steps}**", "", f"![{r['label']}]({r['grid']})", ""]
    lines += _training(results.get("training", {}))
    if s.get("command"):
        lines += ["## Reproduce", "", "```", s["command"], "```", "",
                  f"Every number and setting is in `{RESULTS}`.", ""]
    lines += list(extra)
    path = out / REPORT
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _setup(s: dict, rows: list[dict]) -> list[str]:
    budget = s.get("budget", {})
    spend = " or ".join(p for p in (f"{budget['max_steps']:,} steps" if budget.get("max_steps") else "",
                                    f"{budget['max_minutes']:g} wall-minutes" if budget.get("max_minutes") else "")
                        if p)
    # the settings each family sampled with (guidance left open resolves to the family's default)
    resolved = {r["family"]: r.get("sampling", {}) for r in rows if r.get("kind") == "generator" and r.get("family")}
    sampling = {k: v for k, v in s.get("sampling", {}).items() if k not in ("cfg_scale", "top_p")}
    knobs = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sampling.items() if v is not None)
    text = lambda v: "none" if v is None else f"{v:g}"  # noqa: E731
    for key in ("top_p", "cfg_scale"):   # left open, each family's default: shown per family
        values = {f: v.get(key) for f, v in resolved.items()}
        if all(v is None for v in values.values()):
            continue
        name = key.replace("_", " ")
        shown = (f"{name} {text(next(iter(values.values())))}" if len(set(values.values())) == 1 else
                 f"{name} " + ", ".join(f"{f} {text(v)}" for f, v in values.items()))
        knobs = ", ".join(p for p in (shown, knobs) if p)
    return [f"One tokenizer (`{s.get('tokenizer', '?')}`), one token folder (`{s.get('tokens', '?')}`); every "
            f"family trained on the same tokens with the same budget ({spend or 'see results.json'} each, size "
            f"`{s.get('size', '?')}`, condition `{s.get('condition', '?')}`, training precision "
            f"{precision_text(s.get('mixed_precision', '?'))}, seed {s.get('seed', '?')}), then {s.get('n', '?')} "
            f"samples per family and step count ({knobs or 'default sampling'}; precision "
            f"{precision_text(s.get('precision', '?'))}, batch {s.get('sample_batch_size', '?')}, "
            f"device {s.get('device', '?')}).", *_one_tokenizer_why(s)]


def _one_tokenizer_why(s: dict) -> list[str]:
    """Why every family shares the tokenizer, where it is multi-scale (with one scale there is no choice)."""
    if len((s.get("spec") or {}).get("scales") or ()) < 2:
        return []
    return ["", "Why one tokenizer for all: VAR needs a multi-scale tokenizer, and the other families read its "
            "scales as one coarse-to-fine sequence, so every family is decoded by the same decoder and judged "
            "against the same ceiling; the differences in the table are the generators' alone. (A paired run "
            "gave AR the same caption match on a single-scale tokenizer's 64 tokens as on these scales: README, "
            "\"Why AR and D3PM learned slowly\".)"]


def precision_text(choice: dict | str) -> str:
    """A precision as train/precision.py recorded it ("fp32 (auto: CPU without native bfloat16)"),
    or the plain flag value of older results ("no" = fp32)."""
    if isinstance(choice, dict):
        return f"{choice['chosen']} ({'auto: ' if choice.get('requested') == 'auto' else ''}{choice['why']})"
    return "fp32" if choice == "no" else choice


def _notes(results: dict) -> list[str]:
    s = results.get("settings", {})
    n, nll_n = s.get("n", "N"), s.get("nll_n", "M")
    judge = s.get("judge") or "no judge"
    space = s.get("feature_space", "the judge's features")
    return [
        f"- **Judged columns**: the {judge} reads each sample against its condition (the first {n} "
        "validation items' captions or labels); per-attribute accuracies beside the headline figure.",
        f"- **FD, KID, precision, recall**: the samples against {s.get('reference') or f'{n} real test images'}, "
        f"in {space}; KID is the mean over subsets (std in "
        "results.json)" + ("; without the real images' features (a statistics file) KID, precision and recall are "
                           "n/a." if s.get("fid_stats") else "."),
        "- **NFE / image**: transformer evaluations per image, counted during sampling: "
        + _nfe_text(s.get("family_facts")) + ". With classifier-free guidance the conditional "
        "and null rows run as one doubled batch and count as **2** evaluations per step. A caption encoder's "
        "single pass is not counted.",
        "- **s / image**: wall seconds of token sampling per image (after one warm-up batch), without the "
        "tokenizer's decoder, which is the same for every family"
        + (f"; the samples split over {s['processes']} processes, it is the wall time of their draw (the slowest "
           "process's) over all the samples." if (s.get("processes") or 1) > 1 else "."),
        f"- **NLL bits / token** on {nll_n} held-out test items with their conditions: "
        + _likelihood_text(s.get("family_facts")) + ".",
        "- *real vs real (floor)*: real validation images against the real test images at the same N: what a "
        "perfect generator would score (in the judged columns: the judge's own accuracy on real images). "
        "*tokenizer ceiling*: the real validation tokens decoded: the best a generator on this tokenizer can do.",
        "- **Bold**: the best generator per column (ties as shown are all bold); the reference rows in italics "
        "are not ranked.",
    ]


def _names(families: list[str], facts: dict) -> str:
    """The families as the text spells them: each family's `display_name`, recorded in its facts
    (a results.json from before names were recorded: the registered name)."""
    names = [facts.get(f, {}).get("name") or f for f in families]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _nfe_text(facts: dict | None) -> str:
    """How each family spends transformer evaluations, from the facts the families declare."""
    if not facts:            # a results.json from before the families' facts were recorded
        return "one per token (AR, KV cache), per scale (VAR) or per sampling step, as each family declares"
    fixed = [f"{_names([f], facts)} {v['fixed_steps']}" for f, v in facts.items() if v["fixed_steps"]]
    stepped = [f for f, v in facts.items() if not v["fixed_steps"]]
    return "; ".join(fixed + ([f"{_names(stepped, facts)} one per sampling step"] if stepped else []))


def _likelihood_text(facts: dict | None) -> str:
    if not facts:
        return "exact where the family has a likelihood, a bound where it has one, n/a otherwise"
    exact = [f for f, v in facts.items() if v["likelihood"] == "exact"]
    bound = [f for f, v in facts.items() if v["likelihood"] == "bound"]
    none = [f for f, v in facts.items() if not v["likelihood"]]
    parts = ([f"exact for {_names(exact, facts)}"] if exact else []) + \
            ([f"for {_names(bound, facts)} the variational bound (≤, an upper bound on its NLL)"] if bound else []) + \
            ([f"{_names(none, facts)} define{'s' if len(none) == 1 else ''} no likelihood (n/a)"] if none else [])
    return "; ".join(parts)


def _curve_table(results: dict) -> list[str]:
    """The curve's points as a table: one row per family, one column per point (images seen)."""
    key = quality_key(results)
    training = results.get("training") or {}
    curves = {f: [p for p in t.get("curve") or [] if (p.get("judge") or {}).get(key) is not None]
              for f, t in training.items()}
    curves = {f: c for f, c in curves.items() if c}
    if not curves:
        return []
    images = sorted({p["images_seen"] for c in curves.values() for p in c})
    lines = ["| family | " + " | ".join(f"{x:,} images" for x in images) + " |", "|---" * (len(images) + 1) + "|"]
    for family, points in curves.items():
        by_images = {p["images_seen"]: p["judge"][key] for p in points}
        lines.append(f"| {family} | " + " | ".join(_percent(by_images[x]) if x in by_images else ""
                                                     for x in images) + " |")
    return lines


def _training(training: dict) -> list[str]:
    if not training:
        return []
    lines = ["## Training", "",
             "Wall time per family: training (without the judged points during it), those points, and the final "
             "evaluation (sampling every step count, judging, FD/KID/PR, likelihood).", "",
             "| family | steps | images seen | precision | training min | curve points min | evaluation s "
             "| stopped by | final loss | val loss | run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for family, t in training.items():
        logs = t.get("logs", {})
        loss = logs.get("loss/generator", logs.get("loss"))
        val = logs.get("eval/val_loss", logs.get("val_loss"))
        cell = lambda v: _number(v) if is_number(v) else "n/a"   # noqa: E731
        images = f"{t['images_seen']:,}" if is_number(t.get("images_seen")) else "n/a"
        precision = (t.get("precision") or {}).get("chosen", "n/a") if isinstance(t.get("precision"), dict) \
            else t.get("precision", "n/a")
        lines.append(f"| {family} | {t.get('steps', 'n/a')} | {images} | {precision} "
                     f"| {cell(t.get('train_minutes', t.get('minutes')))} | {cell(t.get('curve_minutes'))} "
                     f"| {cell(t.get('eval_seconds'))} | {t.get('stopped', 'n/a')} | {cell(loss)} | {cell(val)} "
                     f"| `{t.get('run', '')}` |")
    return lines + [""]


# ---------------------------------------------------------------------------- measuring an image set

def judge_and_features(batches, judge=None, extractor=None, keep: int = 0):
    """Stream `(images, targets)` batches through the judge and the feature extractor.

    Returns (the judge's scores averaged over the images, or None without a judge; the features
    (N, D) as numpy, or None without an extractor; the first `keep` images, or None).  The
    judge's figures are shares, so the batch scores are averaged weighted by batch size (exact
    when every image shows the same number of objects, as in every embedded dataset)."""
    parts, seen = [], 0
    for images, targets in batches:
        parts.append(measure_batch(images, targets, judge, extractor, keep=max(0, keep - seen)))
        seen += len(images)
    return combine_batches(parts, judge is not None)


def measure_batch(images, targets, judge=None, extractor=None, keep: int = 0) -> dict:
    """One batch of `judge_and_features`: {"n": images, "scores": the judge's dict or None,
    "features": (B, D) numpy or None, "kept": the first `keep` images (CPU) or None}.  A
    distributed evaluation measures its batches on every process and `combine_batches` them, in
    batch order, on the main process: the same figures as one process streaming them all."""
    from .features import extract_features

    b = len(images)
    return {"n": b,
            "scores": {k: float(v) for k, v in judge.score(images, targets).items()} if judge is not None else None,
            "features": extract_features(extractor, images, batch_size=b) if extractor is not None else None,
            "kept": images[:keep].cpu() if keep > 0 else None}


def combine_batches(parts: list[dict], judged: bool = True):
    """`measure_batch` results, in batch order, as `judge_and_features` returns them: (the scores
    averaged weighted by batch size, or None when not `judged`; (N, D) features or None; the kept
    images or None).  The sums run in batch order, so the figures do not depend on which process
    measured which batch."""
    import numpy as np
    import torch

    sums: dict[str, float] = {}
    feats, kept, count = [], [], 0
    for part in parts:
        b = part["n"]
        for k, v in (part["scores"] or {}).items():
            sums[k] = sums.get(k, 0.0) + v * b
        if part["features"] is not None:
            feats.append(part["features"])
        if part["kept"] is not None and len(part["kept"]):
            kept.append(part["kept"])
        count += b
    scores = {k: v / max(count, 1) for k, v in sums.items()} if judged else None
    return scores, (np.concatenate(feats) if feats else None), (torch.cat(kept) if kept else None)


def distribution_metrics(fake, real, *, seed: int = 0, kid_subset: int = 1000, kid_subsets: int = 100,
                         k: int = 3, real_stats=None) -> dict[str, float]:
    """Frechet distance, KID (mean and std over subsets) and improved precision/recall of the
    `fake` features against the `real` ones (eval/metrics.py); None for each without features.
    When one subset holds both whole sets (N <= kid_subset), every subset is the same and the KID
    is one MMD: its std would be a meaningless 0, so it is None.

    real_stats: the real set's (mu, sigma) given instead (a statistics file, `read_fid_stats`):
    the FD is taken against them; KID, precision and recall need real features (`real`), and are
    None without them."""
    none = {"fd": None, "kid": None, "kid_std": None, "precision": None, "recall": None}
    if fake is None or (real is None and real_stats is None):
        return none
    from .metrics import (frechet_distance, frechet_distance_from_stats, gaussian_stats, kernel_inception_distance,
                          precision_recall)

    if real_stats is not None:
        mu, sigma = real_stats
        if fake.shape[1] != len(mu):
            raise ValueError(f"the samples' features are {fake.shape[1]}-d but the real statistics are "
                             f"{len(mu)}-d: take both in the same feature space")
        fd = frechet_distance_from_stats(*gaussian_stats(fake), mu, sigma)
        if real is None:
            return {**none, "fd": fd}
    else:
        fd = frechet_distance(fake, real)
    size = min(kid_subset, len(fake), len(real))
    whole = size == len(fake) == len(real)
    kid, kid_std = kernel_inception_distance(fake, real, subset_size=size, subsets=1 if whole else kid_subsets,
                                             seed=seed)
    precision, recall = precision_recall(real, fake, k=k)
    return {"fd": fd, "kid": kid, "kid_std": None if whole else kid_std,
            "precision": precision, "recall": recall}
