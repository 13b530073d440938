"""The generator's training task: any registered family on the shared loop, trained on a token folder.

    train = TokenDataset("runs/tokens-shapes", "train")
    generator = build_from_tokens(train, "maskgit", {**size_preset("small"), "condition": "text"})
    task = GeneratorTask(generator, train, val=TokenDataset(..., "val"), tokenizer=tokenizer)
    Trainer(task, task.dataset, TrainConfig(out_dir="runs/gen", max_steps=5000)).fit()

The loop (`train/engine.py`) knows nothing about generators, and this file knows nothing about
families: the model comes from the registry (`generators.build_generator`), the condition of a
batch from `generator.make_condition(labels=..., captions=...)` (the model takes the part it was
built for), and a family that needs more than token ids from the tokenizer (VAR: its multi-scale
quantizer, for the next scale's input) gets it through one hook every family has,
`generator.attach_tokenizer(tokenizer)`.  Nothing here says `if family == ...`.

Conditions are made once, for the whole split, when the task is built (captions are tokenized
once, not once per batch); the dataset the loop sees yields indices and the collate gathers rows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tokgen.pipeline import SampleConfig, condition_rows, decode_tokens, prompt_title, sample_tokens

from ..engine import TrainConfig, TrainTask
from ..schedule import ScheduleConfig, budget_scheduler


@dataclass
class OptimConfig:
    weight_decay: float = 0.05       # AdamW decoupled weight decay on matrices (dim >= 2); biases and norms get none
    beta1: float = 0.9               # AdamW beta1
    beta2: float = 0.95              # AdamW beta2 (0.95 as in nanoGPT / LlamaGen)

    def validate(self) -> None:
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"AdamW betas must be in [0, 1), got {self.beta1}, {self.beta2}")


# ---------------------------------------------------------------------------- building from data

def build_from_tokens(train, family: str, config: dict[str, Any], *, text_vocab_size: int = 512,
                      text_tokenizer=None, extra_captions: list[str] = ()):
    """A new generator of `family` for a token folder's split `train` (a TokenDataset).

    `config` holds the family's config fields (size preset, condition, overrides).  What the
    condition needs from the data is filled in unless `config` sets it: `num_classes` from the
    labels (class), and for captions a byte-level BPE trained on the split's captions (or the
    `text_tokenizer` given, e.g. the one a resumed run saved) and a `text_length` that fits the
    longest of them and of `extra_captions` (the val split's, so that its captions fit too).
    """
    from tokgen.generators import GeneratorConfig, build_generator, condition_kind, max_caption_tokens, \
        train_text_tokenizer

    config = dict(config)
    kind = condition_kind(config.get("condition", GeneratorConfig.condition))
    if kind.uses_labels and "num_classes" not in config:
        config["num_classes"] = int(train.labels.max()) + 1 if len(train) else 0
        if config["num_classes"] < 1:
            raise ValueError("the token folder has no class labels (every label is -1): train with "
                             "--condition text (captions) or --condition none")
    if kind.uses_captions:
        if text_tokenizer is None:
            text_tokenizer = train_text_tokenizer(train.captions, text_vocab_size)
        if "text_length" not in config:
            config["text_length"] = max(1, max_caption_tokens(text_tokenizer, list(train.captions) +
                                                              list(extra_captions)))
    return build_generator(family, train.spec, config, text_tokenizer=text_tokenizer if kind.uses_captions else None)


def attach_tokenizer(generator, tokenizer) -> None:
    """`generator.attach_tokenizer(tokenizer)` when there is a tokenizer: every family has it (a
    spec check; VAR also takes the multi-scale quantizer's lookup / upsample / downsample)."""
    if tokenizer is not None:
        generator.attach_tokenizer(tokenizer)


def check_same_spec(token_spec: Any, tokenizer, token_source: str = "the token folder") -> None:
    """The tokens and the tokenizer that decodes samples must come from the same tokenizer spec."""
    from tokgen.generators import as_spec

    ours, theirs = as_spec(token_spec), as_spec(tokenizer.spec)
    if ours != theirs:
        raise ValueError(f"{token_source} holds tokens of spec {ours.to_dict()} but the tokenizer has spec "
                         f"{theirs.to_dict()}: pass --tokenizer the folder those tokens were extracted with "
                         f"(tokgen extract-tokens --tokenizer DIR), or re-extract the tokens with this tokenizer")


def condition_titles(rows: dict[str, Tensor], captions: list[str], n: int) -> list[str]:
    """What each row of a grid was conditioned on, read off the condition itself."""
    if "labels" in rows:
        return [prompt_title(int(c)) for c in rows["labels"]]
    if "text_ids" in rows:
        return list(captions)
    return [prompt_title(None)] * n


# ---------------------------------------------------------------------------- the task

class _Indices(torch.utils.data.Dataset):
    """What the loop iterates: item i is {"index": i}; the task's collate gathers the rows."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"index": i}


class GeneratorObjective(nn.Module):
    """The generator with its training loss as `forward`: DDP syncs gradients through forward,
    and a Generator's forward is its network, not its loss."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, tokens: list[Tensor], cond: dict | None):
        return self.generator.loss(tokens, cond or None)


class GeneratorTask(TrainTask):
    """One module ("generator"), AdamW with warm-up and cosine (or constant) decay.

    val (optional): a TokenDataset whose first `preview_n` conditions (the train split's without
    it) are drawn in a sample grid at every `sample_every` step (needs `tokenizer` to decode;
    without it no grids) and whose first `val_n` items give a validation loss (`evaluate`, at
    `eval_every` and at the end).  With `curve_n` > 0 (and a tokenizer), each evaluation also
    samples the first `curve_n` val conditions and logs the judge's scores (`eval/judge/...`) with
    the training images seen so far: quality against training, one point per evaluation.
    """

    def __init__(self, generator, train, *, val=None, tokenizer=None, optim: OptimConfig | None = None,
                 schedule: ScheduleConfig | None = None, sampling: SampleConfig | None = None,
                 preview_n: int = 8, val_n: int = 256, curve_n: int = 0):
        if curve_n < 0:
            raise ValueError(f"curve_n must be >= 0 (0 = no judged points during training), got {curve_n}")
        self.generator, self.train_split, self.val = generator, train, val
        self.curve_n, self.curve_seconds = curve_n, 0.0
        self.optim, self.schedule = optim or OptimConfig(), schedule or ScheduleConfig()
        self.sampling = sampling or SampleConfig()
        self.optim.validate()
        self.schedule.validate()
        self.tokenizer = tokenizer
        if tokenizer is not None:
            check_same_spec(train.spec, tokenizer)
            attach_tokenizer(generator, tokenizer)
        self.objective = GeneratorObjective(generator)
        self.tokens = train.scales                                     # [(N, s_k, s_k) long per scale]
        self.conds = condition_rows(generator, train.labels, train.captions)
        self.dataset = _Indices(len(train))
        self.preview = self._fixed_rows(val if val is not None else train, preview_n)
        self.val_rows = self._fixed_rows(val, val_n) if val is not None else None
        self._check_one_batch()

    def _check_one_batch(self) -> None:
        """One loss on two items, now: a family that lacks something (VAR without its tokenizer)
        says so with its own message before the loop starts, not at the first step."""
        batch = self.collate([self.dataset[i] for i in range(min(2, len(self.dataset)))])
        with torch.no_grad():
            self.generator.loss(batch["tokens"], batch["cond"] or None)

    def _fixed_rows(self, split, n: int) -> dict | None:
        n = min(n, len(split))
        if n == 0:
            return None
        labels, captions = split.labels[:n], list(split.captions[:n])
        return {"tokens": [s[:n] for s in split.scales], "captions": captions,
                "cond": condition_rows(self.generator, labels, captions)}

    # ------------------------------------------------------------------ the loop's interface
    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"generator": self.objective}

    def setup(self, trainer) -> None:
        super().setup(trainer)
        if self.tokenizer is not None:
            self.tokenizer.to(trainer.device).eval()

    def configure_optimizers(self, modules: dict[str, nn.Module], config: TrainConfig) -> dict:
        o = self.optim
        params = [p for p in modules["generator"].parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": o.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(o.beta1, o.beta2))
        return {"generator": (optimizer, budget_scheduler(optimizer, self.schedule, config.max_steps,
                                                          self.trainer.time_fraction))}

    def collate(self, items: list[dict]) -> dict:
        idx = torch.tensor([it["index"] for it in items])
        return {"tokens": [s[idx] for s in self.tokens], "cond": {k: v[idx] for k, v in self.conds.items()}}

    def losses(self, batch: dict, step: int):
        loss, logs = self.trainer.modules["generator"](batch["tokens"], batch["cond"])
        return {"generator": loss}, logs

    def on_interval(self, step: int) -> None:
        if self.preview is None or self.tokenizer is None or not self.trainer.is_main_process:
            return
        out = Path(self.trainer.config.out_dir) / "samples" / f"samples-{step:07d}.png"
        write_sample_grid(self.trainer.unwrap("generator").generator, self.tokenizer, self.preview,
                          self.sampling, self.trainer.config.seed, out, title=f"step {step}")

    def evaluate(self, step: int) -> dict[str, float]:
        metrics = self._val_loss() if self.val_rows is not None else {}
        config, trainer = self.trainer.config, self.trainer
        metrics["images_seen"] = step * config.batch_size * config.grad_accum * trainer.accelerator.num_processes
        if self.curve_n and self.tokenizer is not None and self.val is not None and trainer.is_main_process:
            metrics.update(self._judged_point())
        return metrics

    def _val_loss(self) -> dict[str, float]:
        generator = self.trainer.unwrap("generator").generator
        device = generator.device
        torch.manual_seed(self.trainer.config.seed)   # the same masks / noise at every evaluation
        losses, rows = [], self.val_rows
        n = len(rows["captions"])
        for lo in range(0, n, 64):
            tokens = [t[lo:lo + 64].to(device) for t in rows["tokens"]]
            cond = {k: v[lo:lo + 64].to(device) for k, v in rows["cond"].items()}
            loss, _ = generator.loss(tokens, cond or None)
            losses.append(loss.float() * len(tokens[0]))
        return {"val_loss": (torch.stack(losses).sum() / n).item()}

    def _judged_point(self) -> dict[str, float]:
        """curve_n samples for the first val conditions, judged (a point of the training curve);
        `curve_seconds` is the wall time all such points took, so a report can set it apart from
        the training time."""
        from ..evaluation import EvalConfig, evaluate_generator
        from ..precision import autocast

        start = time.perf_counter()
        generator = self.trainer.unwrap("generator").generator
        config = EvalConfig(n=self.curve_n, seed=self.trainer.config.seed, sampling=self.sampling)
        # the training precision over the whole point, the judge's forwards included, as the
        # curves have always been measured
        with autocast(self.trainer.precision, generator.device):
            result = evaluate_generator(generator, self.tokenizer, self.val, config)
        self.curve_seconds += time.perf_counter() - start
        return {**{f"judge/{k}": v for k, v in (result.judge or {}).items()}, "curve_seconds": self.curve_seconds}


def write_sample_grid(generator, tokenizer, rows: dict, sampling: SampleConfig, seed: int, path: str | Path,
                      title: str | None = None) -> Path:
    """Samples for the conditions of `rows` (top) above the tokenizer's decoding of the real
    tokens those conditions came from (bottom), captioned."""
    from tokgen.eval.visualize import save_captioned_grid

    n = len(rows["captions"])
    maps = sample_tokens(generator, rows["cond"], n, sampling, seed)
    fake, real = (torch.cat(list(decode_tokens(tokenizer, m, n))) for m in (maps, rows["tokens"]))
    titles = condition_titles(rows["cond"], rows["captions"], n)
    titles += [f"real: {t}" if t else "real" for t in rows["captions"]]
    return save_captioned_grid(torch.cat([fake, real]), titles, path, ncol=n, suptitle=title)
