"""The distributed evaluation's test helper, and the script its multi-process test launches.

    accelerate launch --multi_gpu --num_processes 2 tests/_eval_worker.py OUT_FILE

evaluates a tiny random class-conditional MaskGIT (samples: judged, featurized, measured against
fixed real features; uneven shares of the batches) and a tiny D3PM's ELBO and AR's exact NLL,
every process its share (`EvalConfig.distributed`); the main process pickles the figures to
OUT_FILE, the others check that they got None.  The test calls `figures()` in its own (single)
process and compares.
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (n, batch_size, keep): 5 batches (3 on process 0, 2 on process 1; the last one short), and a
# single batch (process 1 draws nothing)
CASES = ((36, 8, 10), (6, 8, 4))


class BrightnessJudge:
    """Right when an image's mean brightness is above label / 4; per-channel shares too."""

    condition, headline = "label", "accuracy"

    def targets(self, captions, labels):
        return [int(y) for y in labels]

    def score(self, images, targets):
        t = torch.as_tensor(targets, dtype=torch.float32) / 4
        return {"accuracy": (images.mean(dim=(1, 2, 3)) > t).float().mean().item(),
                "red": (images[:, 0].mean(dim=(1, 2)) > t).float().mean().item()}


class PooledFeatures:
    """Each image as its 4x4-pooled pixels (48-d)."""

    name, dim = "pooled", 48

    def __call__(self, images):
        return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)


def tiny_tokenizer():
    from tokgen.tokenizers_vq import VQTokenizer, get_preset

    torch.manual_seed(0)
    settings = dict(base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2), scales=(1, 2, 4), codebook_size=32,
                    kmeans_init=False)
    return VQTokenizer(get_preset("shapes-tiny-msvq", **settings)).eval()


def tiny_generator(family: str, tokenizer, **extra):
    from tokgen.generators import build_generator

    torch.manual_seed(1)
    generator = build_generator(family, tokenizer.spec, dict(width=32, depth=1, heads=4, num_classes=4, **extra)).eval()
    generator.attach_tokenizer(tokenizer)
    return generator


class TinySplit:
    """What the evaluation reads of a TokenDataset: labels, captions and random token maps."""

    source, dataset_options = "toy", {}

    def __init__(self, spec, n: int = 40):
        g = torch.Generator().manual_seed(2)
        self.scales = [torch.randint(0, spec.codebook_size, (n, s, s), generator=g) for s in spec.scales]
        self.labels, self.captions = torch.arange(n) % 4, [""] * n

    def __len__(self) -> int:
        return len(self.labels)


def figures() -> dict:
    """Every figure of the evaluation, as this process sees it (None on all but the main one)."""
    from tokgen.eval.compare import distribution_metrics
    from tokgen.pipeline import SampleConfig
    from tokgen.train.evaluation import EvalConfig, evaluate_generator, likelihood

    torch.set_num_threads(1)
    tokenizer = tiny_tokenizer()
    split = TinySplit(tokenizer.spec)
    real = np.random.RandomState(3).rand(40, PooledFeatures.dim).astype(np.float32)
    out = {}
    maskgit = tiny_generator("maskgit", tokenizer)
    for n, batch, keep in CASES:
        config = EvalConfig(n=n, seed=5, batch_size=batch, sampling=SampleConfig(steps=2), batchwise=True,
                            count_nfe=True, keep=keep, distributed=True)
        ev = evaluate_generator(maskgit, tokenizer, split, config, judge=BrightnessJudge(), extractor=PooledFeatures())
        if ev is None:
            out[("sample", n)] = None
            continue
        out[("sample", n)] = {"judge": ev.judge, "features": ev.features, "images": ev.images, "nfe": ev.nfe_per_image,
                              "seconds": ev.seconds_per_image, "processes": ev.processes,
                              "metrics": distribution_metrics(ev.features, real, seed=0, kid_subset=20, kid_subsets=5)}
    for family, extra in (("d3pm", {"timesteps": 4}), ("ar", {})):
        generator = tiny_generator(family, tokenizer, **extra)
        for n, batch, _ in CASES:
            out[("nll", family, n)] = likelihood(generator, split, n, seed=7, batch_size=batch, batchwise=True,
                                                 distributed=True)
    return out


def main(out_file: str) -> None:
    from tokgen.train.distributed import is_main_process

    out = figures()
    if is_main_process():
        Path(out_file).write_bytes(pickle.dumps(out))
    else:
        assert all(v is None for k, v in out.items() if k[0] == "sample"), out
        assert all(v[0] is None for k, v in out.items() if k[0] == "nll"), out


if __name__ == "__main__":
    main(sys.argv[1])
