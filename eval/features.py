"""Feature spaces for the distribution metrics of `eval.metrics` (FD, KID, precision/recall, IS).

A feature extractor maps images (B, 3, H, W) in [0, 1] to a (B, dim) float32 tensor:

- `JudgeFeatures`: the embedded judges' own features (`eval.judges`), always available offline;
- `InceptionV3FID`: the Inception-v3 of FID (Heusel et al. 2017; Szegedy et al., "Rethinking the
  Inception Architecture for Computer Vision", CVPR 2016), built here with the parameter names of
  pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (TensorFlow's 2015-12-05 graph ported to
  PyTorch), so that file loads into it and FID values compare with published ones.  It never
  downloads: the weights are read from a local file.

    extractor = feature_extractor("inception")            # or "shapes-judge", "digits-judge"
    feats = extract_features(extractor, images, batch_size=64, progress=True)   # (N, 2048) numpy
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm


@runtime_checkable
class FeatureExtractor(Protocol):
    """Images (B, 3, H, W) in [0, 1] -> features (B, dim) float32."""

    name: str
    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def _batches(images_or_iterable, batch_size: int):
    """Yield image tensors of at most `batch_size` from a tensor or an iterable of batches
    (tensors, or dataset-item dicts with an "image" entry, as a DataLoader gives)."""
    source = [images_or_iterable] if isinstance(images_or_iterable, torch.Tensor) else images_or_iterable
    for item in source:
        images = item["image"] if isinstance(item, Mapping) else item
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            is_tensor = isinstance(images, torch.Tensor)
            shape = tuple(images.shape) if is_tensor else type(images).__name__
            hint = ": add the batch dimension with x.unsqueeze(0)" if is_tensor and images.ndim == 3 else ""
            raise ValueError(f"expected image batches (B, 3, H, W), got {shape}{hint}")
        yield from images.split(batch_size)


def extract_features(extractor: FeatureExtractor, images_or_iterable, batch_size: int = 64,
                     device: torch.device | str | None = None, progress: bool = False) -> np.ndarray:
    """Features (N, extractor.dim) float32 of every image, computed `batch_size` at a time under
    no_grad.  `images_or_iterable`: one (N, 3, H, W) tensor, or an iterable of such batches or of
    dicts with an "image" batch.  Batches go to `device` (default: the extractor's parameters'
    device when it is a module, else where they are)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None and isinstance(extractor, nn.Module):
        device = next(extractor.parameters(), torch.empty(0)).device
    total = len(images_or_iterable) if isinstance(images_or_iterable, torch.Tensor) else None
    bar = tqdm(total=total, unit="img", desc=f"features ({extractor.name})", disable=not progress)
    out = []
    with torch.no_grad(), bar:
        for images in _batches(images_or_iterable, batch_size):
            feats = extractor(images if device is None else images.to(device))
            if tuple(feats.shape) != (len(images), extractor.dim):
                raise ValueError(f"extractor {extractor.name!r} returned {tuple(feats.shape)} for "
                                 f"{len(images)} images, expected ({len(images)}, {extractor.dim})")
            out.append(feats.detach().float().cpu().numpy())
            bar.update(len(images))
    if not out:
        raise ValueError("no images to extract features from: the input is empty")
    return np.concatenate(out)


# ----------------------------------------------------------------------------------- judges
class JudgeFeatures:
    """A judge's `.features(images)` (CONTRIBUTING.md, Judges) as a feature extractor; the judge
    checks the images (size, range) itself."""

    def __init__(self, judge, name: str | None = None):
        if not callable(getattr(judge, "features", None)):
            raise ValueError(f"{type(judge).__name__} has no .features(images) method: pass a judge "
                             f"from eval.judges")
        self.judge = judge
        # ShapesJudge -> "shapes-judge", as named in feature_extractor()
        self.name = name or type(judge).__name__.lower().replace("judge", "-judge")
        self.dim = int(judge.feature_dim)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.judge.features(images).float()

    def __repr__(self) -> str:
        return f"JudgeFeatures({self.name}, dim={self.dim})"


# ----------------------------------------------------------------------------------- Inception weights
WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILENAME
WEIGHTS_ENV = "TOKGEN_INCEPTION_WEIGHTS"
# torch hub convention: the hash suffix of the file name is the start of the file's sha256
WEIGHTS_SHA256_PREFIX = "6726825d"


class InceptionWeightsMissing(FileNotFoundError):
    """The FID Inception weights file is not on this machine."""


class InceptionWeightsError(ValueError):
    """The weights file is there but is not the FID Inception state dict."""


def hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def _missing(looked: list[str]) -> InceptionWeightsMissing:
    places = "\n".join(f"  - {p}" for p in looked)
    return InceptionWeightsMissing(
        f"FID Inception-v3 weights not found. Needed: {WEIGHTS_FILENAME} (about 95 MB; pytorch-fid's "
        f"port of TensorFlow's 2015-12-05 Inception). Looked for:\n{places}\n"
        f"Nothing is downloaded at run time: on a machine with internet, download\n  {WEIGHTS_URL}\n"
        f"then pass its path (InceptionV3FID(weights=PATH)), set {WEIGHTS_ENV}=PATH, or copy it to "
        f"{hub_weights_path()}. For tests, InceptionV3FID(random_init=True) needs no file.")


def find_inception_weights(weights: str | os.PathLike | None = None) -> Path:
    """The weights file: `weights` if given, else ${TOKGEN_INCEPTION_WEIGHTS}, else the torch hub
    cache.  A path that is named but absent is an error, never skipped for the next place."""
    if weights is not None:
        if not Path(weights).is_file():
            raise _missing([f"{weights} (the path you passed): no such file"])
        return Path(weights)
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        if not Path(env).is_file():
            raise _missing([f"{env} (from ${WEIGHTS_ENV}): no such file"])
        return Path(env)
    if hub_weights_path().is_file():
        return hub_weights_path()
    raise _missing([f"${WEIGHTS_ENV} (not set)", f"{hub_weights_path()} (torch hub cache): no such file"])


def sha256_matches(path: str | os.PathLike, prefix: str = WEIGHTS_SHA256_PREFIX) -> bool:
    """Whether the file's sha256 starts with `prefix` (reads the whole file: about 1 s per 100 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest().startswith(prefix.lower())


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch pickle, loaded with weights_only=True."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated download, an HTML error page, a full checkpoint object
        raise InceptionWeightsError(f"could not read {path} as a state dict ({type(e).__name__}: {e}); "
                                    f"download it again from {WEIGHTS_URL}") from e
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InceptionWeightsError(f"{path} holds a {type(sd).__name__}, not a state dict of tensors; "
                                    f"expected {WEIGHTS_FILENAME} from {WEIGHTS_URL}")
    return dict(sd)


def check_state_dict(sd: Mapping[str, torch.Tensor], model: nn.Module, source: str = "state dict") -> None:
    """Raise InceptionWeightsError naming missing, unexpected and mis-shaped keys, or non-finite
    values.  BatchNorm's `num_batches_tracked` is optional (the ported file predates it)."""
    want = model.state_dict()
    missing = [k for k in want if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in want]
    misshaped = [f"{k} {tuple(sd[k].shape)} (model: {tuple(want[k].shape)})"
                 for k in sd if k in want and sd[k].shape != want[k].shape]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            more = f", ... ({len(keys)} in all)" if len(keys) > 5 else ""
            problems.append(f"{what}: {', '.join(keys[:5])}{more}")
    if problems:
        raise InceptionWeightsError(f"{source} does not match the FID Inception-v3: " + "; ".join(problems)
                                    + f". Expected {WEIGHTS_FILENAME} from {WEIGHTS_URL}")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InceptionWeightsError(f"{source} has NaN or inf in {', '.join(bad[:5])}")


# ----------------------------------------------------------------------------------- Inception-v3 network
class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3, TensorFlow's) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _Mixed(nn.Module):
    """An Inception block: named branches of BasicConv2d, concatenated along channels."""

    def _chain(self, x, *names):
        for n in names:
            x = getattr(self, n)(x)
        return x


def _avg_pool(x):
    # TensorFlow averages over the valid pixels only, so the padding is not counted (pytorch-fid's
    # "FID" patch of torchvision's blocks)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(_Mixed):  # 35x35 grid: 1x1, 5x5, double 3x3, pool
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self._chain(x, "branch5x5_1", "branch5x5_2"),
                          self._chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                          self.branch_pool(_avg_pool(x))], 1)


class InceptionB(_Mixed):  # 35x35 -> 17x17 reduction
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x),
                          self._chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(_Mixed):  # 17x17 grid: factorised 7x7 convolutions (1x7 then 7x1)
    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        dbl = [f"branch7x7dbl_{i}" for i in range(1, 6)]
        return torch.cat([self.branch1x1(x), self._chain(x, "branch7x7_1", "branch7x7_2", "branch7x7_3"),
                          self._chain(x, *dbl), self.branch_pool(_avg_pool(x))], 1)


class InceptionD(_Mixed):  # 17x17 -> 8x8 reduction
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        seven = [f"branch7x7x3_{i}" for i in range(1, 5)]
        return torch.cat([self._chain(x, "branch3x3_1", "branch3x3_2"), self._chain(x, *seven),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(_Mixed):  # 8x8 grid: 3x3 convolutions split into parallel 1x3 and 3x1
    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        b = self._chain(x, "branch3x3dbl_1", "branch3x3dbl_2")
        # the last block of the 2015 graph max-pools here (a quirk of that graph, kept for FID)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.pool == "max" else _avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(pooled)], 1)


class InceptionV3FID(nn.Module):
    """The FID Inception-v3: images (B, 3, H, W) in [0, 1] -> (B, 2048) pool features.

    As pytorch-fid: bilinear resize to 299x299 (no antialiasing), scale to [-1, 1], the 2015
    TensorFlow graph, global average pool.  `features_and_logits` adds the 1008-way logits for the
    Inception Score.  Frozen, always in eval mode.

    weights: path of the weights file (`pt_inception-2015-12-05-6726825d.pth` or a .safetensors
        with the same keys); None looks in ${TOKGEN_INCEPTION_WEIGHTS}, then the torch hub cache;
        `InceptionWeightsMissing` says what to download when it is nowhere.
    random_init: random weights from `seed` instead of a file (tests; the features mean nothing).
    verify_sha256: also check the file's sha256 against `WEIGHTS_SHA256_PREFIX` (about 1 s).
    """

    name = "inception"
    dim = 2048
    num_classes = 1008  # the 2015 graph's 1,000 ImageNet classes plus 8 unused outputs
    input_size = 299

    def __init__(self, weights: str | os.PathLike | None = None, *, random_init: bool = False,
                 seed: int = 0, verify_sha256: bool = False):
        super().__init__()
        if random_init and weights is not None:
            raise ValueError("pass either weights=PATH or random_init=True, not both")
        # built on the meta device: no memory or time spent on an init that is overwritten next,
        # and the caller's global RNG is left untouched
        with torch.device("meta"):
            self._build()
        self.to_empty(device="cpu")
        if random_init:
            self._random_init(seed)
        else:
            path = find_inception_weights(weights)
            if verify_sha256 and not sha256_matches(path):
                raise InceptionWeightsError(f"{path}: sha256 does not start with {WEIGHTS_SHA256_PREFIX}; "
                                            f"download it again from {WEIGHTS_URL}")
            sd = load_state_dict_file(path)
            check_state_dict(sd, self, source=str(path))
            self._reset_buffers()  # num_batches_tracked, which the file may lack
            self.load_state_dict(sd, strict=False)  # every other key was checked above
        self.requires_grad_(False)
        self.train(False)

    def _build(self):
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)  # 299 -> 149
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)  # -> 147
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)  # -> 147, then max pool -> 73
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)  # -> 71, then max pool -> 35
        self.Mixed_5b = InceptionA(192, pool_features=32)  # (B, 256, 35, 35)
        self.Mixed_5c = InceptionA(256, pool_features=64)  # 288
        self.Mixed_5d = InceptionA(288, pool_features=64)  # 288
        self.Mixed_6a = InceptionB(288)  # (B, 768, 17, 17)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)  # (B, 1280, 8, 8)
        self.Mixed_7b = InceptionE(1280, pool="avg")  # (B, 2048, 8, 8)
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, self.num_classes)

    def _reset_buffers(self):
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()  # mean 0, var 1, num_batches_tracked 0

    def _random_init(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self._reset_buffers()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init keeps the activations' scale through the 94 ReLU layers
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, std=self.dim ** -0.5, generator=g)
        nn.init.zeros_(self.fc.bias)

    def train(self, mode: bool = True):
        # BatchNorm must keep the ported running statistics: never leave eval mode
        return super().train(False)

    def _check(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            hint = ": convert grey images to RGB with x.repeat(1, 3, 1, 1)" if (
                isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 1) else ""
            raise ValueError(f"expected images of shape (B, 3, H, W), got {shape}{hint}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got {images.dtype}: "
                             f"divide uint8 images by 255")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or inf")
        lo, hi = images.min().item(), images.max().item()
        if lo < 0 or hi > 1:
            raise ValueError(f"expected values in [0, 1], got [{lo:.4g}, {hi:.4g}]: map [-1, 1] outputs "
                             f"with (x + 1) / 2, then clamp(0, 1)")

    def _pool(self, images: torch.Tensor) -> torch.Tensor:
        self._check(images)
        x = images.to(self.fc.weight)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # the graph's input range
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)  # (B, 192, 35, 35)
        for block in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{block}")(x)
        return x.mean(dim=(2, 3))  # (B, 2048)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 2048) float32 pool features (FID, KID, precision/recall)."""
        return self._pool(images).float()

    def features_and_logits(self, images: torch.Tensor, fc_bias: bool = False):
        """((B, 2048) pool features, (B, 1008) logits), float32.  Without `fc_bias` the logits are
        the original Inception Score code's (pool @ W, no bias; torch-fidelity's "logits_unbiased")."""
        pool = self._pool(images)
        logits = F.linear(pool, self.fc.weight, self.fc.bias if fc_bias else None)
        return pool.float(), logits.float()


# ----------------------------------------------------------------------------------- factory
def _judge(kind: str):
    def make(**kw) -> JudgeFeatures:
        from .judges import digits, shapes

        judge = shapes.ShapesJudge(**kw) if kind == "shapes" else digits.DigitsJudge(**kw)
        return JudgeFeatures(judge, name=f"{kind}-judge")

    return make


FEATURE_EXTRACTORS = {
    "inception": InceptionV3FID,
    "shapes-judge": _judge("shapes"),
    "digits-judge": _judge("digits"),
}


def feature_extractor(name: str, **kw) -> FeatureExtractor:
    """Build a feature extractor by name; `kw` go to its constructor (InceptionV3FID, ShapesJudge,
    DigitsJudge: image_size=...)."""
    if name not in FEATURE_EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {sorted(FEATURE_EXTRACTORS)}")
    return FEATURE_EXTRACTORS[name](**kw)
