"""The tokenizer's training objective: VQGAN's loss.

Esser, Rombach, Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021:
L1 (or L2) reconstruction + perceptual (LPIPS) + the quantizer's own terms + an adversarial term
from a PatchGAN with hinge loss, switched on at `disc_start`, weighted by the adaptive
lambda = ||grad_GL L_rec|| / (||grad_GL L_GAN|| + 1e-4) on the decoder's last layer GL, clamped.

`TokenizerLoss(config)(images, autoencoder, discriminator, step)` returns
`(loss_autoencoder, loss_discriminator, logs)`.  The two losses touch disjoint parameters:
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

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .discriminator import PatchDiscriminator
from .perceptual import LPIPS


@dataclass(frozen=True)
class LossConfig:
    reconstruction: str = "l1"             # "l1" | "l2" pixel loss
    reconstruction_weight: float = 1.0
    perceptual_weight: float = 1.0         # LPIPS weight; used only when perceptual_weights is given
    perceptual_weights: str | None = None  # local torchvision VGG16 state dict (.pth / .safetensors)
    lpips_weights: str | None = None       # optional local LPIPS linear weights (lpips' vgg.pth)
    quantizer_weight: float = 1.0          # weight of the quantizer's commitment / codebook / aux terms
    disc_weight: float = 0.8               # weight of the adversarial term (times the adaptive lambda)
    disc_start: int = 10_000               # step at which the GAN switches on (generator and discriminator)
    adaptive_weight_max: float = 1e4       # clamp of the adaptive lambda
    disc_channels: int = 64                # PatchGAN base width
    disc_layers: int = 3                   # PatchGAN stride-2 steps (2 suits 32x32 images)

    def __post_init__(self) -> None:
        if self.reconstruction not in ("l1", "l2"):
            raise ValueError(f"LossConfig.reconstruction must be 'l1' or 'l2', got {self.reconstruction!r}")


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
        self.config = config
        self.perceptual: LPIPS | None = None
        if config.perceptual_weight > 0 and config.perceptual_weights is None:
            warnings.warn(
                "perceptual (LPIPS) loss is off: no VGG16 weights given. To turn it on, set "
                "LossConfig(perceptual_weights='/path/to/vgg16.pth') with a local torchvision VGG16 "
                "state dict (e.g. vgg16-397923af.pth), and optionally lpips_weights='/path/to/vgg.pth' "
                "from the lpips package; nothing is downloaded.",
                stacklevel=2,
            )
        elif config.perceptual_weight > 0:
            self.perceptual = LPIPS(config.perceptual_weights, config.lpips_weights)

    def gan_active(self, step: int) -> bool:
        return self.config.disc_weight > 0 and step >= self.config.disc_start

    def forward(
        self, images: Tensor, autoencoder: nn.Module, discriminator: nn.Module, step: int
    ) -> tuple[Tensor, Tensor, dict[str, float]]:
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
            if torch.is_grad_enabled() and nll.requires_grad:
                d_weight = adaptive_weight(nll, g_loss, unwrap(autoencoder).last_layer, cfg.adaptive_weight_max)
            else:  # validation: no graph to measure gradients on
                d_weight = torch.zeros((), device=images.device)
            loss_ae = loss_ae + cfg.disc_weight * d_weight * g_loss
            logits = discriminator(torch.cat([images, recon.detach()]))
            logits_real, logits_fake = logits.chunk(2)
            loss_d = hinge_d_loss(logits_real, logits_fake)
            logs.update({"loss/g": g_loss.detach(), "gan/d_weight": d_weight, "loss/d": loss_d.detach(),
                         "gan/logits_real": logits_real.detach().mean(),
                         "gan/logits_fake": logits_fake.detach().mean()})
        else:  # a zero through a (one-image) forward of the wrapper, so DDP sees a normal step
            loss_d = discriminator(images[:1]).mean() * 0.0
        logs["loss/autoencoder"] = loss_ae.detach()
        logs.update({f"quantizer/{k}": v for k, v in qout.stats.items()})
        values = torch.stack([v.float().reshape(()) for v in logs.values()]).tolist()  # one sync
        return loss_ae, loss_d, dict(zip(logs, values))
