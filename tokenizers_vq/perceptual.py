"""LPIPS perceptual distance on a VGG16 built in plain torch, from local weights only.

Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018.  Features at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 are
unit-normalised over channels; the squared differences are weighted per channel (the learned
"lin" layers when given, else 1: the paper's uncalibrated baseline), summed over channels,
averaged over space and summed over layers.

Nothing is downloaded.  `vgg_weights` is a local VGG16 state dict in torchvision's layout
(`features.0.weight`, ... as in vgg16-397923af.pth; `classifier.*` is ignored), as .safetensors
or .pth (read with `weights_only=True`, so no code runs).  `lpips_weights` is optional: the lpips
package's `weights/v0.1/vgg.pth` (`lin0.model.1.weight`, ...).

Where the files are looked for when no path is given (`find_vgg16_weights`, `find_lpips_weights`),
as `eval.features` finds FID's Inception: an environment variable (TOKGEN_VGG16_WEIGHTS,
TOKGEN_LPIPS_WEIGHTS), then the torch hub cache (`torch.hub.get_dir()/checkpoints` and
`~/.cache/torch/hub/checkpoints`, where torchvision's `vgg16(weights=...)` puts
vgg16-397923af.pth), and for vgg.pth the installed lpips package's own copy.  Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor, nn

# torchvision's vgg16().features: numbers are conv widths, "M" a 2x2 max-pool.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)          # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_TAP_CHANNELS = (64, 128, 256, 512, 512)


VGG16_FILENAME = "vgg16-397923af.pth"        # torchvision's VGG16 (IMAGENET1K_V1), 528 MB
VGG16_URL = "https://download.pytorch.org/models/" + VGG16_FILENAME
VGG16_ENV = "TOKGEN_VGG16_WEIGHTS"
LPIPS_FILENAME = "vgg.pth"                   # lpips' weights/v0.1/vgg.pth (taming's / LlamaGen's "vgg_lpips"), 7 KB
LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
LPIPS_ENV = "TOKGEN_LPIPS_WEIGHTS"


class PerceptualWeightsMissing(FileNotFoundError):
    """The perceptual loss is required but its weights are not on this machine."""


def hub_checkpoint_dirs() -> list[Path]:
    """The torch hub caches looked in: `torch.hub.get_dir()/checkpoints` (honours $TORCH_HOME) and
    the default `~/.cache/torch/hub/checkpoints`, without repeats."""
    dirs = [Path(torch.hub.get_dir()) / "checkpoints", Path.home() / ".cache" / "torch" / "hub" / "checkpoints"]
    return list(dict.fromkeys(dirs))


def _lookup(env: str, names: list[Path]) -> tuple[Path | None, list[str]]:
    """The first existing file of $env (if set) and `names`, and every place looked at."""
    looked = []
    value = os.environ.get(env)
    if value:
        if Path(value).is_file():
            return Path(value), looked
        looked.append(f"{value} (from ${env}): no such file")
    else:
        looked.append(f"${env} (not set)")
    for path in names:
        if path.is_file():
            return path, looked
        looked.append(f"{path}: no such file")
    return None, looked


def find_vgg16_weights() -> tuple[Path | None, list[str]]:
    """(torchvision's VGG16 file or None, the places looked at): $TOKGEN_VGG16_WEIGHTS, then the
    torch hub caches (`hub_checkpoint_dirs`)."""
    return _lookup(VGG16_ENV, [d / VGG16_FILENAME for d in hub_checkpoint_dirs()])


def find_lpips_weights() -> tuple[Path | None, list[str]]:
    """(LPIPS' linear-layer file vgg.pth or None, the places looked at): $TOKGEN_LPIPS_WEIGHTS, the
    torch hub caches, then the copy inside an installed lpips package (found without importing it)."""
    names = [d / LPIPS_FILENAME for d in hub_checkpoint_dirs()]
    packaged = lpips_package_file()
    return _lookup(LPIPS_ENV, names + ([packaged] if packaged else []))


def lpips_package_file() -> Path | None:
    """Where an installed lpips package keeps vgg.pth (found without importing lpips), or None."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "weights" / "v0.1" / LPIPS_FILENAME


def missing_weights_message(missing: dict[str, list[str]]) -> str:
    """The refusal when a required perceptual loss lacks files: what, where it looked, how to fix."""
    what = {"vgg16": (f"torchvision's VGG16 ({VGG16_FILENAME}, 528 MB)", VGG16_URL, VGG16_ENV,
                      "perceptual_weights", VGG16_FILENAME),
            "lpips": (f"LPIPS' calibrated linear layers ({LPIPS_FILENAME}, 7 KB; also inside `pip install lpips`)",
                      LPIPS_URL, LPIPS_ENV, "lpips_weights", LPIPS_FILENAME)}
    lines = ["this tokenizer preset trains with the perceptual (LPIPS) loss, as its recipe does, but its "
             "weights are not on this machine; nothing is downloaded at run time."]
    for key, looked in missing.items():
        desc, url, env, field, name = what[key]
        lines.append(f"Missing {desc}. Looked for:")
        lines += [f"  - {place}" for place in looked]
        lines.append(f"  Fix: on a machine with internet download {url} and copy it to "
                     f"{hub_checkpoint_dirs()[0] / name}, or set {env}=PATH, or pass "
                     f"--loss-set {field}=PATH (LossConfig.{field}).")
    lines.append("To train without the perceptual loss instead, pass --loss-set perceptual_weight=0 "
                 "(LossConfig(perceptual_weight=0.0)).")
    return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"perceptual-loss weights {path} not found: give the path of a local file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class VGG16Features(nn.Module):
    """torchvision-compatible `features` stack, returning the five LPIPS taps."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(width, item, 3, padding=1), nn.ReLU()]
                width = item
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                taps.append(x)
        return taps


class LPIPS(nn.Module):
    """`LPIPS(vgg_weights, lpips_weights=None)(x, y) -> (B,)` for images in [0, 1]."""

    def __init__(self, vgg_weights: str | Path, lpips_weights: str | Path | None = None):
        super().__init__()
        self.net = VGG16Features()
        state = read_state_dict(vgg_weights)
        if not any(k.startswith("features.") for k in state):  # a bare `features` state dict
            state = {f"features.{k}": v for k, v in state.items()}
        state = {k: v for k, v in state.items() if k.startswith("features.")}
        _load_named(self.net, state, str(vgg_weights))
        lin = torch.ones(sum(_TAP_CHANNELS))
        if lpips_weights is not None:
            lstate = read_state_dict(lpips_weights)
            keys = [f"lin{i}.model.1.weight" for i in range(len(_TAPS))]
            absent = [k for k in keys if k not in lstate]
            if absent:
                raise ValueError(f"{lpips_weights} lacks the LPIPS linear weights {absent}: expected "
                                 f"the lpips package's weights/v0.1/vgg.pth")
            lin = torch.cat([lstate[k].reshape(-1).float() for k in keys])
        self.register_buffer("lin", lin, persistent=False)
        # LPIPS' ScalingLayer: inputs in [-1, 1] shifted and scaled to ImageNet statistics.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)  # a frozen metric: always eval

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        both = torch.cat([x, y]) * 2 - 1
        feats = self.net((both - self.shift) / self.scale)
        dist, offset = 0.0, 0
        for f, c in zip(feats, _TAP_CHANNELS):
            f = f.float()
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            fx, fy = f.chunk(2)
            w = self.lin[offset: offset + c].view(1, c, 1, 1)
            dist = dist + ((fx - fy).pow(2) * w).sum(dim=1).mean(dim=(1, 2))  # (B,)
            offset += c
        return dist


def _load_named(module: nn.Module, state: dict[str, Tensor], source: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    misshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or misshaped:
        raise ValueError(f"{source} is not a torchvision VGG16 state dict: missing {missing}, "
                         f"mis-shaped {misshaped}")
    module.load_state_dict({k: state[k].float() for k in own}, strict=True)
