"""PatchGAN discriminator.

Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with Conditional Adversarial Networks"
(pix2pix), CVPR 2017, in the form VQGAN uses (taming's `NLayerDiscriminator`): 4x4 convs, stride 2
for `num_layers` steps, LeakyReLU(0.2), one logit per overlapping patch.

GroupNorm replaces BatchNorm: batch statistics would couple real and fake images in one forward,
need SyncBatchNorm under DDP, and be updated again by the generator's functional call.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> patch logits (B, 1, h, w)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for n in range(1, num_layers + 1):
            out = channels * min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [
                nn.Conv2d(width, out, 4, stride, 1, bias=False),
                nn.GroupNorm(math.gcd(32, out), out),
                nn.LeakyReLU(0.2),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images * 2 - 1)


def _init_weights(m: nn.Module) -> None:
    # As in pix2pix / taming: N(0, 0.02) convs, N(1, 0.02) norm scales.
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.GroupNorm):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
