"""Train a tokenizer (VQGAN / VAR multi-scale / FSQ / LFQ) on a dataset, save it and judge it.

    result = train_tokenizer(TokenizerRunConfig(preset="shapes-tiny-msvq", overrides={"scales": [1, 2, 4, 8]},
                                                train=preset_train_config("shapes-tiny-msvq", max_steps=1000)))
    result.test["psnr"], result.folder

The run folder gets checkpoints (a second call with the same config resumes), log.jsonl,
reconstruction grids under samples/, the final tokenizer under tokenizer/ (EMA weights when
train.ema_decay > 0) and eval.json (`TokenizerResult.to_dict()`): PSNR, SSIM, codebook usage per
scale and the embedded judge read off the test-split reconstructions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import TrainConfig
from ..schedule import ScheduleConfig

# What differs from the loop's generic defaults for a tokenizer; each preset's own training
# settings (TokenizerPreset.training, tokenizers_vq/presets.py) go on top.
TRAIN_DEFAULTS = {"out_dir": "runs/tokenizer", "max_steps": 100_000, "save_every": 500, "sample_every": 500,
                  "log_every": 25, "warmup_steps": 0, "lr_schedule": "constant"}


def preset_training(preset: str | None) -> dict[str, Any]:
    """The TrainConfig and ScheduleConfig fields that go with a tokenizer preset: the tokenizer's
    defaults, the preset's own training settings on top (an unknown name: the defaults alone)."""
    from tokgen.tokenizers_vq import TOKENIZER_PRESETS

    preset = preset or "shapes-tiny"
    return {**TRAIN_DEFAULTS, **(TOKENIZER_PRESETS[preset].training if preset in TOKENIZER_PRESETS else {})}


def preset_train_config(preset: str, **changes) -> TrainConfig:
    """The preset's TrainConfig with `changes` on top."""
    return _pick(TrainConfig, {**preset_training(preset), **changes})


def preset_schedule(preset: str, **changes) -> ScheduleConfig:
    """The preset's learning-rate schedule with `changes` on top."""
    return _pick(ScheduleConfig, {**preset_training(preset), **changes})


def preset_optim(preset: str, **changes):
    """The preset's optimizer settings (TokenizerOptimConfig) with `changes` on top."""
    from ..tasks.tokenizer import TokenizerOptimConfig

    return _pick(TokenizerOptimConfig, {**preset_training(preset), **changes})


# Dataset kinds that take an `augment=` option (tokgen.data.folder); the preset's "augment" goes
# only to them (the embedded datasets are drawn at their size and are not augmented).
_AUGMENTABLE = ("folder", "hf")


def preset_dataset_options(preset: str, dataset: str) -> dict[str, Any]:
    """The dataset options a preset's recipe adds (LlamaGen's random crop and flip) for this dataset."""
    training = preset_training(preset)
    if "augment" in training and dataset.partition(":")[0] in _AUGMENTABLE:
        return {"augment": training["augment"]}
    return {}


def _pick(cls, values: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class TokenizerRunConfig:
    preset: str = "shapes-tiny"      # tokenizer preset (tokenizers_vq.PRESETS)
    overrides: dict[str, Any] = field(default_factory=dict)        # TokenizerConfig fields over the preset
    loss_overrides: dict[str, Any] = field(default_factory=dict)   # LossConfig fields over the preset's losses
    dataset: str = "shapes"          # shapes | digits | photos | folder:PATH | hf:NAME_OR_PATH
    dataset_options: dict[str, Any] = field(default_factory=dict)  # the dataset's own options (shapes: num_objects)
    eval_n: int = 2000               # test images reconstructed and judged after training (0 = skip)
    train: TrainConfig | None = None           # None: the preset's (preset_train_config)
    schedule: ScheduleConfig | None = None     # None: the preset's (preset_schedule)
    optim: Any = None                          # TokenizerOptimConfig; None: the preset's (preset_optim)


@dataclass
class TokenizerResult:
    folder: str                      # the saved tokenizer (VQTokenizer.from_pretrained)
    preset: str
    dataset: str
    dataset_options: dict
    steps: int
    batch_size: int
    images_seen: int
    minutes: float
    stopped: str                     # what ended the training: max_steps, max_minutes, ...
    precision: Any                   # the training precision the Trainer chose
    test: dict | None = None         # the test-split reconstructions measured and judged (eval_n > 0)

    def to_dict(self) -> dict:
        """What eval.json holds (the folder is the one beside it)."""
        out = dataclasses.asdict(self)
        del out["folder"]
        if out["test"] is None:
            del out["test"]
        return out


def train_tokenizer(config: TokenizerRunConfig) -> TokenizerResult | None:
    """Train, save and judge one tokenizer.  The result (also in eval.json) on the main process,
    None on the others.  Raises ValueError / FileNotFoundError for bad settings before training."""
    import json

    import torch
    from accelerate.utils import set_seed

    from tokgen.data import build_dataset
    from tokgen.eval.judges import judge_for
    from tokgen.eval.tokenizer_eval import evaluate_tokenizer
    from tokgen.tokenizers_vq import TokenizerConfig, get_tokenizer_preset
    from tokgen.tokenizers_vq.losses import resolve_perceptual_weights

    from ..engine import Trainer
    from ..tasks.tokenizer import TokenizerTask

    from .checks import check_tokenizer_run

    check_tokenizer_run(config)                         # every setting, before data or models are built
    preset = get_tokenizer_preset(config.preset)        # an unknown name: ValueError naming the known ones
    train_config = config.train or preset_train_config(config.preset)
    schedule = config.schedule or preset_schedule(config.preset)
    tok_config = TokenizerConfig.from_dict({**preset.model.to_dict(), **config.overrides})
    unknown = sorted(set(config.loss_overrides) - {f.name for f in dataclasses.fields(preset.loss)})
    if unknown:
        raise ValueError(f"unknown LossConfig fields {unknown} (--loss-set); the fields are "
                         f"{sorted(f.name for f in dataclasses.fields(preset.loss))}")
    # a preset that requires the perceptual loss refuses here, before any data is read, when its
    # VGG16 / LPIPS files are not on this machine (the message says where it looked and the fixes)
    loss_config = resolve_perceptual_weights(dataclasses.replace(preset.loss, **config.loss_overrides))
    optim = config.optim or preset_optim(config.preset)
    options = dict(config.dataset_options)
    # the recipe's augmentation (a given option wins) goes to the training split only
    train_options = {**preset_dataset_options(config.preset, config.dataset), **options}
    train_set = build_dataset(config.dataset, "train", tok_config.image_size, **train_options)
    val_set = build_dataset(config.dataset, "val", tok_config.image_size, **options)
    preview = torch.stack([val_set[i]["image"] for i in range(min(8, len(val_set)))])

    # the initial weights are a function of the seed (torch's global RNG is not the same in every
    # fresh process: some import seeds it), so the same config trains the same tokenizer
    set_seed(train_config.seed)
    task = TokenizerTask(tok_config, loss_config, preview=preview, schedule=schedule, optim=optim)
    trainer = Trainer(task, train_set, train_config)
    logs = trainer.fit()
    if not trainer.is_main_process:
        return None

    out = Path(train_config.out_dir)
    with trainer.ema_weights("autoencoder"):
        tokenizer = trainer.unwrap("autoencoder")
        tokenizer.save_pretrained(out / "tokenizer")
        result = TokenizerResult(
            folder=str(out / "tokenizer"), preset=config.preset, dataset=config.dataset, dataset_options=options,
            steps=logs["step"], batch_size=train_config.batch_size,
            images_seen=logs["step"] * train_config.batch_size * train_config.grad_accum
            * trainer.accelerator.num_processes,
            minutes=logs["minutes"], stopped=logs["stopped"], precision=logs["precision"])
        if config.eval_n:
            test_set = build_dataset(config.dataset, "test", tok_config.image_size, **options)
            judge = judge_for(config.dataset, tok_config.image_size, options)
            result.test = evaluate_tokenizer(tokenizer, test_set, judge, n=config.eval_n, device=trainer.device)
    (out / "eval.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result
