"""Judge a tokenizer's reconstructions: PSNR, SSIM, codebook usage and perplexity per scale, and
the embedded judge (shapes attributes / digit class) read off the reconstructions."""
from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from .reconstruction import codebook_stats, psnr, ssim


@torch.no_grad()
def evaluate_tokenizer(tokenizer, dataset, judge=None, n: int = 2000, batch_size: int = 250,
                       device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Reconstruct the first `n` items of `dataset` and measure them against the originals.

    `judge` (optional) scores the reconstructions against each item's caption (shapes) or label
    (digits): the share of reconstructions that still show what the original showed.
    """
    n = min(n, len(dataset))
    was_training = tokenizer.training
    tokenizer.eval()
    spec = tokenizer.spec
    psnrs, ssims, recons, captions, labels = [], [], [], [], []
    tokens_per_scale: list[list[torch.Tensor]] = [[] for _ in spec.scales]
    start = time.perf_counter()
    for lo in tqdm(range(0, n, batch_size), desc="reconstructing", disable=not progress, leave=False):
        items = [dataset[i] for i in range(lo, min(n, lo + batch_size))]
        images = torch.stack([it["image"] for it in items]).to(device)
        tokens = tokenizer.encode(images)
        recon = tokenizer.decode(tokens).float().clamp(0, 1)
        psnrs.append(psnr(recon, images).cpu())
        ssims.append(ssim(recon, images).cpu())
        for k, t in enumerate(tokens):
            tokens_per_scale[k].append(t.cpu())
        recons.append(recon.cpu())
        if judge is not None:
            captions += [it.get("caption") for it in items]
            labels += [int(it.get("label", -1)) for it in items]
    seconds = time.perf_counter() - start
    tokenizer.train(was_training)
    result = {
        "n": n,
        "psnr": torch.cat(psnrs).mean().item(),
        "ssim": torch.cat(ssims).mean().item(),
        "codebook_size": spec.codebook_size,
        "scales": {str(s): codebook_stats(torch.cat(ts), spec.codebook_size)
                   for s, ts in zip(spec.scales, tokens_per_scale)},
        "all_scales": codebook_stats(torch.cat([torch.cat(ts).flatten() for ts in tokens_per_scale]),
                                     spec.codebook_size),
        "images_per_second": n / seconds,
    }
    if judge is not None:
        result["judge"] = judge.score(torch.cat(recons), judge.targets(captions, torch.tensor(labels)))
    return result
