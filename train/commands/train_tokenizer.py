"""`tokgen train-tokenizer`: train a tokenizer (VQGAN / VAR multi-scale / FSQ / LFQ) with Accelerate.

    tokgen train-tokenizer --preset shapes-tiny --max-minutes 5 --out-dir runs/tok-shapes
    tokgen train-tokenizer --preset shapes-tiny-msvq --set scales=[1,2,4,8] --max-minutes 5
    accelerate launch --multi_gpu --num_processes 4 -m tokgen train-tokenizer \\
        --preset imagenet-256 --dataset hf:/data/imagenet

The run folder gets checkpoints (resumed automatically), log.jsonl, TensorBoard logs,
reconstruction grids under samples/, the final tokenizer under tokenizer/ (safetensors + JSON,
EMA weights when --ema-decay > 0) and eval.json: PSNR, SSIM, codebook usage per scale and the
embedded judge read off the test-split reconstructions.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .options import add_dataclass_options, add_dataset_arguments, dataclass_from_args, dataset_options, parse_overrides

HELP = "train a tokenizer (VQ, multi-scale VQ, FSQ, LFQ) on a dataset, with Accelerate"

# What differs from the loop's generic defaults for a tokenizer.
TRAIN_DEFAULTS = {"out_dir": "runs/tokenizer", "max_steps": 100_000, "save_every": 500, "sample_every": 500,
                  "log_every": 25, "warmup_steps": 0, "lr_schedule": "constant"}
# Per preset family, the training settings that go with it (flags on the command line win).
# shapes: batch 32 at lr 2e-3 took the most steps and the best reconstructions out of a 5-minute
# CPU budget. A linear warm-up over the first 300 steps: straight at 2e-3 some initialisations sat
# for hundreds to thousands of steps at PSNR ~16 (a near-black output) with 5-15% of the codes in
# use (one 5-minute single-scale run got out only at step ~2,500: 35% judged);
# warmed up, three such seeds were past PSNR 21 by step 600 where the straight runs were at 16-19.
# The weights' EMA (0.995, a horizon of ~200 steps) evens out where a constant-rate run happens to
# stop (and the background tint that halved SSIM). The shapes loss preset (L2 reconstruction,
# tokenizers_vq/losses.py) fixes the multi-scale hue collapse. float32 even where bf16 is fast:
# bf16 autocast bought steps on the measuring CPU but ruined the codebook assignment (README).
# imagenet: VQGAN/LlamaGen-style settings for GPUs, in bf16 where the GPU has it (auto).
PRESET_TRAINING = {
    "shapes": {"batch_size": 32, "lr": 2e-3, "warmup_steps": 300, "ema_decay": 0.995, "mixed_precision": "fp32"},
    "imagenet": {"batch_size": 16, "lr": 1e-4, "mixed_precision": "auto", "ema_decay": 0.999,
                 "save_every": 5000, "sample_every": 2000},
}


def build_parser(preset: str | None = None) -> argparse.ArgumentParser:
    from tokgen.tokenizers_vq import PRESETS

    from ..engine import TrainConfig
    from ..schedule import ScheduleConfig

    defaults = {**TRAIN_DEFAULTS, **PRESET_TRAINING.get((preset or "shapes").split("-")[0], {})}

    p = argparse.ArgumentParser(prog="tokgen train-tokenizer", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--preset", default="shapes-tiny", choices=sorted(PRESETS), help="tokenizer size preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a TokenizerConfig field (repeatable), e.g. --set codebook_size=512")
    p.add_argument("--loss-set", action="append", metavar="KEY=VALUE",
                   help="override a LossConfig field, e.g. --loss-set disc_weight=0.8 --loss-set "
                        "perceptual_weights=/path/vgg16.pth")
    add_dataset_arguments(p)
    p.add_argument("--eval-n", type=int, default=2000, help="test images judged after training (0 = skip)")
    add_dataclass_options(p, TrainConfig, defaults=defaults, title="training (TrainConfig; defaults follow --preset)")
    add_dataclass_options(p, ScheduleConfig, defaults=defaults,
                          title="learning rate: warm-up, then decay over the budget (ScheduleConfig; defaults follow --preset)")
    return p


def main(argv: list[str]) -> int:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", default="shapes-tiny")
    args = build_parser(first.parse_known_args(argv)[0].preset).parse_args(argv)  # defaults follow the preset
    import torch
    from accelerate.utils import set_seed

    from tokgen.eval.judges import judge_for
    from tokgen.eval.tokenizer_eval import evaluate_tokenizer
    from tokgen.tokenizers_vq import LOSS_PRESETS, TokenizerConfig, get_preset
    from tokgen.data import build_dataset

    from ..engine import TrainConfig, Trainer
    from ..schedule import ScheduleConfig
    from ..tasks.tokenizer import TokenizerTask

    config = TokenizerConfig.from_dict({**get_preset(args.preset).to_dict(), **parse_overrides(args.set)})
    loss_config = dataclasses.replace(LOSS_PRESETS[args.preset], **parse_overrides(args.loss_set))
    train_config = dataclass_from_args(TrainConfig, args)
    options = dataset_options(args)
    train_set = build_dataset(args.dataset, "train", config.image_size, **options)
    val_set = build_dataset(args.dataset, "val", config.image_size, **options)
    preview = torch.stack([val_set[i]["image"] for i in range(min(8, len(val_set)))])

    # the initial weights are a function of --seed (torch's global RNG is not the same in every
    # fresh process: some import seeds it), so the same command trains the same tokenizer
    set_seed(train_config.seed)
    task = TokenizerTask(config, loss_config, preview=preview, schedule=dataclass_from_args(ScheduleConfig, args))
    trainer = Trainer(task, train_set, train_config)
    logs = trainer.fit()
    if not trainer.is_main_process:
        return 0

    out = Path(train_config.out_dir)
    with trainer.ema_weights("autoencoder"):
        tokenizer = trainer.unwrap("autoencoder")
        tokenizer.save_pretrained(out / "tokenizer")
        result = {"preset": args.preset, "dataset": args.dataset, "dataset_options": options, "steps": logs["step"],
                  "batch_size": train_config.batch_size,
                  "images_seen": logs["step"] * train_config.batch_size * train_config.grad_accum * trainer.accelerator.num_processes,
                  "minutes": logs["minutes"], "stopped": logs["stopped"], "precision": logs["precision"]}
        if args.eval_n:
            test_set = build_dataset(args.dataset, "test", config.image_size, **options)
            judge = judge_for(args.dataset, config.image_size, options)
            result["test"] = evaluate_tokenizer(tokenizer, test_set, judge, n=args.eval_n, device=trainer.device)
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"tokenizer saved to {out / 'tokenizer'}; reconstructions in {out / 'samples'}")
    return 0
