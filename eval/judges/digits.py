"""Digits judge: a tiny CNN trained on the real digits' train split reads generated digits back.

Every input goes through the same path the classifier was trained on: RGB -> grey (channel
mean) -> 8x8 by area averaging (the digits' native resolution, so 16 and 32 px images are judged
by the same network) -> CNN.  The classifier is trained once per process and config, on the
train split of `tokgen.data.digits` at all three sizes pooled (8, 16->8, 32->8), with small
sub-pixel shifts and pixel noise so that it is not thrown by the blur and grain of generated
images.  Training is deterministic (its own seed, global RNG untouched) and takes a few seconds
on one CPU core.

`features()` returns the 64 pre-activation units of the penultimate layer, the digits analogue
of the Inception pool features used for FID.

Reproduce the reported test accuracy: `python -m tokgen.eval.judges.digits` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tokgen.data.digits import IMAGE_SIZES, NUM_CLASSES, DigitsDataset


@dataclass(frozen=True)
class DigitsJudgeConfig:
    seed: int = 0  # split seed of DigitsDataset (the judge sees only its train split) and init seed
    width: int = 16  # channels of the first conv; later layers use 2 * width
    feature_dim: int = 64  # size of the feature vector returned by features()
    steps: int = 800  # AdamW steps with a one-cycle learning-rate schedule
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    max_shift: float = 0.5  # largest random translation during training, in 8x8 pixels
    noise_std: float = 0.03  # std of Gaussian pixel noise added during training


class DigitsNet(nn.Module):
    """(B, 1, 8, 8) grey digits -> (logits (B, 10), features (B, feature_dim))."""

    def __init__(self, width: int = 16, feature_dim: int = 64):
        super().__init__()
        w = width
        self.trunk = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 2w, 4, 4)
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 2w, 2, 2)
            nn.Flatten(),  # (B, 8w)
            nn.Linear(8 * w, feature_dim),
        )
        self.head = nn.Linear(feature_dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.trunk(x)  # pre-activation: Gaussian-like, no dead (all-zero) dimensions
        return self.head(F.relu(feats)), feats


def to_judge_input(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) RGB in [0, 1] -> (B, 1, 8, 8) grey by channel mean and area averaging."""
    grey = images.float().mean(dim=1, keepdim=True)  # (B, 1, S, S)
    return F.adaptive_avg_pool2d(grey, 8) if grey.shape[-1] != 8 else grey


def _random_shift(x: torch.Tensor, max_shift: float, g: torch.Generator) -> torch.Tensor:
    """Translate each image by up to max_shift pixels (bilinear, zero fill)."""
    B, _, _, W = x.shape
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = (torch.rand(B, 2, generator=g) * 2 - 1) * (2 * max_shift / W)  # grid units
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def _training_set(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for size in IMAGE_SIZES:
        ds = DigitsDataset("train", image_size=size, seed=seed)
        xs.append(to_judge_input(ds.images))
        ys.append(ds.labels)
    return torch.cat(xs), torch.cat(ys)  # (3 * N_train, 1, 8, 8), (3 * N_train,)


def train_digits_classifier(config: DigitsJudgeConfig = DigitsJudgeConfig()) -> DigitsNet:
    """Train a DigitsNet on the train split only; deterministic for a given config.

    Runs on one CPU thread (restored afterwards): the network is tiny, so more threads only add
    overhead and contention, and one thread makes the weights independent of the caller's
    thread count (they can still differ between torch versions).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(config)
    finally:
        torch.set_num_threads(threads)


def _train(config: DigitsJudgeConfig) -> DigitsNet:
    x, y = _training_set(config.seed)
    g = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(config.seed)
        net = DigitsNet(config.width, config.feature_dim)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps)
    net.train()
    for _ in range(config.steps):
        idx = torch.randint(len(x), (config.batch_size,), generator=g)
        xb = _random_shift(x[idx], config.max_shift, g)
        xb = xb + config.noise_std * torch.randn(xb.shape, generator=g)
        loss = F.cross_entropy(net(xb)[0], y[idx], label_smoothing=config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval().requires_grad_(False)
    return net


_CLASSIFIERS: dict[DigitsJudgeConfig, DigitsNet] = {}


def get_digits_classifier(config: DigitsJudgeConfig = DigitsJudgeConfig()) -> DigitsNet:
    """The trained classifier for `config`, trained on first use and cached for the process."""
    if config not in _CLASSIFIERS:
        _CLASSIFIERS[config] = train_digits_classifier(config)
    return _CLASSIFIERS[config]


class DigitsJudge:
    """Reads (B, 3, S, S) digit images in [0, 1] back into labels and feature vectors.

    judge = DigitsJudge(image_size=32)
    judge.score(images, labels)  # {"accuracy": 0.97}
    judge.features(images)       # (B, 64), for Frechet distances
    """

    condition = "label"  # what score() compares images with (CONTRIBUTING.md, Judges)
    headline = "accuracy"  # the one figure of score() that sums a sample set up (a report's quality axis)

    @staticmethod
    def targets(captions, labels):
        """What score() compares images with, out of their items' captions and labels."""
        return labels

    def __init__(self, image_size: int = 32, seed: int = 0, config: DigitsJudgeConfig | None = None):
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {IMAGE_SIZES} for the digits judge, got {image_size!r}")
        if config is not None and config.seed != seed:
            raise ValueError(f"seed={seed} disagrees with config.seed={config.seed}: pass one of them")
        self.image_size = image_size
        self.config = config if config is not None else DigitsJudgeConfig(seed=seed)
        self.net = get_digits_classifier(self.config)
        self._on_device: dict[torch.device, DigitsNet] = {torch.device("cpu"): self.net}

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def _net_for(self, device: torch.device) -> DigitsNet:
        if device not in self._on_device:
            self._on_device[device] = DigitsNet(self.config.width, self.config.feature_dim).to(device)
            self._on_device[device].load_state_dict(self.net.state_dict())
            self._on_device[device].eval().requires_grad_(False)
        return self._on_device[device]

    def _check_images(self, images: torch.Tensor) -> None:
        s = self.image_size
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of images, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != (s, s):
            grey = images.ndim == 4 and images.shape[1] == 1
            hint = " convert grey images to RGB with x.repeat(1, 3, 1, 1);" if grey else ""
            raise ValueError(
                f"expected images of shape (B, 3, {s}, {s}), got {tuple(images.shape)}:{hint} "
                f"build the judge with DigitsJudge(image_size=...) matching your images"
            )
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}: divide uint8 images by 255")
        if images.shape[0] == 0:
            raise ValueError("expected at least one image, got an empty batch")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or inf")
        lo, hi = images.min().item(), images.max().item()
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"expected values in [0, 1], got [{lo:.4g}, {hi:.4g}]: "
                             f"clamp with x.clamp(0, 1) (or map [-1, 1] to [0, 1] with (x + 1) / 2)")

    @torch.no_grad()
    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_images(images)
        return self._net_for(images.device)(to_judge_input(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 10) class logits, on the images' device."""
        return self._forward(images)[0]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) LongTensor of predicted digits, on the images' device."""
        return self.logits(images).argmax(dim=1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) float32 features, on the images' device; deterministic."""
        return self._forward(images)[1].float()

    def score(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> dict[str, float]:
        """{"accuracy": share of images classified as their label}."""
        labels = _check_labels(labels, len(images) if isinstance(images, torch.Tensor) else None)
        pred = self.predict(images).cpu()
        return {"accuracy": (pred == labels).float().mean().item()}


def _check_labels(labels, batch: int | None) -> torch.Tensor:
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError) as e:
        raise ValueError(f"labels must be a sequence of ints 0..9, got {type(labels).__name__}: {e}") from None
    if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, "
                         f"got dtype {labels.dtype} and shape {tuple(labels.shape)}")
    if batch is not None and len(labels) != batch:
        raise ValueError(f"got {batch} images but {len(labels)} labels: pass one label per image")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be digits 0..9, got values in [{labels.min().item()}, {labels.max().item()}]")
    return labels.long().cpu()


def measure(seed: int = 0) -> dict:
    """Train the judge (timed) and report its accuracy on the val and test splits at every size."""
    config = DigitsJudgeConfig(seed=seed)
    t0 = time.perf_counter()
    _CLASSIFIERS[config] = train_digits_classifier(config)  # timed fresh, then reused below
    train_seconds = time.perf_counter() - t0
    result = {"config": asdict(config), "train_seconds": round(train_seconds, 2), "accuracy": {}}
    for size in IMAGE_SIZES:
        judge = DigitsJudge(image_size=size, config=config)
        result["accuracy"][str(size)] = {
            split: round(judge.score(ds.images, ds.labels)["accuracy"], 4)
            for split in ("val", "test")
            for ds in [DigitsDataset(split, image_size=size, seed=seed)]
        }
    return result


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.seed), indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train the digits judge and print its held-out accuracy as JSON.")
    parser.add_argument("--seed", type=int, default=0, help="split and training seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    main(parser.parse_args())
