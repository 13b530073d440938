"""The comparison's measurements: the reference rows (real images: the floor; the decoded real
tokens: the tokenizer's ceiling), then every family at every sampling step count through the one
evaluation path (`train.evaluation.evaluate_generator`), and its likelihood on held-out items.

Under several processes (`accelerate launch`) every process runs these, each drawing, decoding,
judging and featurizing its share of the batches (batch i on process i mod W, seeded seed + i);
the main process gathers them in batch order and gets the figures one process would (the wall
time of the draw aside), the rows and the grids; the others get no rows."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ...distributed import is_main_process, world_size
from ...evaluation import EvalConfig, evaluate_generator, likelihood, measure_items
from .config import CompareConfig
from .plan import Plan


@dataclass
class Reference:
    """What every family is measured against: the judge, the feature space, the N real test
    images' features; the conditions, for grid captions."""
    judge: object | None
    extractor: object | None
    feature_space: str
    real_features: object | None              # (N, D) numpy (main process)
    titles: list[str]                         # what the samples were conditioned on, for grid captions
    rows: list[dict]                          # the floor and ceiling rows (main process; [] on the others)
    real_stats: tuple | None = None           # (mu, sigma) of --fid-stats, the FD's real statistics instead


def references(config: CompareConfig, plan: Plan, tokenizer, val, device) -> Reference:
    """The floor (real val vs real test) and the ceiling (decoded val tokens vs real test) rows;
    under several processes each measures its share (the rows on the main process).  With
    --fid-stats the real test images are not featurized: the FD is taken against the file's
    statistics (KID, precision and recall against its activations when it has them, else n/a)."""
    import torch

    from tokgen.data import build_dataset
    from tokgen.eval.judges import judge_for
    from tokgen.pipeline import decode_tokens

    n, size, batch = config.n, tokenizer.spec.image_size, config.sample_batch_size
    distributed = world_size() > 1
    judge = judge_for(plan.source, size, plan.dataset_options)
    extractor, feature_space = _extractor(judge, device, config.fid_stats)
    targets = judge.targets(val.captions[:n], val.labels[:n]) if judge is not None else [None] * n
    shown = [c or f"class {int(y)}" for c, y in zip(val.captions[:n], val.labels[:n])]   # what the items show
    datasets = {}

    def real(split):
        if split not in datasets:
            datasets[split] = build_dataset(plan.source, split, size, **plan.dataset_options)
        return lambda lo, hi: torch.stack([datasets[split][i]["image"] for i in range(lo, hi)])

    def decoded(lo, hi):
        return torch.cat(list(decode_tokens(tokenizer, [s[lo:hi] for s in val.scales], batch)))

    real_stats = real_features = None
    if config.fid_stats:
        from tokgen.eval.metrics import read_fid_stats

        mu, sigma, real_features = read_fid_stats(config.fid_stats, dim=extractor.dim)
        real_stats = (mu, sigma)
    else:
        real_features = (measure_items(real("test"), n, batch, [None] * n, None, extractor,
                                       distributed=distributed) or (None, None, None))[1]
    rows = []
    sets = (("floor", "real vs real (floor)", "grid-real.png", real("val")),
            ("ceiling", "tokenizer ceiling", "grid-tokenizer.png", decoded))
    for kind, label, grid, images in sets:
        measured = measure_items(images, n, batch, targets, judge, extractor, keep=config.grid_n,
                                 distributed=distributed)
        if measured is None:                  # not the main process: its share is measured
            continue
        scores, feats, first = measured
        rows.append({"kind": kind, "label": label, "judge": scores,
                     **_distribution(feats, real_features, config.seed, real_stats),
                     "grid": _grid(config.out, grid, first, shown, f"{label}: {n} val items")})
    given = {"text": shown, "class": [f"class {int(y)}" for y in val.labels[:n]],
             "none": ["unconditional"] * n}[config.condition]                     # what the samples were given
    return Reference(judge, extractor, feature_space, real_features, given, rows, real_stats)


def evaluate_family(config: CompareConfig, plan: Plan, family: str, tokenizer, val, test, ref: Reference,
                    device) -> list[dict]:
    """Every step count of one family: samples for the val conditions, timed and counted, then
    judged and measured; and its NLL / ELBO on the test items."""
    from tokgen.generators import load_generator
    from tokgen.generators.sampling import guided

    generator = load_generator(plan.runs / family / "generator", spec=tokenizer.spec, device=device)
    generator.attach_tokenizer(tokenizer)
    distributed = world_size() > 1
    # the bound's noise seeded batch by batch (seed + i), so that any number of processes gives one figure
    nll, nll_kind = likelihood(generator, test, config.nll_n, seed=config.seed,
                               batch_size=config.sample_batch_size, precision=config.precision, batchwise=True,
                               distributed=distributed)
    rows = []
    for steps in plan.steps[family]:
        eval_config = EvalConfig(n=config.n, seed=config.seed, batch_size=config.sample_batch_size,
                                 sampling=dataclasses.replace(config.sampling, steps=steps),
                                 precision=config.precision, batchwise=True, count_nfe=True, keep=config.grid_n,
                                 progress=f"{family} {steps or 'fixed'} steps", distributed=distributed)
        try:
            ev = evaluate_generator(generator, tokenizer, val, eval_config, judge=ref.judge, extractor=ref.extractor)
        except ValueError as e:
            raise ValueError(f"sampling {family} at {steps} steps: {e}") from None
        if not is_main_process():             # its share is drawn and measured; the rows are the main process's
            continue
        per_pass = 2 if guided(ev.sampling["cfg_scale"]) else 1             # CFG: [cond; null] rows, 2 per step
        shown_steps = steps if steps is not None else (ev.nfe_per_image / per_pass
                                                       if ev.nfe_per_image is not None else None)
        name = f"grid-{family}-{steps}.png" if steps is not None else f"grid-{family}.png"
        title = f"{family}, {shown_steps:g} steps, cfg {ev.sampling['cfg_scale']:g}" if shown_steps else family
        rows.append({"kind": "generator", "label": family, "family": family, "steps": shown_steps,
                     "nfe_per_image": ev.nfe_per_image, "seconds_per_image": ev.seconds_per_image, "judge": ev.judge,
                     **_distribution(ev.features, ref.real_features, config.seed, ref.real_stats),
                     "nll_bits": nll, "processes": ev.processes,
                     "nll_kind": nll_kind, "sampling": ev.sampling,
                     "grid": _grid(config.out, name, ev.images, ref.titles, title)})
    return rows


def _extractor(judge, device, fid_stats: str | None = None) -> tuple[object | None, str]:
    """The judge's features; with --fid-stats, or for a dataset without a judge, Inception-v3's
    when its weights are on this machine (--fid-stats: an error when they are not); else none
    (FD, KID, precision and recall are then n/a)."""
    from tokgen.eval.features import JudgeFeatures, feature_extractor

    if fid_stats:
        return feature_extractor("inception").to(device), \
            f"Inception-v3 pool features (2048-d); the real statistics from {fid_stats}"
    if judge is not None:
        features = JudgeFeatures(judge)
        return features, f"the {features.name}'s {features.dim}-d features"
    try:
        return feature_extractor("inception").to(device), "Inception-v3 pool features (2048-d)"
    except (FileNotFoundError, ValueError) as e:
        return None, f"none: no judge for this dataset and no Inception weights ({str(e).splitlines()[0]})"


def _distribution(feats, real_features, seed: int, real_stats=None) -> dict:
    from tokgen.eval.compare import distribution_metrics

    return distribution_metrics(feats, real_features, seed=seed, real_stats=real_stats)


def _grid(out: str, name: str, images, titles: list[str], title: str) -> str | None:
    from tokgen.eval.visualize import save_captioned_grid

    if images is None or not len(images):
        return None
    save_captioned_grid(images, titles[:len(images)], Path(out) / name, ncol=8, suptitle=title)
    return name
