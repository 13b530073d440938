"""The training loop shared by every trainer in tokgen: tokenizers and generators alike.

As in minGPT's trainer, nothing here knows what is being trained. A *task* (see `TrainTask`)
supplies the modules, one optimizer per module group and the losses; the loop does devices,
mixed precision, gradient accumulation and clipping, EMA weights, logging, checkpoints and exact
resume, all through Hugging Face Accelerate:

    task = MyTask(model)
    logs = Trainer(task, dataset, TrainConfig(out_dir="runs/x", max_steps=2000)).fit()

The same script runs on one CPU, one GPU, or many processes:
`accelerate launch --multi_gpu --num_processes 4 script.py` (or torchrun).  On a machine without
GPUs, several processes train on the CPU with the gloo backend.

Data order is a pure function of (seed, epoch): every process computes the same permutation,
global batch i is its slice [i*G, (i+1)*G) (G = batch_size * processes) and process r takes the
r-th part, so 2 processes with batch B/2 see the same global batches as 1 process with batch B.
A resumed run restarts the sampler at the saved position, so N steps + resume + M steps equals
N + M steps straight (bit for bit on the CPU), provided a dataset item depends only on its index
(CONTRIBUTING.md).

Resume never crashes on a damaged checkpoint and never silently loses exactness: the newest
complete checkpoint whose files all check out and load is used; a damaged newer one is named in a
warning and set aside (`checkpoint-<step>.damaged`); with none left the run refuses, naming each
damaged file (train/checkpoint.py). A missing RNG state is damage unless `allow_inexact_resume`.
SIGTERM and SIGINT during fit() finish the current step, write a checkpoint and exit with 143 / 130
(one line says where to resume from). One run writes to an out_dir at a time (`run.lock`).

Accelerate as users configure it (train/accelerate_setup.py: the precision from --mixed-precision or
`accelerate launch`, trackers, FSDP/DeepSpeed refused); the precision chosen and where it came from
are printed and recorded (trainer_state.json and fit()'s "precision"). Backward, gradient
unscaling and clipping go through the Accelerator (which owns the fp16 GradScaler).

Host syncs: losses and logs stay on the device; the loop reads them once per log_every steps.
Each step makes one small host read, the skip decision (a non-finite loss, or non-finite
gradients without an fp16 scaler), which a step cannot be taken or skipped without; under fp16
the GradScaler reads its own inf check as well.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object, parse_flag_from_env, send_to_device, set_seed
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from .checkpoint import (
    CheckpointError,
    DamagedCheckpoint,
    NonFiniteError,
    RunLock,
    RunLockedError,
    load_checkpoint,
    prune_checkpoints,
    read_trainer_state,
    remove_stale_temp,
    resume_candidates,
    save_checkpoint,
    set_aside_damaged,
    verify_checkpoint,
)
from .ema import EMA
from tokgen.errors import ConfigValueError, at_least, check_ranges, in_range, positive

from . import accelerate_setup as setup
from .stop_signals import StopSignals, ignore_stop_signals
from .precision import CHOICES

__all__ = ["TrainConfig", "TrainTask", "Trainer", "EpochBatchSampler", "NonFiniteError"]


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"  # checkpoints, log.jsonl and TensorBoard logs go here
    max_steps: int = 1000  # optimizer steps; each takes grad_accum micro-batches
    max_minutes: float = 0.0  # wall-time budget across resumes; when spent: checkpoint and stop (0 = none)
    batch_size: int = 32  # per process and micro-batch: a step sees batch_size * processes * grad_accum items
    grad_accum: int = 1  # micro-batches whose gradients are summed into one optimizer step
    mixed_precision: str = field(default="auto", metadata={"choices": CHOICES})  # auto: ACCELERATE_MIXED_PRECISION if accelerate launch / accelerate config set it, else bf16 where the device runs it fast, else fp32; fp16 needs CUDA
    lr: float = 3e-4  # base learning rate: the task builds its optimizers from it
    grad_clip: float = 1.0  # max gradient norm, per optimizer; 0 = no clipping (the norm is still logged)
    ema_decay: float = 0.0  # EMA of the weights, updated after every optimizer step; 0 = off
    ema_modules: tuple[str, ...] = ()  # modules that get an EMA; () = all of them
    save_every: int = 1000  # checkpoint every N steps, and always at the end; 0 = only at the end
    keep_last: int = 2  # complete checkpoints kept in out_dir; 0 = keep all
    log_every: int = 10  # average the logs over N steps and write them (tqdm, TensorBoard, log.jsonl)
    sample_every: int = 0  # call task.on_interval(step) every N steps and at the end; 0 = never
    eval_every: int = 0  # call task.evaluate(step) every N steps; it also runs at the end if the task has it
    seed: int = 0  # seeds python/numpy/torch (plus the process index) and the data order
    resume: str | None = "auto"  # "auto": latest complete checkpoint in out_dir, if any; a path; None: afresh
    allow_inexact_resume: bool = False  # resume even if the checkpoint's RNG state is missing or unreadable: the run then no longer matches a straight run bit for bit
    num_workers: int | None = None  # DataLoader workers per training process; none = the dataset's default per device (tokgen.data.default_num_workers: 0 for data held in memory)
    shuffle: bool = True  # a new order every epoch, a function of (seed, epoch) only
    max_nonfinite: int = 5  # raise NonFiniteError after this many skipped (NaN/inf) steps in a row
    find_unused_parameters: bool = False  # DDP: set when some trained parameters get no gradient in a step
    cpu: bool = False  # train on the CPU even when a GPU is visible
    tensorboard: bool = True  # with report_to auto: log to TensorBoard when the package is installed
    report_to: str = "auto"  # trackers (Accelerate's log_with): auto (TensorBoard when installed and tensorboard is true), none, all, or a comma list of tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio
    compile: bool = False  # torch.compile the trained modules' forward (the training losses); the first steps are slow while it compiles


class TrainTask:
    """What a trainer gives the loop. Subclass it, or write a class with the same methods.

    The loop calls, in this order:

    trainable_modules() -> {name: nn.Module}
        once; the modules to train. The loop moves them to the device and wraps them for DDP.
    setup(trainer)
        once, after that: `trainer.modules` holds the prepared modules. Call *those* in `losses`
        (DDP syncs gradients through their forward); move frozen helpers (a tokenizer, a loss
        network) to `trainer.device` here. The default keeps `self.trainer`.
    configure_optimizers(modules, config) -> {name: optimizer | (optimizer, lr_scheduler)}
        once, with the prepared modules. A scheduler steps each time its optimizer steps (not
        while its loss sits out, nor when the fp16 scaler skips the step).
        `train.schedule.budget_scheduler(..., trainer.time_fraction)` decays over the budget,
        steps or minutes.
    losses(batch, step) -> ({name: loss}, logs)
        every micro-batch, under autocast; `batch` is a collated dict on the device, `step` the
        number of optimizer steps done. Each loss is a scalar tensor for the optimizer of the same
        name; all are backpropagated, then every optimizer steps, so their graphs must be
        independent (a loss must put no gradient into another optimizer's parameters). A loss of
        None or 0 (e.g. a discriminator before it starts) leaves its optimizer out of the step;
        which losses are on may depend on `step` only. `logs` maps names to floats or scalar
        tensors, averaged over `log_every` steps. Under DDP, a module run only inside another
        module's loss (a discriminator in the autoencoder's adversarial term) must be called
        through `trainer.unwrap(name)` (e.g. torch.func.functional_call with detached
        parameters), not through its DDP wrapper, which would wait for gradients that never come.
    collate(items) -> batch      (optional) replaces torch's default_collate.
    on_interval(step)            (optional) sample grids, reconstructions: the task writes them.
    evaluate(step) -> {name: float}  (optional) metrics, logged as eval/<name>.
        Both hooks run on every process (check `trainer.is_main_process` before writing files),
        under torch.no_grad(), with the modules in eval mode and the EMA weights swapped in; the
        training RNG streams are restored after them, so hooks never change the training run.
    """

    trainer: "Trainer | None" = None

    def trainable_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def setup(self, trainer: "Trainer") -> None:
        self.trainer = trainer

    def configure_optimizers(self, modules: dict[str, nn.Module], config: TrainConfig) -> dict[str, Any]:
        raise NotImplementedError

    def losses(self, batch: dict, step: int) -> tuple[dict[str, torch.Tensor | None], dict[str, float]]:
        raise NotImplementedError


class EpochBatchSampler(Sampler):
    """This process's batches of one epoch, from global batch `start` on.

    The epoch's order is a permutation seeded by (seed, epoch) alone; global batch i is
    order[i*G : (i+1)*G] with G = batch_size * num_processes (the incomplete tail is dropped), and
    process r takes its r-th slice of batch_size indices.
    """

    def __init__(self, num_items: int, batch_size: int, num_processes: int = 1, process_index: int = 0,
                 seed: int = 0, epoch: int = 0, start: int = 0, shuffle: bool = True):
        self.num_items, self.batch_size, self.process_index = num_items, batch_size, process_index
        self.seed, self.epoch, self.start, self.shuffle = seed, epoch, start, shuffle
        self.global_batch = batch_size * num_processes
        self.num_batches = num_items // self.global_batch

    def __len__(self) -> int:
        return max(self.num_batches - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(_derived_seed(self.seed, self.epoch, salt=0))
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        for b in range(self.start, self.num_batches):
            lo = b * self.global_batch + self.process_index * self.batch_size
            yield order[lo : lo + self.batch_size]


class Trainer:
    """Trains `task` on `dataset` (items are dicts) as `config` says; `fit()` runs it.

    One Trainer at a time per process: accelerate keeps its settings process-wide, and a new
    Trainer (another precision, say) replaces them. Attributes a task may use: `modules`
    (prepared), `unwrap(name)`, `ema` / `ema_weights()`, `device`, `accelerator`, `config`, `step`,
    `precision` (the train.precision.Choice that `config.mixed_precision` resolved to on this device).
    """

    def __init__(self, task, dataset, config: TrainConfig):
        check_train_config(config)
        self.task, self.dataset, self.config = task, dataset, config
        self._time_fraction = 0.0  # read by learning-rate schedules built in configure_optimizers
        cpu = config.cpu or setup.cpu_only_multiprocess() or parse_flag_from_env("ACCELERATE_USE_CPU")
        setup.refuse_sharding_from_env()
        self.trackers = setup.trackers(config)
        self.precision = setup.agreed_precision(config.mixed_precision, cpu)
        self.accelerator = setup.make_accelerator(config, cpu, self.precision.accelerate_mixed_precision,
                                                  self.trackers)
        setup.refuse_sharding(self.accelerator.distributed_type)
        self.accelerator.print(f"precision: {self.precision} [from {self.precision.source}]")
        self._device = self.accelerator.device  # accelerate's state is process-wide: keep ours
        set_seed(config.seed, device_specific=True)  # different dropout/noise on each process
        modules = task.trainable_modules()
        _check_modules(modules)
        # sorted, so that checkpoint files (model.safetensors, model_1, ...) map to names stably
        self.modules = {n: self.accelerator.prepare(modules[n]) for n in sorted(modules)}
        if config.compile:
            setup.compile_modules(self.modules, self.accelerator)
        if hasattr(task, "setup"):
            task.setup(self)
        specs = task.configure_optimizers(dict(self.modules), config)
        self.optimizers, self.schedulers = self._prepare_optimizers(specs)
        ema_names = config.ema_modules or tuple(self.modules)
        unknown = set(ema_names) - set(self.modules)
        if unknown:
            raise ValueError(f"ema_modules {sorted(unknown)} are not trained modules {sorted(self.modules)}")
        self.ema = {n: EMA(self.unwrap(n), config.ema_decay) for n in ema_names} if config.ema_decay else {}
        self.batches_per_epoch = len(dataset) // (config.batch_size * self.accelerator.num_processes)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the dataset has {len(dataset)} items, fewer than one global batch of "
                f"{config.batch_size} x {self.accelerator.num_processes} processes: lower batch_size"
            )
        self.step = self.epoch = self.batch_in_epoch = 0
        self.nonfinite_total = self.nonfinite_streak = self.scaler_skips = 0
        self.checkpoint: Path | None = None
        self.last_logs: dict[str, float] = {}
        self._elapsed_before, self._start, self._last_saved, self._last_eval = 0.0, time.monotonic(), -1, -1
        self._window = _Window()
        self._signals = StopSignals(install=False)  # the real ones are installed while fit() runs
        self._agreed_signal = 0

    # ------------------------------------------------------------------ public helpers
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def unwrap(self, name: str) -> nn.Module:
        """The task's own module `name`, without the DDP wrapper (to save it, or call other methods)."""
        return self.accelerator.unwrap_model(self.modules[name])

    @contextlib.contextmanager
    def ema_weights(self, *names: str):
        """Run a block with the EMA weights in the modules (all EMA'd ones, or those of `names` that have one)."""
        with contextlib.ExitStack() as stack:
            for name in names or tuple(self.ema):
                if name in self.ema:  # a module without EMA keeps its own weights
                    stack.enter_context(self.ema[name].swapped_in(self.unwrap(name)))
            yield

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train until max_steps (or max_minutes); return the last logs plus how it ended.

        SIGTERM / SIGINT (in the main thread): the current step finishes, a checkpoint is written
        and SystemExit(143 / 130) is raised after one line saying where the run stopped.
        """
        acc = self.accelerator
        self._start = time.monotonic()
        lock = self._lock_run_folder()  # before anything in out_dir is touched
        try:
            with StopSignals(install=True, verbose=acc.is_main_process) as signals:
                self._signals = signals
                logs = self._fit()
        finally:
            self._signals = StopSignals(install=False)
            if lock is not None:
                lock.release()
            if hasattr(self.dataset, "report_skipped"):      # unreadable files met by this process's workers
                self.dataset.report_skipped()
        if logs["stopped"] in ("SIGTERM", "SIGINT"):
            if acc.is_main_process:
                print(f"stopped by {logs['stopped']} at step {self.step}: checkpoint {self.checkpoint}; "
                      "resume with the same command", file=sys.stderr, flush=True)
            raise SystemExit(128 + int(getattr(signal, logs["stopped"])))
        return logs

    def _fit(self) -> dict[str, Any]:
        cfg, acc = self.config, self.accelerator
        if acc.is_main_process:
            remove_stale_temp(cfg.out_dir)  # only now that the lock is ours: never a live run's
        acc.wait_for_everyone()
        self._resume()
        if acc.log_with:  # TensorBoard writes under out_dir/tensorboard/tokgen
            acc.init_trackers("tokgen", config=_flat_config(cfg),
                              init_kwargs={"wandb": {"name": Path(cfg.out_dir).resolve().name}})
        for module in self.modules.values():
            module.train()
        stopped = "max_steps"
        bar = self._progress_bar()
        batches = self._micro_batches()
        try:
            if self.step < cfg.max_steps and self._any_process(self._time_is_up())[0]:
                stopped = "max_minutes"
            while self.step < cfg.max_steps and stopped != "max_minutes":
                time_up = self._train_step(batches)
                self.step += 1
                bar.update(self._progress() - bar.n)
                signum = self._stop_signal()
                if signum:  # checkpoint now and stop: no hooks, a preempted job has seconds left
                    stopped = signal.Signals(signum).name
                    if self.step % cfg.log_every == 0:  # the line a straight run writes here
                        self._log(bar)
                    if self._last_saved != self.step:
                        self._save()
                    break
                stopped = "max_minutes" if time_up else stopped
                self._after_step(bar, last=time_up or self.step >= cfg.max_steps)
            if stopped not in ("SIGTERM", "SIGINT"):
                self._finish()
        finally:
            bar.close()
            for tracker in acc.trackers:  # not acc.end_training(): it destroys the process group
                tracker.finish()
            for module in self.modules.values():  # take accelerate's autocast wrapper off forward()
                acc.unwrap_model(module, keep_fp32_wrapper=False)._compiled_call_impl = None  # and --compile
        return {**self.last_logs, "step": self.step, "stopped": stopped, "checkpoint": str(self.checkpoint),
                "nonfinite_steps": self.nonfinite_total, "minutes": self._elapsed() / 60,
                "precision": self.precision.to_dict()}

    def _lock_run_folder(self) -> RunLock | None:
        """Take out_dir's run lock (the main process does; the others learn whether it could)."""
        acc, lock, error = self.accelerator, None, None
        if acc.is_main_process:
            try:
                lock = RunLock.acquire(self.config.out_dir, warn=lambda m: tqdm.write(m, file=sys.stderr))
            except RunLockedError as e:
                error = e
        if acc.num_processes > 1:
            message = broadcast_object_list([str(error) if error else None])[0]
            error = error or (RunLockedError(message) if message else None)
        if error is not None:
            raise error
        return lock

    def _stop_signal(self) -> int:
        """SIGTERM / SIGINT when the run should checkpoint and stop after this step, else 0.
        Under several processes: what they agreed on this step (every process stops at the same
        step even if only one got the signal, or one got it a moment later)."""
        if self.accelerator.num_processes > 1:
            return self._agreed_signal
        return self._signals.received or 0

    def _progress_bar(self) -> tqdm:
        """Steps out of max_steps; or, under a time budget, seconds out of max_minutes (a steps bar
        would show the max_steps total and an ETA that means nothing), with the step in the postfix."""
        cfg = self.config
        # redraw often on a terminal, rarely into a log file (CI, nohup), so logs stay readable
        common = dict(desc="train", dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0,
                      disable=not self.accelerator.is_main_process)
        if cfg.max_minutes > 0:
            return tqdm(total=cfg.max_minutes * 60, initial=self._progress(), unit="s",
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]", **common)
        return tqdm(total=cfg.max_steps, initial=self._progress(), **common)

    def _progress(self) -> float:
        """Where the bar stands: seconds of the time budget spent, or steps done without one."""
        budget = self.config.max_minutes * 60
        return min(self._elapsed(), budget) if budget > 0 else self.step

    def _after_step(self, bar, last: bool) -> None:
        cfg, step = self.config, self.step
        if step % cfg.log_every == 0 or last:
            self._log(bar)
        if cfg.sample_every and (step % cfg.sample_every == 0 or last) and hasattr(self.task, "on_interval"):
            self._in_hook_mode(self.task.on_interval, step)
        if cfg.eval_every and step % cfg.eval_every == 0 and not last:
            self._evaluate()
        if cfg.save_every and step % cfg.save_every == 0:
            self._save()

    def _finish(self) -> None:
        if hasattr(self.task, "evaluate") and self._last_eval != self.step:
            self._evaluate()
        if self._last_saved != self.step:
            self._save()

    def _train_step(self, batches) -> bool:
        """One optimizer step over grad_accum micro-batches; returns whether the time budget is spent.
        Losses and logs stay on the device; the one host read is the skip decision (_agree_on_step)."""
        acc, cfg = self.accelerator, self.config
        active: set[str] = set()
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        step_logs = _Window()
        for _ in range(cfg.grad_accum):
            batch = next(batches)
            with acc.accumulate(*self.modules.values()):
                with acc.autocast():
                    losses, logs = self.task.losses(batch, self.step)
                for name, loss in self._checked_losses(losses).items():
                    acc.backward(loss)  # scales the loss under fp16
                    active.add(name)
                tensors = [v.detach().float().to(self.device) for v in losses.values() if torch.is_tensor(v)]
                if tensors:
                    nonfinite |= ~torch.isfinite(torch.stack(tensors)).all()
            step_logs.add({f"loss/{n}": v for n, v in losses.items() if torch.is_tensor(v)})
            step_logs.add(logs or {})
        if not acc.sync_gradients:
            raise RuntimeError("gradient accumulation is out of step: another Accelerator was used meanwhile")
        names = [n for n in self.optimizers if n in active]
        if acc.scaler is None:
            # clip first (on the device; a skipped step's gradients are dropped anyway), so that a
            # non-finite loss and non-finite gradients are read in the same single host read
            norms = self._clip(names)
            bad_grads = (~torch.isfinite(torch.stack(list(norms.values()))).all() if norms
                         else torch.zeros((), dtype=torch.bool, device=self.device))
            nonfinite, bad_grads, time_up = self._agree_on_step(nonfinite, bad_grads)
        else:  # fp16: unscale only a step that will be taken (the scaler reads its own inf check)
            nonfinite, _, time_up = self._agree_on_step(nonfinite)
            norms, bad_grads = (self._clip(names) if not nonfinite else {}), False
        if nonfinite:
            self._skip_step("a non-finite loss", step_logs)
        elif bad_grads:
            self._skip_step("non-finite gradients", step_logs)
        else:
            self._optimizer_step(names, norms, step_logs)
        return time_up

    def _clip(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Each optimizer's gradient norm (clipped to grad_clip), through the Accelerator; under fp16
        every optimizer is unscaled first, with the same scale (tensors on the device, no sync)."""
        acc = self.accelerator
        if acc.scaler is not None and names:
            acc.unscale_gradients([self.optimizers[n] for n in names])
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        # Accelerator.clip_grad_norm_ unscales all its optimizers again (an error for those unscaled
        # already, and wrong for those that sit out): ours are unscaled above, so it must not.
        with setup.no_second_unscale(acc):
            return {n: acc.clip_grad_norm_(_params(self.optimizers[n]), max_norm) for n in names}

    def _checked_losses(self, losses: dict) -> dict[str, torch.Tensor]:
        """The losses to backpropagate: scalar tensors with a graph; None or 0 means 'sit out'."""
        unknown = set(losses) - set(self.optimizers)
        if unknown:
            raise ValueError(f"task.losses returned losses {sorted(unknown)} with no optimizer of that name; "
                             f"the optimizers are {sorted(self.optimizers)}")
        out = {}
        for name, loss in losses.items():
            if loss is None or (not torch.is_tensor(loss) and loss == 0):
                continue
            if not torch.is_tensor(loss) or loss.ndim != 0:
                raise ValueError(f"loss {name!r} must be a scalar tensor (or None/0 to skip), "
                                 f"got {loss!r:.80}: reduce it with .mean()")
            if not loss.requires_grad:
                if loss.item() == 0:
                    continue
                raise ValueError(f"loss {name!r} has no graph: was it computed under torch.no_grad() "
                                 "or from detached tensors?")
            out[name] = loss
        return out

    def _optimizer_step(self, names: list[str], norms: dict, step_logs: "_Window") -> None:
        scaler = self.accelerator.scaler
        stepped = dict.fromkeys(names, True)
        if scaler is not None and names:
            # Not AcceleratedOptimizer.step(): it calls scaler.update() after each optimizer, which
            # makes the scaler forget that the next ones were unscaled already (and may change the
            # scale in between). PyTorch's multi-optimizer AMP recipe: step each, update once.
            for n in names:
                scaler.step(self.optimizers[n].optimizer)
            scaler.update()
            finite = torch.isfinite(torch.stack(list(norms.values()))).tolist()  # the scaler synced already
            stepped = dict(zip(names, finite))
            self.scaler_skips += not all(finite)
        else:
            for n in names:
                self.optimizers[n].step()
        for n, scheduler in self.schedulers.items():
            if stepped.get(n, False):  # its optimizer stepped (was on, and not skipped by the scaler)
                scheduler.step()
        for n, average in self.ema.items():
            average.update(self.unwrap(n))
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.nonfinite_streak = 0
        step_logs.add({f"grad_norm/{n}": v for n, v in norms.items()})
        self._window.merge(step_logs)

    def _skip_step(self, why: str, step_logs: "_Window") -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.nonfinite_total += 1
        self.nonfinite_streak += 1
        values = {k: round(v, 4) for k, v in step_logs.means().items()}
        msg = f"step {self.step}: skipped ({why}; {self.nonfinite_streak} in a row): {values}"
        if self.nonfinite_streak >= self.config.max_nonfinite:
            raise NonFiniteError(
                f"stopping: {self.nonfinite_streak} non-finite steps in a row (max_nonfinite="
                f"{self.config.max_nonfinite}), the last at step {self.step} with {values}. Lower the "
                "learning rate, set grad_clip, or use bf16 instead of fp16; resume from the last "
                f"checkpoint in {self.config.out_dir}"
            )
        if self.accelerator.is_main_process:
            tqdm.write(msg)

    # ------------------------------------------------------------------ data
    def _micro_batches(self) -> Iterator[dict]:
        """Endless stream of this process's micro-batches, from the current data position on."""
        while True:
            for batch in self._loader(self.epoch, self.batch_in_epoch):
                self.batch_in_epoch += 1
                if self.batch_in_epoch == self.batches_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                yield send_to_device(batch, self.device, non_blocking=True)
            if self.batch_in_epoch != 0:  # the sampler ended early: it cannot, unless len(dataset) changed
                raise RuntimeError("the dataset's length changed during training")

    def _loader(self, epoch: int, start: int) -> DataLoader:
        acc, cfg = self.accelerator, self.config
        sampler = EpochBatchSampler(len(self.dataset), cfg.batch_size, acc.num_processes, acc.process_index,
                                    cfg.seed, epoch, start, cfg.shuffle)
        # The loader's own generator (not the global RNG) seeds the workers, so making a loader
        # mid-run (after a resume) draws nothing from the training RNG streams.
        g = torch.Generator().manual_seed(_derived_seed(cfg.seed, epoch, salt=1 + acc.process_index))
        if hasattr(self.dataset, "set_epoch"):       # augmentation seeded by (seed, epoch, index)
            self.dataset.set_epoch(epoch)
        workers = cfg.num_workers
        if workers is None:
            from tokgen.data import default_num_workers

            workers = default_num_workers(self.dataset, self.device, acc.num_processes)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=workers, generator=g,
                          pin_memory=self.device.type == "cuda", worker_init_fn=ignore_stop_signals,
                          collate_fn=getattr(self.task, "collate", None))

    # ------------------------------------------------------------------ logs, hooks, checkpoints
    def _log(self, bar) -> None:
        local = self._window.means()
        self._window = _Window()
        per_process = gather_object([local])  # dicts, so processes may log different keys
        values: dict[str, float] = {}
        for key in sorted({k for d in per_process for k in d}):
            seen = [d[key] for d in per_process if key in d]
            values[key] = sum(seen) / len(seen)
        for name, optimizer in self.optimizers.items():
            values[f"lr/{name}"] = optimizer.param_groups[0]["lr"]
        values.update(epoch=self.epoch, nonfinite_steps=self.nonfinite_total, minutes=self._elapsed() / 60)
        if self.accelerator.scaler is not None:
            values["loss_scale"] = self.accelerator.scaler.get_scale()
        self.last_logs = values
        self._write_logs(values)
        hidden = ("lr/", "grad_norm/", "epoch", "minutes", "nonfinite_steps")
        shown = {"step": str(self.step)} if self.config.max_minutes > 0 else {}
        shown.update({k.removeprefix("loss/"): f"{v:.4g}" for k, v in values.items() if not k.startswith(hidden)})
        bar.set_postfix(shown, refresh=False)

    def _write_logs(self, values: dict) -> None:
        if self.accelerator.log_with:
            self.accelerator.log(values, step=self.step)
        if self.accelerator.is_main_process:
            with open(Path(self.config.out_dir) / "log.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, **values}) + "\n")

    def _evaluate(self) -> None:
        self._last_eval = self.step
        if hasattr(self.task, "evaluate"):
            metrics = self._in_hook_mode(self.task.evaluate, self.step) or {}
            values = {f"eval/{k}": float(v) for k, v in metrics.items()}
            self.last_logs.update(values)
            self._write_logs(values)

    def _in_hook_mode(self, fn, *args):
        """Call a hook: no_grad, eval mode, EMA weights in, training RNG untouched afterwards."""
        modes = {n: m.training for n, m in self.modules.items()}
        rng = _rng_state()
        try:
            for module in self.modules.values():
                module.eval()
            with torch.no_grad(), self.ema_weights():
                return fn(*args)
        finally:
            for n, module in self.modules.items():
                module.train(modes[n])
            _set_rng_state(rng)

    def _save(self) -> None:
        self.checkpoint = save_checkpoint(self.accelerator, self.config.out_dir, self.step,
                                          self._trainer_state(), self.modules, self.ema)
        if self.accelerator.is_main_process:
            prune_checkpoints(self.config.out_dir, self.config.keep_last)
        self.accelerator.wait_for_everyone()
        self._last_saved = self.step

    def _trainer_state(self) -> dict:
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "global_batch": self.config.batch_size * self.accelerator.num_processes,
            "nonfinite_total": self.nonfinite_total, "nonfinite_streak": self.nonfinite_streak,
            "scaler_skips": self.scaler_skips, "elapsed_s": self._elapsed(),
            "modules": list(self.modules),  # model.safetensors, model_1.safetensors, ... in this order
            "optimizers": list(self.optimizers), "schedulers": list(self.schedulers),
            "ema": list(self.ema), "num_processes": self.accelerator.num_processes,
            "config": asdict(self.config), "precision": self.precision.to_dict(),
        }

    def _resume(self) -> None:
        """Load the newest usable checkpoint: a damaged one (a file missing, cut, emptied, changed,
        unreadable or not fitting) is named in a warning and the previous complete one is tried;
        with none left, a CheckpointError names every damaged file. Every process takes the same
        decision (the main process checks the files' sizes and hashes; each loads its own RNG state)."""
        cfg, acc = self.config, self.accelerator
        candidates, fallback = resume_candidates(cfg.resume, cfg.out_dir)
        allow = cfg.allow_inexact_resume
        rejected: list[tuple[Path, list]] = []
        for path in candidates:
            # the files against the sizes and hashes in COMPLETE, then trainer_state.json, then the
            # loads themselves; RNG damage alone is acceptable only with allow_inexact_resume
            damage = self._agreed_damage(lambda: verify_checkpoint(path) if acc.is_main_process else [])
            state = None
            if not damage or (allow and all(d.rng for d in damage)):
                state, more = self._agreed_load(path, read_only=True)
                damage += more
            if state is not None and not [d for d in damage if not d.rng]:
                self._check_fits(path, state)
                _, more = self._agreed_load(path, skip_rng=allow)
                damage += [d for d in more if d not in damage]
            if not damage or (allow and state is not None and all(d.rng for d in damage)):
                break
            rejected.append((path, damage))
            if fallback and path != candidates[-1]:
                self._warn(f"warning: not resuming from {path}: {_damage_text(damage)}; "
                           "trying the previous complete checkpoint")
        else:
            if rejected:
                raise CheckpointError(_refusal(cfg, rejected))
            return
        if damage:
            self._warn(f"warning: resuming from {path} without its RNG state ({_damage_text(damage)}): "
                       "allow_inexact_resume is set, so the run goes on, but it no longer matches a "
                       "straight run bit for bit")
        self._restore_position(path, state)
        if rejected and acc.is_main_process:
            for bad, _ in rejected:
                aside = set_aside_damaged(bad)
                self._warn(f"warning: set the damaged {bad.name} aside as {aside}")
        acc.wait_for_everyone()

    def _agreed_damage(self, check) -> list:
        """Run `check()` (-> list of Damage) on every process; all get everyone's damage."""
        try:
            found = list(check())
        except DamagedCheckpoint as e:
            found = [e.damage]
        if self.accelerator.num_processes > 1:
            found = [d for part in gather_object([found]) for d in part]
        return found

    def _agreed_load(self, path: Path, read_only: bool = False, skip_rng: bool = False) -> tuple[dict | None, list]:
        """Read trainer_state.json (read_only) or load the whole checkpoint, on every process;
        returns the state and the damage found anywhere (with skip_rng, the RNG states skipped)."""
        state, skipped = None, []

        def load():
            nonlocal state
            if read_only:
                state = read_trainer_state(path)
            else:
                state = load_checkpoint(self.accelerator, path, self.ema, modules=self.modules,
                                        optimizers=self.optimizers, schedulers=self.schedulers,
                                        skip_rng=skip_rng, skipped=skipped)
            return skipped

        damage = self._agreed_damage(load)
        return state, damage

    def _check_fits(self, path: Path, state: dict) -> None:
        """A checkpoint of another task or EMA setting is no damage: refuse at once."""
        mine = {"modules": self.modules, "optimizers": self.optimizers, "schedulers": self.schedulers}
        if self.ema:  # turning EMA off on resume is fine; the saved EMA is then ignored
            mine["ema"] = self.ema
        for key, names in mine.items():
            if state.get(key) != list(names):
                raise ValueError(f"{path} was written with {key} {state.get(key)}, this run has {list(names)}: "
                                 "resume with the same task and EMA settings (or resume=None, a new out_dir)")

    def _restore_position(self, path: Path, state: dict) -> None:
        self.accelerator.step = 0  # checkpoints are taken at optimizer-step boundaries
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        global_batch = self.config.batch_size * self.accelerator.num_processes
        if state["global_batch"] != global_batch:  # keep the position in items, as near as batches allow
            self.batch_in_epoch = state["batch_in_epoch"] * state["global_batch"] // global_batch
            if self.batch_in_epoch >= self.batches_per_epoch:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.accelerator.print(f"global batch changed from {state['global_batch']} to {global_batch}: "
                                   "the data position is approximate")
        self.nonfinite_total, self.nonfinite_streak = state["nonfinite_total"], state["nonfinite_streak"]
        self.scaler_skips, self._elapsed_before = state["scaler_skips"], state["elapsed_s"]
        self._start, self._last_saved, self.checkpoint = time.monotonic(), self.step, path
        if self.accelerator.is_main_process:
            _truncate_log(Path(self.config.out_dir) / "log.jsonl", self.step, self._warn)
        self.accelerator.print(f"resumed from {path} at step {self.step}")

    def _warn(self, message: str) -> None:
        if self.accelerator.is_main_process:
            tqdm.write(message, file=sys.stderr)

    # ------------------------------------------------------------------ small things
    def _prepare_optimizers(self, specs: dict) -> tuple[dict, dict]:
        if not isinstance(specs, dict) or not specs:
            raise ValueError("configure_optimizers must return a non-empty dict "
                             "{name: optimizer | (optimizer, scheduler)}")
        optimizers, schedulers = {}, {}
        for name in sorted(specs):
            spec = specs[name]
            optimizer, scheduler = spec if isinstance(spec, (tuple, list)) else (spec, None)
            optimizers[name] = self.accelerator.prepare(optimizer)
            if scheduler is not None:
                schedulers[name] = self.accelerator.prepare(scheduler)
        return optimizers, schedulers

    def _elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._start

    def _time_is_up(self) -> bool:
        return self.config.max_minutes > 0 and self._elapsed() >= self.config.max_minutes * 60

    def time_fraction(self) -> float:
        """Share of the wall-time budget spent at the last step, in [0, 1] (0 without --max-minutes);
        the same number on every process. Learning-rate schedules follow it (train/schedule.py)."""
        return self._time_fraction

    def _agree_on_step(self, nonfinite: torch.Tensor, bad_grads: torch.Tensor | None = None
                       ) -> tuple[bool, bool, bool]:
        """The step's one host read (and one collective under several processes): every process
        must agree to skip a step (a non-finite loss anywhere; non-finite gradients, which DDP made
        the same everywhere) or to stop (time up anywhere), and on the time fraction (the mean over
        processes), so that their learning rates stay identical. Returns (non-finite loss,
        non-finite gradients, time up)."""
        budget = self.config.max_minutes * 60
        fraction = self._elapsed() / budget if budget > 0 else 0.0
        received = self._signals.received
        host = [float(self._time_is_up()), fraction, float(received == signal.SIGTERM),
                float(received == signal.SIGINT)]
        on_device = [nonfinite, bad_grads if bad_grads is not None else torch.zeros_like(nonfinite)]
        if self.accelerator.num_processes > 1:
            flags = torch.cat([torch.stack(on_device).float(), torch.tensor(host, device=self.device)])
            flags = self.accelerator.reduce(flags, reduction="sum").tolist()
            flags[3] /= self.accelerator.num_processes
        else:
            flags = [float(v) for v in torch.stack(on_device).tolist()] + host
        self._time_fraction = min(1.0, flags[3])
        # SIGTERM (a preemption) wins over SIGINT if the processes got different ones
        self._agreed_signal = signal.SIGTERM if flags[4] > 0 else signal.SIGINT if flags[5] > 0 else 0
        return flags[0] > 0, flags[1] > 0, flags[2] > 0

    def _any_process(self, *flags: bool) -> list[bool]:
        """For each flag: is it set on any process? (one all-reduce; none on a single process)"""
        if self.accelerator.num_processes == 1:
            return [bool(f) for f in flags]
        t = torch.tensor([float(f) for f in flags], device=self.device)
        return [bool(v > 0) for v in self.accelerator.reduce(t, reduction="sum").tolist()]


class _Window:
    """Running sums of logged values. Tensors stay on the device, summed in float64 (float32 on
    MPS, which has no float64) until `means()` reads them all at once (one host read per device):
    the same numbers as summing their .item() values in Python."""

    def __init__(self):
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict) -> None:
        for key, v in values.items():
            if v is None:
                continue
            if torch.is_tensor(v):
                v = v.detach()
                v = v.float() if v.device.type == "mps" else v.double()
            else:
                v = float(v)
            self.sums[key] = self.sums.get(key, 0.0) + v
            self.counts[key] = self.counts.get(key, 0) + 1

    def merge(self, other: "_Window") -> None:
        for key, v in other.sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + v
            self.counts[key] = self.counts.get(key, 0) + other.counts[key]

    def means(self) -> dict[str, float]:
        sums = dict(self.sums)
        by_device: dict[torch.device, list[str]] = {}
        for key, v in sums.items():
            if torch.is_tensor(v):
                by_device.setdefault(v.device, []).append(key)
        for keys in by_device.values():
            read = torch.stack([sums[k].reshape(()) for k in keys]).tolist()
            sums.update(zip(keys, read))
        return {k: float(v) / self.counts[k] for k, v in sums.items()}


_TRAIN_INTS = ("max_steps", "batch_size", "grad_accum", "save_every", "keep_last", "log_every", "sample_every",
               "eval_every", "seed", "num_workers", "max_nonfinite")


def check_train_config(train: TrainConfig) -> None:
    """A TrainConfig: the budget, the batch, the learning rate and every interval in range; a
    ConfigValueError tagged with the field (the command line names its flag)."""
    check_ranges(train, [
        ("max_steps", at_least(1), "the step budget must be >= 1"),
        ("max_minutes", at_least(0), "the wall-time cap must be >= 0 minutes (0 = none)"),
        ("batch_size", at_least(1), "the batch size must be >= 1"),
        ("grad_accum", at_least(1), "gradient accumulation must be >= 1 micro-batch"),
        ("lr", positive, "the learning rate must be a finite number > 0 (e.g. 3e-4)"),
        ("grad_clip", at_least(0), "the gradient-norm clip must be >= 0 (0 = no clipping)"),
        ("ema_decay", in_range(0, 1, high_open=True), "the EMA decay must be in [0, 1) (0 = off; e.g. 0.999)"),
        ("save_every", at_least(0), "must be >= 0 steps (0 = only at the end)"),
        ("keep_last", at_least(0), "must be >= 0 checkpoints (0 = keep all)"),
        ("log_every", at_least(1), "must be >= 1 step"),
        ("sample_every", at_least(0), "must be >= 0 steps (0 = never)"),
        ("eval_every", at_least(0), "must be >= 0 steps (0 = never)"),
        ("seed", at_least(0), "the seed must be a whole number >= 0"),
        ("num_workers", at_least(0), "must be >= 0 DataLoader workers"),
        ("max_nonfinite", at_least(1), "must be >= 1 step"),
    ], integers=_TRAIN_INTS, optional=("num_workers",))
    if train.mixed_precision not in CHOICES:
        raise ConfigValueError("mixed_precision", train.mixed_precision, f"must be one of {', '.join(CHOICES)}")
    if not isinstance(train.ema_modules, (tuple, list)) or not all(isinstance(m, str) for m in train.ema_modules):
        raise ConfigValueError("ema_modules", train.ema_modules, 'must be a list of module names, e.g. ["generator"]')



def _check_modules(modules) -> None:
    if not isinstance(modules, dict) or not modules:
        raise ValueError("task.trainable_modules() must return a non-empty dict {name: nn.Module}")
    for name, m in modules.items():
        if not isinstance(m, nn.Module):
            raise ValueError(f"trainable module {name!r} is a {type(m).__name__}, not an nn.Module")
        if not any(p.requires_grad for p in m.parameters()):
            raise ValueError(f"trainable module {name!r} has no trainable parameters: "
                             "keep frozen nets out of trainable_modules()")


def _params(optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _derived_seed(seed: int, epoch: int, salt: int) -> int:
    return ((seed * 1_000_003 + epoch) * 1_009 + salt) % (2**63)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _flat_config(config: TrainConfig) -> dict:
    """TrainConfig as TensorBoard hparams accept it (scalars and strings only)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in asdict(config).items()}


def _truncate_log(path: Path, step: int, warn=None) -> None:
    """Drop the lines a killed run wrote after the checkpoint we resume from, and lines that are
    not JSON (a run killed while writing one leaves it torn): those are named in a warning."""
    if not path.is_file():
        return
    kept, torn = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except ValueError:
            torn.append(number)
            continue
        if entry.get("step", 0) <= step:
            kept.append(line)
    if torn and warn is not None:
        warn(f"warning: {path}: skipped {len(torn)} torn line(s) (line {', '.join(map(str, torn[:5]))}"
             f"{', ...' if len(torn) > 5 else ''}): a run was cut off while writing them")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def _damage_text(damage: list) -> str:
    return "; ".join(str(d) for d in damage)


def _refusal(config: TrainConfig, rejected: list) -> str:
    lines = "; ".join(f"{path.name}: {_damage_text(damage)}" for path, damage in rejected)
    rng_only = any(all(d.rng for d in damage) for _, damage in rejected)
    hint = (" Or pass allow_inexact_resume=True (--allow-inexact-resume true) to resume without the RNG "
            "state: the run then no longer matches a straight run bit for bit." if rng_only else "")
    where = (f"resume={config.resume!r}" if config.resume != "auto"
             else f"{config.out_dir}: no complete checkpoint there can be loaded")
    return (f"cannot resume ({where}): {lines}. Restore the damaged files, resume from another "
            f"checkpoint-<step> folder, or start afresh with resume=None or a new out_dir.{hint}")
