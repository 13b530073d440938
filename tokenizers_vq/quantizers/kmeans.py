"""k-means initialisation of a vector-quantize-pytorch codebook over many vectors.

k-means init of a VQ codebook: Łańcucki et al., "Robust Training of Vector Quantized Bottleneck
Models", IJCNN 2020; the practice of ViT-VQGAN (Yu et al., ICLR 2022).  `VectorQuantize(kmeans_init=True)`
runs Lloyd's algorithm on the first batch it is called with: at ImageNet batch sizes a 16,384-code
book then sees 16 images x 256 tokens = 4,096 vectors per process, a quarter of a vector per code,
and the library warns that "duplicates will be sampled".

`CodebookInit(min_vectors)` gathers the vectors the codebook would see (after the input projection
and, for cosine codebooks, the l2 normalisation) over as many training batches as it takes to reach
`min_vectors` -- summed over processes when the codebook syncs under DDP, whose k-means then runs
on every process's vectors -- then runs k-means and loads the result the way the library's own
`init_embed_` does (`embed_avg`, `cluster_size`, `update_ema()`, `initted`).  Until then the
quantizer passes its input through unquantized (the autoencoder trains a few steps as a plain
autoencoder).  The Lloyd steps assign in chunks, so 327,680 x 16,384 distances (21 GB) never sit
in memory at once, and under DDP the cluster sums (not the per-process means, as the library does)
are all-reduced.

    init = CodebookInit(20 * codebook_size, iters)
    if init.pending(vq._codebook):
        if init.add(vq._codebook, samples):        # True once enough were gathered and k-means ran
            ...initialised; quantize this batch as usual...
        else:
            ...pass the input through...
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

CHUNK_ELEMENTS = 1 << 26  # distances per assignment chunk (256 MB in float32)


def _synced(codebook: nn.Module) -> bool:
    """Whether the codebook's k-means all-reduces across processes (sync_codebook under DDP)."""
    return getattr(codebook, "use_ddp", False) and dist.is_available() and dist.is_initialized()


def codebook_state(embed: Tensor, counts: Tensor | None = None) -> dict[str, Tensor]:
    """The buffers of a vector-quantize-pytorch codebook (its `_codebook` module: embed, embed_avg,
    cluster_size, initted) that hold `embed` (K, d) as its codes, `counts` (K,) vectors behind each
    (None: 1 each), marked initialised so that no k-means init replaces them.  The EMA statistics
    agree with the codes (embed_avg = code x count), so training continues from them.  The one
    place that knows the library's buffer names: the k-means init and the published-checkpoint
    converter both load codebooks through it."""
    codes = embed.float()[None]                                                   # (1, K, d): one codebook
    n = torch.ones(embed.shape[0], device=embed.device) if counts is None else counts.float()
    return {"embed": codes, "embed_avg": codes * n[None, :, None], "cluster_size": n[None],
            "initted": torch.ones((), dtype=torch.bool, device=embed.device)}


CODEBOOK_STATE_KEYS = tuple(codebook_state(torch.zeros(1, 1)))


@torch.no_grad()
def kmeans(samples: Tensor, num_clusters: int, iters: int, *, cosine: bool = False, sample_fn=None,
           all_reduce=None) -> tuple[Tensor, Tensor]:
    """Lloyd's algorithm on samples (N, d) -> (means (K, d), cluster sizes (K,) of the last assignment).

    Means start at K sampled vectors (`sample_fn((1, N, d), K) -> (1, K, d)`, the codebook's own:
    across processes under DDP); a cluster left empty keeps its mean.  `all_reduce` (in place, sum)
    makes sums and counts global under DDP.  Cosine: the means are l2-normalised, assignment by dot
    product (the samples are unit vectors already)."""
    n, d = samples.shape
    if sample_fn is None:
        pick = torch.randperm(n, device=samples.device)[:num_clusters] if n >= num_clusters else \
            torch.randint(0, n, (num_clusters,), device=samples.device)
        means = samples[pick]
    else:
        means = sample_fn(samples[None], num_clusters)[0]
    means = means.float()
    chunk = max(1, CHUNK_ELEMENTS // num_clusters)
    bins = torch.zeros(num_clusters, device=samples.device)
    for _ in range(iters):
        sums = torch.zeros_like(means)
        bins = torch.zeros(num_clusters, device=samples.device)
        half_norms = 0.5 * means.pow(2).sum(-1)                      # (K,)
        for x in samples.split(chunk):
            x = x.float()
            scores = x @ means.t()                                     # (n, K)
            if not cosine:  # nearest in l2: argmax of x.m - |m|^2 / 2
                scores = scores - half_norms
            assign = scores.argmax(-1)
            bins.index_add_(0, assign, torch.ones_like(assign, dtype=bins.dtype))
            sums.index_add_(0, assign, x)
        if all_reduce is not None:
            all_reduce(bins)
            all_reduce(sums)
        new = sums / bins.clamp_min(1.0)[:, None]
        if cosine:
            new = F.normalize(new, dim=-1)
        means = torch.where((bins == 0)[:, None], means, new)
    return means, bins


class CodebookInit:
    """Gathers a VectorQuantize codebook's input vectors over batches, then k-means-initialises it.

    Not a module and holds no state worth saving: a run resumed before the init completed gathers
    again.  `pending` caches the codebook's `initted` flag on the host after one read (no sync and
    no graph break per step); `reset()` drops that cache (a quantizer calls it after load_state_dict)."""

    def __init__(self, min_vectors: int, iters: int = 10):
        self.min_vectors = int(min_vectors)
        self.iters = iters   # Lloyd iterations
        self.samples: list[Tensor] = []
        self.count = 0       # vectors gathered by this process
        self.seen = 0        # vectors the k-means ran on, summed over processes (0 until it ran)
        self._initted: bool | None = None
        self._total = 0

    def reset(self) -> None:
        self._initted = None

    def mark_initted(self) -> None:
        """The codebook was initialised by other means (the library's first-batch init_embed_)."""
        self._initted = True

    def pending(self, codebook: nn.Module) -> bool:
        if self._initted is None:
            self._initted = bool(codebook.initted)
        return not self._initted

    @torch.no_grad()
    def add(self, codebook: nn.Module, vectors: Tensor) -> bool:
        """Keep `vectors` (N, d); once at least `min_vectors` were gathered (over all processes when
        the codebook syncs), run the k-means init (`run`).  True when the codebook is initialised,
        the same answer on every process."""
        vectors = vectors.detach().reshape(-1, vectors.shape[-1]).float()
        self.samples.append(vectors)
        self.count += len(vectors)
        total = self.count
        if _synced(codebook):
            t = torch.tensor([float(self.count)], device=vectors.device)
            dist.all_reduce(t)
            total = int(t.item())
        self._total = total
        if total < self.min_vectors:
            return False
        self.run(codebook)
        return True

    @torch.no_grad()
    def run(self, codebook: nn.Module) -> None:
        """k-means on the gathered vectors; load the codebook as vector-quantize-pytorch's init_embed_
        does and mark it initialised."""
        samples = torch.cat(self.samples)
        self.samples = []
        synced = _synced(codebook)
        means, bins = kmeans(samples, codebook.codebook_size, self.iters, cosine=bool(codebook.use_cosine_sim),
                             sample_fn=codebook.sample_fn if synced else None,
                             all_reduce=codebook.kmeans_all_reduce_fn if synced else None)
        state = codebook_state(means, bins)
        for name in ("embed_avg", "cluster_size", "initted"):      # embed follows from them, as in init_embed_
            getattr(codebook, name).data.copy_(state[name])
        codebook.update_ema()
        self.seen, self._initted = self._total, True
