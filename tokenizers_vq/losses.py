"""The tokenizer's training objective: VQGAN's loss.

Esser, Rombach, Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021:
L1 (or L2) reconstruction + perceptual (LPIPS) + the quantizer's own terms + an adversarial term
from a PatchGAN with hinge loss, switched on at `disc_start`, weighted by the adaptive
lambda = ||grad_GL L_rec|| / (||grad_GL L_GAN|| + 1e-4) on the decoder's last layer GL, clamped.

LlamaGen's variant (its vq_loss.py, what the ImageNet presets use): no adaptive lambda
(`adaptive_disc_weight=False`: the adversarial term is weighted by `disc_weight` alone) and the
discriminator's hinge loss weighted too (`disc_loss_weight`).

`TokenizerLoss(config)(images, autoencoder, discriminator, step)` returns
`(loss_autoencoder, loss_discriminator, logs)`, the logs detached 0-dim tensors left on the
device (no host sync per step).  The perceptual loss's weights: `perceptual_weights` /
`lpips_weights`, or with `require_perceptual` the torch hub cache (`resolve_perceptual_weights`),
or a refusal that says where it looked.  The two losses touch disjoint parameters:
- the adversarial term calls the discriminator functionally with detached parameters, so
  `loss_autoencoder.backward()` puts no gradient into the discriminator;
- the discriminator sees `recon.detach()`, so `loss_discriminator.backward()` puts none into
  the autoencoder.
A trainer backpropagates both (in either order) and steps two optimizers.  Before `disc_start`
(or with `disc_weight=0`) the discriminator loss is an exact zero still attached to every
discriminator parameter, so `backward()` and DDP work unchanged; `gan_active(step)` tells a
trainer that wants to skip that step.

    loss_fn = TokenizerLoss(get_tokenizer_preset("shapes-tiny").loss).to(device)
    disc = build_discriminator(loss_fn.config)
    for step, images in enumerate(loader):
        loss_ae, loss_d, logs = loss_fn(images, tokenizer, disc, step)
        opt_ae.zero_grad(); loss_ae.backward(); opt_ae.step()
        opt_d.zero_grad(); loss_d.backward(); opt_d.step()
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .discriminator import PatchDiscriminator
from .perceptual import (LPIPS, PerceptualWeightsMissing, find_lpips_weights, find_vgg16_weights,
                         missing_weights_message)


@dataclass(frozen=True)
class LossConfig:
    reconstruction: str = "l1"             # "l1" | "l2" pixel loss
    reconstruction_weight: float = 1.0
    perceptual_weight: float = 1.0         # LPIPS weight; 0 = no perceptual loss
    perceptual_weights: str | None = None  # local torchvision VGG16 state dict (.pth / .safetensors)
    lpips_weights: str | None = None       # local LPIPS linear weights (lpips' vgg.pth)
    # True (the ImageNet presets): the perceptual loss is part of the recipe. Weights not given are
    # looked up in the torch hub cache (perceptual.find_vgg16_weights / find_lpips_weights), and
    # without them the loss refuses to build, naming where it looked (perceptual_weight=0 opts out).
    # False: without perceptual_weights the perceptual loss is off, with one warning (nothing looked up).
    require_perceptual: bool = False
    quantizer_weight: float = 1.0          # weight of the quantizer's commitment / codebook / aux terms
    disc_weight: float = 0.8               # weight of the adversarial term (times the adaptive lambda when on)
    disc_start: int = 10_000               # step at which the GAN switches on (generator and discriminator)
    adaptive_disc_weight: bool = True      # VQGAN's adaptive lambda on the GAN term; False: lambda = 1 (LlamaGen)
    adaptive_weight_max: float = 1e4       # clamp of the adaptive lambda
    disc_loss_weight: float = 1.0          # weight of the discriminator's own hinge loss (LlamaGen: = disc_weight)
    disc_channels: int = 64                # PatchGAN base width
    disc_layers: int = 3                   # PatchGAN stride-2 steps (2 suits 32x32 images)

    def __post_init__(self) -> None:
        if self.reconstruction not in ("l1", "l2"):
            raise ValueError(f"LossConfig.reconstruction must be 'l1' or 'l2', got {self.reconstruction!r}")


def resolve_perceptual_weights(config: LossConfig) -> LossConfig:
    """`config` with the perceptual-loss files it will load filled in: unchanged unless
    `require_perceptual` (and perceptual_weight > 0); then the VGG16 and LPIPS files not given are
    looked up in the torch hub cache, and PerceptualWeightsMissing (a FileNotFoundError) is raised,
    naming every place looked at and the fixes, when one is not found.  Nothing is downloaded.
    Trainers call it before building data or models, so a run refuses at once."""
    if not (config.require_perceptual and config.perceptual_weight > 0):
        return config
    found, missing = {}, {}
    for key, field, find in (("vgg16", "perceptual_weights", find_vgg16_weights),
                             ("lpips", "lpips_weights", find_lpips_weights)):
        given = getattr(config, field)
        if given is not None:  # a named file must exist: read_state_dict says so if not
            continue
        path, looked = find()
        if path is None:
            missing[key] = looked
        else:
            found[field] = str(path)
    if missing:
        raise PerceptualWeightsMissing(missing_weights_message(missing))
    return dataclasses.replace(config, **found)


def __getattr__(name: str):
    # The loss presets live with their model and training settings now (presets.py).
    if name == "LOSS_PRESETS":
        from .presets import LOSS_PRESETS

        return LOSS_PRESETS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_discriminator(config: LossConfig, channels: int = 3) -> PatchDiscriminator:
    return PatchDiscriminator(channels, config.disc_channels, config.disc_layers)


def reconstruction_loss(recon: Tensor, target: Tensor, kind: str = "l1") -> Tensor:
    return F.l1_loss(recon, target) if kind == "l1" else F.mse_loss(recon, target)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    return -logits_fake.mean()


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """lambda = ||grad_GL rec_loss|| / (||grad_GL g_loss|| + 1e-4), clamped to [0, max_weight]."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / DataParallel (what Accelerate's `prepare` returns) and torch.compile."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


class TokenizerLoss(nn.Module):
    """VQGAN's objective; holds only the frozen perceptual network (move it with `.to(device)`)."""

    def __init__(self, config: LossConfig = LossConfig()):
        super().__init__()
        config = resolve_perceptual_weights(config)  # require_perceptual: the files, or a refusal
        self.config = config
        self.perceptual: LPIPS | None = None
        if config.perceptual_weight > 0 and config.perceptual_weights is None:
            warnings.warn(
                "perceptual (LPIPS) loss is off: no VGG16 weights given. To turn it on, set "
                "LossConfig(perceptual_weights='/path/to/vgg16.pth') with a local torchvision VGG16 "
                "state dict (e.g. vgg16-397923af.pth), and optionally lpips_weights='/path/to/vgg.pth' "
                "from the lpips package, or require_perceptual=True to find both in the torch hub "
                "cache; nothing is downloaded.",
                stacklevel=2,
            )
        elif config.perceptual_weight > 0:
            self.perceptual = LPIPS(config.perceptual_weights, config.lpips_weights)

    def gan_active(self, step: int) -> bool:
        return self.config.disc_weight > 0 and step >= self.config.disc_start

    def forward(
        self, images: Tensor, autoencoder: nn.Module, discriminator: nn.Module, step: int
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        cfg = self.config
        recon, qout = autoencoder(images)
        rec = reconstruction_loss(recon, images, cfg.reconstruction)
        nll = cfg.reconstruction_weight * rec
        mse = F.mse_loss(recon.detach().float().clamp(0, 1), images.float())
        logs: dict[str, Tensor] = {"loss/rec": rec.detach(), "loss/quantizer": qout.loss.detach(),
                                   "psnr": 10 * torch.log10(1.0 / mse.clamp_min(1e-10))}
        if self.perceptual is not None:
            perceptual = self.perceptual(recon, images).mean()
            nll = nll + cfg.perceptual_weight * perceptual
            logs["loss/perceptual"] = perceptual.detach()
        loss_ae = nll + cfg.quantizer_weight * qout.loss

        disc = unwrap(discriminator)
        if self.gan_active(step):
            frozen = {name: p.detach() for name, p in disc.named_parameters()}
            g_loss = hinge_g_loss(functional_call(disc, frozen, (recon,)))
            if not cfg.adaptive_disc_weight:  # LlamaGen: disc_weight alone
                d_weight = torch.ones((), device=images.device)
            elif torch.is_grad_enabled() and nll.requires_grad:
                d_weight = adaptive_weight(nll, g_loss, unwrap(autoencoder).last_layer, cfg.adaptive_weight_max)
            else:  # validation: no graph to measure gradients on
                d_weight = torch.zeros((), device=images.device)
            loss_ae = loss_ae + cfg.disc_weight * d_weight * g_loss
            logits = discriminator(torch.cat([images, recon.detach()]))
            logits_real, logits_fake = logits.chunk(2)
            loss_d = cfg.disc_loss_weight * hinge_d_loss(logits_real, logits_fake)
            logs.update({"loss/g": g_loss.detach(), "gan/d_weight": d_weight, "loss/d": loss_d.detach(),
                         "gan/logits_real": logits_real.detach().mean(),
                         "gan/logits_fake": logits_fake.detach().mean()})
        else:  # a zero through a (one-image) forward of the wrapper, so DDP sees a normal step
            loss_d = discriminator(images[:1]).mean() * 0.0
        logs["loss/autoencoder"] = loss_ae.detach()
        logs.update({f"quantizer/{k}": v for k, v in qout.stats.items()})
        # detached 0-dim tensors, left on the device: no host sync per step (the trainer averages
        # them on the device and reads them once per log interval); float() reads one
        return loss_ae, loss_d, logs
