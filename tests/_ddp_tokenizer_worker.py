"""The script the tokenizer's 2-process test launches (and its 1-process reference calls).

    accelerate launch --multi_gpu --num_processes 2 tests/_ddp_tokenizer_worker.py OUT BATCH STEPS KMEANS

trains a tiny tokenizer on the first shapes images through the real TokenizerTask and leaves the
final checkpoint in OUT, plus each process's own codebook as OUT/codebook-rank{r}.safetensors.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tokgen.tokenizers_vq import LossConfig, TokenizerConfig  # noqa: E402
from tokgen.data.shapes import ShapesDataset  # noqa: E402
from tokgen.train.engine import TrainConfig, Trainer  # noqa: E402
from tokgen.train.tasks.tokenizer import TokenizerTask  # noqa: E402


def tiny_config(kmeans: bool) -> TokenizerConfig:
    return TokenizerConfig(image_size=32, base_width=8, channel_mults=(1, 2, 2), z_channels=8, mid_attention=False,
                           codebook_size=32, kmeans_init=kmeans, threshold_ema_dead_code=2.0 if kmeans else 0.0)


def make_trainer(out_dir: str, batch_size: int, steps: int, kmeans: bool, **overrides) -> Trainer:
    torch.manual_seed(0)  # same initial weights in every process and run
    task = TokenizerTask(tiny_config(kmeans), LossConfig(disc_weight=0.0, disc_channels=8, disc_layers=2))
    settings = dict(out_dir=out_dir, max_steps=steps, batch_size=batch_size, lr=1e-3, log_every=1, save_every=0,
                    resume=None, tensorboard=False, cpu=True)
    settings.update(overrides)
    return Trainer(task, Subset(ShapesDataset("train"), range(64)), TrainConfig(**settings))


def main(out_dir: str, batch_size: int, steps: int, kmeans: bool) -> None:
    torch.set_num_threads(1)
    trainer = make_trainer(out_dir, batch_size, steps, kmeans)
    trainer.fit()
    codebook = trainer.unwrap("autoencoder").quantizer.vq._codebook
    rank = trainer.accelerator.process_index
    save_file({"embed": codebook.embed.contiguous(), "initted": codebook.initted.float().reshape(1)},
              str(Path(out_dir) / f"codebook-rank{rank}.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
