"""One evaluation of a generator: samples for a split's conditions, decoded, judged, measured and
timed; and its likelihood on held-out items.  `tokgen train-generator` (the judged points during
training and the final eval.json), `tokgen compare` and the demo all evaluate through
`evaluate_generator`.

    result = evaluate_generator(generator, tokenizer, val, EvalConfig(n=200, sampling=SampleConfig(steps=8)))
    result.judge          # {"caption_match": 0.97, "shape": ..., ...} (shapes) or {"accuracy": ...} (digits)
    bits, kind = likelihood(generator, test, n=256)   # kind: "exact" (AR, VAR), "elbo" (D3PM), None (MaskGIT)

Two ways of drawing and judging a sample set, both kept so that every figure made before the
three callers shared this path reproduces (`EvalConfig.batchwise`): compare seeds batch i with
seed + i and judges batch by batch (the mean weighted by batch size); train-generator draws one
seeded stream over the batches and judges the set as one.  With a single batch (n <= batch_size)
the two draw the same samples.

Distributed (`EvalConfig.distributed`, compare under `accelerate launch`): every process calls
`evaluate_generator` with the same arguments and draws, decodes, judges and featurizes its share
of the batches, batch i on process i mod W, seeded seed + i as on one process; the per-batch
results are gathered to the main process and combined in batch order, so the figures are those
of one process, bit for bit (the timing aside: the wall time of the distributed draw, the slowest
process's).  The main process gets the Evaluation, the others None.  Only the batchwise draw
splits: one seeded stream cannot be cut without drawing what comes before (a ValueError).
`likelihood(..., batchwise=True, distributed=True)` splits the same way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tokgen.pipeline import SampleConfig, condition_rows, decode_tokens, sample_tokens

from .distributed import barrier, gather_to_main, is_main_process, process_index, world_size
from .precision import Choice, autocast


@dataclass
class EvalConfig:
    n: int = 256                     # samples, one for each of the first n conditions of the split
    seed: int = 0                    # seeds the sampling: the same seed gives the same samples
    batch_size: int = 64             # sampled and decoded at once
    sampling: SampleConfig = field(default_factory=SampleConfig)   # steps, guidance, temperature, top-k/p
    precision: str | Choice = "fp32"  # the sampling forwards under this autocast (train/precision.py); decoding stays float32
    batchwise: bool = False          # compare's draw: batch i seeded seed + i and judged on its own; else one stream, judged as one set
    count_nfe: bool = False          # count network evaluations per image on a few samples first (also the timing's warm-up)
    keep: int = 0                    # the first `keep` decoded samples are returned (for a grid)
    progress: str | None = None      # a progress bar with this title while sampling batchwise; None: none
    distributed: bool = False        # every process calls with the same arguments and measures its share of the batches (batchwise only); the main process gets the Evaluation, the others None


@dataclass
class Evaluation:
    n: int
    sampling: dict[str, Any]         # the settings sampled with, the family's defaults filled in
    seconds_per_image: float         # wall time of the sampling (decoding and judging not included)
    nfe_per_image: float | None      # core passes per image (config.count_nfe), else None
    judge: dict[str, float] | None   # the judge's scores; None without a judge
    features: Any = None             # (n, D) numpy features of the samples, with an extractor
    images: Tensor | None = None     # the first config.keep samples, (keep, 3, H, W) in [0, 1]
    processes: int = 1               # the processes that drew the samples (config.distributed)


def evaluate_generator(generator, tokenizer, split, config: EvalConfig, *, judge=None,
                       extractor=None) -> Evaluation | None:
    """config.n samples for the conditions of the first n items of `split` (a TokenDataset),
    decoded by `tokenizer`, scored by `judge` (default: the judge of the split's dataset; None
    when it has none) against those items, with `extractor`'s features when one is given.
    config.distributed: every process calls it and measures its share; None on all but the main
    process.  Raises ValueError for sampling settings the family cannot take."""
    n = min(config.n, len(split))
    judge = judge if judge is not None else dataset_judge(split, generator.spec.image_size)
    settings = config.sampling.resolved(generator)
    rows = condition_rows(generator, split.labels[:n], list(split.captions[:n]))
    if config.distributed and world_size() > 1 and not config.batchwise:
        raise ValueError("a distributed evaluation draws batchwise (batch i seeded seed + i, on process i mod "
                         "processes): one seeded stream cannot be split across processes; set batchwise=True")
    nfe = count_nfe(generator, rows, config) if config.count_nfe else None
    if config.batchwise:
        return _evaluate_batchwise(generator, tokenizer, split, config, n, rows, settings, nfe, judge, extractor)
    maps, seconds = draw(generator, rows, n, config)
    if judge is None and extractor is None and not config.keep:     # nothing reads the images
        return Evaluation(n, settings, seconds, nfe, None)
    targets = judge.targets(split.captions[:n], split.labels[:n]) if judge is not None else [None] * n
    scores, features, images = measure(decode_tokens(tokenizer, maps, config.batch_size), targets, judge,
                                       extractor, keep=config.keep, batchwise=False)
    return Evaluation(n, settings, seconds, nfe, scores, features, images)


def _evaluate_batchwise(generator, tokenizer, split, config: EvalConfig, n: int, rows, settings, nfe, judge,
                        extractor) -> Evaluation | None:
    """The batchwise evaluation: this process's batches (all of them, unless distributed) drawn,
    timed, decoded and measured batch by batch; the batches of every process combined in batch
    order on the main process."""
    from tokgen.eval.compare import combine_batches, measure_batch

    batch = config.batch_size
    mine = my_batches(n, batch, config.distributed)
    if config.distributed:
        barrier()                    # one start line: the draw's wall time is the slowest process's
    maps, elapsed = _draw_batches(generator, rows, n, config, mine)
    parts, reads = [], judge is not None or extractor is not None or bool(config.keep)
    if reads:
        targets = judge.targets(split.captions[:n], split.labels[:n]) if judge is not None else [None] * n
        for i, chunk in zip(mine, maps):
            lo = i * batch
            images = torch.cat(list(decode_tokens(tokenizer, chunk, batch)))
            parts.append((i, measure_batch(images, targets[lo:lo + len(images)], judge, extractor,
                                           keep=max(0, config.keep - lo))))
    gathered = gather_to_main((elapsed, parts)) if config.distributed else [(elapsed, parts)]
    if gathered is None:
        return None
    seconds = max(e for e, _ in gathered) / max(n, 1)
    if not reads:                                                     # nothing reads the images
        return Evaluation(n, settings, seconds, nfe, None, processes=len(gathered))
    scores, features, images = combine_batches(_in_batch_order(ps for _, ps in gathered), judge is not None)
    return Evaluation(n, settings, seconds, nfe, scores, features, images, processes=len(gathered))


def my_batches(n: int, batch_size: int, distributed: bool = True) -> list[int]:
    """The indices of the batches (batch i: items [i * batch_size, (i + 1) * batch_size) of n)
    this process draws: i = rank, rank + W, ... under W processes when distributed; else all."""
    count = -(-n // batch_size) if n > 0 else 0
    if not distributed:
        return list(range(count))
    return list(range(process_index(), count, world_size()))


def dataset_judge(split, image_size: int):
    """The embedded judge of the dataset a token split came from (with its options), or None."""
    from tokgen.eval.judges import judge_for

    return judge_for(split.source, image_size, split.dataset_options)


def measure(batches, targets, judge, extractor=None, *, keep: int = 0, batchwise: bool = True):
    """Image batches scored by `judge` against `targets` and put through `extractor`: (scores or
    None, (N, D) features or None, the first `keep` images or None).  batchwise=False judges the
    images as one set, in one call."""
    from tokgen.eval.compare import judge_and_features

    if batchwise:
        return judge_and_features(_with_targets(batches, targets), judge, extractor, keep=keep)
    images = torch.cat(list(batches))
    _, features, first = judge_and_features([(images, None)], None, extractor, keep=keep)
    return (judge.score(images, targets) if judge is not None else None), features, first


def measure_items(images_of, n: int, batch_size: int, targets, judge, extractor=None, *, keep: int = 0,
                  distributed: bool = False):
    """`measure` (batchwise) of n items that `images_of(lo, hi)` gives as an image batch, batch i
    being items [i * batch_size, (i + 1) * batch_size): distributed, each process measures its
    share of the batches and the main process combines them in batch order (the figures of one
    process); None on the others."""
    from tokgen.eval.compare import combine_batches, measure_batch

    parts = []
    for i in my_batches(n, batch_size, distributed):
        lo, hi = i * batch_size, min(n, (i + 1) * batch_size)
        parts.append((i, measure_batch(images_of(lo, hi), targets[lo:hi], judge, extractor, keep=max(0, keep - lo))))
    gathered = gather_to_main(parts) if distributed else [parts]
    if gathered is None:
        return None
    return combine_batches(_in_batch_order(gathered), judge is not None)


def _in_batch_order(gathered) -> list:
    """The parts of every process (each a list of (batch index, part)), as one list in batch order."""
    return [part for _, part in sorted((p for parts in gathered for p in parts), key=lambda p: p[0])]


def _with_targets(batches, targets):
    """Pair consecutive image batches with their slice of `targets`."""
    lo = 0
    for images in batches:
        yield images, targets[lo:lo + len(images)]
        lo += len(images)


# ---------------------------------------------------------------------------- sampling, timed and counted

def draw(generator, rows: dict[str, Tensor], n: int, config: EvalConfig) -> tuple[list[Tensor], float]:
    """n token maps per scale for the condition rows (config.batchwise: batch i seeded seed + i;
    else one seeded stream), and the wall seconds per image it took."""
    device, batch = generator.device, config.batch_size
    if config.batchwise:
        chunks, elapsed = _draw_batches(generator, rows, n, config, my_batches(n, batch, distributed=False))
        return [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))], elapsed / max(n, 1)
    _sync(device)
    start = time.perf_counter()
    with autocast(config.precision, device):
        maps = sample_tokens(generator, rows, n, config.sampling, config.seed, batch)
    _sync(device)
    seconds = (time.perf_counter() - start) / max(n, 1)
    return [m.cpu() for m in maps], seconds


def _draw_batches(generator, rows: dict[str, Tensor], n: int, config: EvalConfig,
                  batches: list[int]) -> tuple[list[list[Tensor]], float]:
    """The token maps (CPU, one tensor per scale) of the given batches, batch i seeded seed + i
    (what it draws does not depend on which process draws it), and the wall seconds they took."""
    from tqdm.auto import tqdm

    device, batch = generator.device, config.batch_size
    chunks = []
    _sync(device)
    start = time.perf_counter()
    with tqdm(total=sum(min(n, (i + 1) * batch) - i * batch for i in batches), desc=f"sampling {config.progress}",
              unit="img", disable=config.progress is None or not is_main_process()) as bar:
        for i in batches:
            lo, hi = i * batch, min(n, (i + 1) * batch)
            with autocast(config.precision, device):
                chunks.append(sample_tokens(generator, {k: v[lo:hi] for k, v in rows.items()}, hi - lo,
                                            config.sampling, config.seed + i, hi - lo))
            bar.update(hi - lo)
    _sync(device)
    elapsed = time.perf_counter() - start
    return [[m.cpu() for m in c] for c in chunks], elapsed


def count_nfe(generator, rows: dict[str, Tensor], config: EvalConfig, probe: int = 4) -> float | None:
    """Network evaluations per image: the rows that pass through the shared transformer core
    (`generator.core`), per image, while sampling `probe` images.  Counting rows makes the doubled
    [conditional; null] batch of guidance count twice.  The run is also the timing's warm-up."""
    core = getattr(generator, "core", None)
    rows_seen = [0]

    def count(module, inputs, kwargs, output):
        x = inputs[0] if inputs else next(iter(kwargs.values()))
        rows_seen[0] += x.shape[0]

    probe = min(probe, config.n)
    handle = core.register_forward_hook(count, with_kwargs=True) if core is not None else None
    try:
        with autocast(config.precision, generator.device):
            sample_tokens(generator, {k: v[:probe] for k, v in rows.items()}, probe, config.sampling, config.seed,
                          probe)
    finally:
        if handle is not None:
            handle.remove()
    return rows_seen[0] / probe if core is not None else None


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------- likelihood

# a family's `likelihood` -> the method that computes it, and the kind a report shows
_LIKELIHOODS = {"exact": ("nll_bits", "exact"), "bound": ("elbo_bits", "elbo")}


@torch.no_grad()
def likelihood(generator, split, n: int, *, seed: int = 0, batch_size: int = 64,
               precision: str | Choice = "fp32", batchwise: bool = False,
               distributed: bool = False) -> tuple[float | None, str | None]:
    """Mean bits per token on the first n items of `split` with their conditions: the variational
    bound ("elbo") where the family's `likelihood` is "bound" (D3PM), the exact NLL ("exact") where
    it is "exact" (AR, VAR); (None, kind) for n = 0, (None, None) for a family with none (MaskGIT).

    The bound's noise: one stream seeded `seed` over the batches; batchwise: batch i seeded
    seed + i (with n <= batch_size the same).  distributed: every process calls it and scores
    batches i = rank, rank + W, ...; the per-batch sums are added in batch order on the main
    process (the figure of one process); the others get (None, kind).  The bound splits only
    batchwise (a ValueError otherwise)."""
    from tqdm.auto import tqdm

    method, kind = _LIKELIHOODS.get(type(generator).likelihood, (None, None))
    if method is None or n == 0:
        return None, kind
    if distributed and world_size() > 1 and kind == "elbo" and not batchwise:
        raise ValueError("a distributed ELBO seeds its batches one by one (batchwise=True): one noise stream "
                         "cannot be split across processes")
    fn, device = getattr(generator, method), generator.device
    rows = condition_rows(generator, split.labels[:n], list(split.captions[:n]))
    g = torch.Generator(device=device).manual_seed(seed)    # the bound's noise levels and draws
    sums = []
    for i in tqdm(my_batches(n, batch_size, distributed), unit="batch", disable=not is_main_process(),
                  desc=f"{generator.family}: {'ELBO' if kind == 'elbo' else 'NLL'}"):
        lo, hi = i * batch_size, min(n, (i + 1) * batch_size)
        tokens = [s[lo:hi].to(device) for s in split.scales]
        cond = {k: v[lo:hi].to(device) for k, v in rows.items()} or None
        with autocast(precision, device):
            if kind == "elbo":
                bits = fn(tokens, cond, generator=torch.Generator(device=device).manual_seed(seed + i)
                          if batchwise else g)
            else:
                bits = fn(tokens, cond)
        sums.append((i, bits.double().sum().item()))
    gathered = gather_to_main(sums) if distributed else [sums]
    if gathered is None:
        return None, kind
    total = 0.0
    for bits in _in_batch_order(gathered):
        total += bits
    return total / n, kind
