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
import json
from pathlib import Path

from .config_file import add_config_argument, config_values
from .options import (add_dataclass_options, add_dataset_arguments, dataclass_from_args, dataset_options, parse_args,
                      parse_overrides)

HELP = "train a tokenizer (VQ, multi-scale VQ, FSQ, LFQ) on a dataset, with Accelerate"

# The training defaults follow --preset: the tokenizer's own (train/jobs/tokenizer.py), with the
# preset's training settings on top (TokenizerPreset.training, in tokenizers_vq/presets.py, with
# the measurements behind them); a --config file and then the flags win over both.


def build_parser(preset: str | None = None) -> argparse.ArgumentParser:
    from tokgen.tokenizers_vq import PRESETS

    from ..engine import TrainConfig
    from ..jobs.tokenizer import preset_training
    from ..schedule import ScheduleConfig
    from ..tasks.tokenizer import TokenizerOptimConfig

    defaults = preset_training(preset)   # an unknown name gets the generic defaults; --preset's choices reject it

    p = argparse.ArgumentParser(prog="tokgen train-tokenizer", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_config_argument(p)
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
    add_dataclass_options(p, TokenizerOptimConfig, defaults=defaults,
                          title="optimizer: Adam, AdamW when weight decay > 0 (TokenizerOptimConfig; defaults follow --preset)")
    return p


def main(argv: list[str]) -> int:
    from ..jobs.tokenizer import train_tokenizer

    config = config_values(argv)              # a bad --config file: `error: ...` (tokgen.train.cli)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", default=config[1].get("preset", "shapes-tiny"))
    parser = build_parser(first.parse_known_args(argv)[0].preset)   # the training defaults follow the preset
    args = parse_args(parser, argv, config)
    result = train_tokenizer(config_from_args(args))
    if result is not None:
        print(json.dumps(result.to_dict(), indent=2))
        print(f"tokenizer saved to {result.folder}; reconstructions in {Path(result.folder).parent / 'samples'}")
    return 0


def config_from_args(args: argparse.Namespace):
    """The TokenizerRunConfig the flags describe."""
    from ..engine import TrainConfig
    from ..jobs.tokenizer import TokenizerRunConfig
    from ..schedule import ScheduleConfig
    from ..tasks.tokenizer import TokenizerOptimConfig

    return TokenizerRunConfig(preset=args.preset, overrides=parse_overrides(args.set),
                              loss_overrides=parse_overrides(args.loss_set), dataset=args.dataset,
                              dataset_options=dataset_options(args), eval_n=args.eval_n,
                              train=dataclass_from_args(TrainConfig, args),
                              schedule=dataclass_from_args(ScheduleConfig, args),
                              optim=dataclass_from_args(TokenizerOptimConfig, args))
