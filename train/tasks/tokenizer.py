"""The tokenizer's training task: VQGAN's autoencoder + discriminator on the shared loop.

The loop (`train/engine.py`) knows nothing about tokenizers; this file only says which modules
train, with which optimizers, and what their losses are (`tokenizers_vq.TokenizerLoss`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from tokgen.eval.reconstruction import psnr
from tokgen.eval.visualize import save_grid
from tokgen.tokenizers_vq import LossConfig, TokenizerConfig, TokenizerLoss, VQTokenizer, build_discriminator

from ..engine import TrainConfig, TrainTask
from ..schedule import ScheduleConfig, budget_scheduler


@dataclasses.dataclass
class TokenizerOptimConfig:
    """The two Adam optimizers' settings (autoencoder and discriminator alike).  The defaults are
    VQGAN's (taming-transformers: Adam, betas 0.5/0.9); the ImageNet presets take LlamaGen's
    (0.9/0.95) from their training settings (`tokenizers_vq/presets.py`)."""
    beta1: float = 0.5
    beta2: float = 0.9
    weight_decay: float = 0.0   # > 0: AdamW's decoupled weight decay on every parameter; 0: plain Adam

    def validate(self) -> None:
        from ..jobs.checks import check_optim  # the same fields as OptimConfig: one set of checks

        check_optim(self)


class TokenizerTask(TrainTask):
    """Autoencoder and PatchGAN discriminator, two Adam optimizers (`TokenizerOptimConfig`).

    preview: a few fixed images whose reconstructions are written as a PNG grid at every
    `sample_every` step (top row the originals, bottom row the reconstructions).
    """

    def __init__(self, config: TokenizerConfig, loss_config: LossConfig, preview: torch.Tensor | None = None,
                 disc_lr_ratio: float = 1.0, schedule: ScheduleConfig | None = None,
                 optim: TokenizerOptimConfig | None = None):
        self.config, self.loss_config = config, loss_config
        self.optim = optim or TokenizerOptimConfig()
        self.optim.validate()
        # VQGAN trains at a constant rate; the shapes presets add a warm-up (train-tokenizer's
        # PRESET_TRAINING). A cosine over a 5-minute budget did not help them (README, "The tokenizer")
        self.schedule = schedule or ScheduleConfig(warmup_steps=0, lr_schedule="constant")
        self.schedule.validate()
        if config.sync_codebook is None:
            # The model is built before the trainer starts the process group, so the codebook's own
            # "am I distributed?" check would say no; `accelerate launch` / torchrun set WORLD_SIZE.
            config = dataclasses.replace(config, sync_codebook=int(os.environ.get("WORLD_SIZE", "1")) > 1)
        self.tokenizer = VQTokenizer(config)
        self.discriminator = build_discriminator(loss_config, config.channels)
        self.loss_fn = TokenizerLoss(loss_config)
        self.preview = preview
        self.disc_lr_ratio = disc_lr_ratio

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"autoencoder": self.tokenizer, "discriminator": self.discriminator}

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.loss_fn.to(trainer.device)

    def configure_optimizers(self, modules: dict[str, nn.Module], config: TrainConfig) -> dict:
        def adam(params, lr):
            o = self.optim
            betas = (o.beta1, o.beta2)
            optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=o.weight_decay) \
                if o.weight_decay > 0 else torch.optim.Adam(params, lr=lr, betas=betas)
            return optimizer, budget_scheduler(optimizer, self.schedule, config.max_steps, self.trainer.time_fraction)

        return {"autoencoder": adam(modules["autoencoder"].parameters(), config.lr),
                "discriminator": adam(modules["discriminator"].parameters(), config.lr * self.disc_lr_ratio)}

    def losses(self, batch: dict, step: int):
        images = batch["image"]
        modules = self.trainer.modules
        loss_ae, loss_d, logs = self.loss_fn(images, modules["autoencoder"], modules["discriminator"], step)
        # Before the GAN starts loss_d is an exact zero through the discriminator: backpropagating
        # it keeps DDP's gradient bookkeeping uniform, and Adam moves nothing on zero gradients.
        return {"autoencoder": loss_ae, "discriminator": loss_d}, logs

    def on_interval(self, step: int) -> None:
        if self.preview is None or not self.trainer.is_main_process:
            return
        tokenizer = self.trainer.unwrap("autoencoder")
        images = self.preview.to(self.trainer.device)
        recon = tokenizer.decode(tokenizer.encode(images))
        out = Path(self.trainer.config.out_dir) / "samples" / f"recon-{step:07d}.png"
        save_grid(torch.cat([images, recon]).float().cpu(), out, nrow=len(images))

    def evaluate(self, step: int) -> dict[str, float]:
        if self.preview is None:
            return {}
        tokenizer = self.trainer.unwrap("autoencoder")
        images = self.preview.to(self.trainer.device)
        recon = tokenizer.decode(tokenizer.encode(images))
        return {"psnr": psnr(recon.float(), images.float()).mean().item()}
