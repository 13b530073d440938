"""How the training loop sets Hugging Face Accelerate up: the precision, the trackers, the
Accelerator itself, and what it refuses.

Accelerate as users configure it: with mixed_precision left at "auto", an ACCELERATE_MIXED_PRECISION
that `accelerate launch` (its --mixed_precision flag or `accelerate config`'s file) set is used; an
explicit mixed_precision (--mixed-precision) wins over both.  Several processes agree on the main
process's choice.  FSDP and DeepSpeed are refused before training (the EMA and checkpoint code need
whole parameters on each process): use DDP.  Trackers: `report_to` (Accelerate's log_with).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import (
    DistributedType,
    GradientAccumulationPlugin,
    LoggerType,
    ProjectConfiguration,
    broadcast_object_list,
    is_tensorboard_available,
    parse_flag_from_env,
)
from torch import nn

from tokgen.errors import ConfigValueError

from .precision import CHOICES, Choice, resolve_precision

if TYPE_CHECKING:  # the engine imports this module: no cycle at runtime
    from .engine import TrainConfig


PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"  # set by `accelerate launch` (its flag, or the config file)


def requested_precision(configured: str) -> tuple[str, str, str]:
    """(the precision to resolve, where that came from, the flag to name in messages): an explicit
    mixed_precision wins; "auto" defers to ACCELERATE_MIXED_PRECISION where that is set, and
    otherwise to the device's choice (train/precision.py)."""
    env = os.environ.get(PRECISION_ENV, "").strip()
    if configured != "auto":
        return configured, "mixed_precision (--mixed-precision)", "--mixed-precision"
    if not env:
        return "auto", "auto: the device's choice", "--mixed-precision"
    if env.lower() not in CHOICES:
        raise ConfigValueError("mixed_precision", f"{PRECISION_ENV}={env}",
                               f"tokgen trains in one of {', '.join(c for c in CHOICES if c != 'auto')}: change "
                               "`accelerate launch --mixed_precision` (or `accelerate config`), or pass "
                               "--mixed-precision bf16|fp16|fp32, which wins over it")
    return env, f"{PRECISION_ENV}={env} (accelerate launch / accelerate config)", PRECISION_ENV


def agreed_precision(requested: str, cpu: bool) -> Choice:
    """The precision for accelerate's device, chosen before the Accelerator is built (it takes the
    choice). Under several processes the main process's choice is everyone's: each process's
    probe could time differently, and the processes must autocast alike."""
    _allow_new_device(cpu)
    state = PartialState(cpu=cpu)
    requested, source, flag = requested_precision(requested)
    choice = dataclasses.replace(resolve_precision(requested, state.device, flag=flag), source=source)
    return broadcast_object_list([choice])[0] if state.num_processes > 1 else choice


def trackers(config: "TrainConfig") -> list[str]:
    """Accelerate's log_with for `config.report_to`: "auto" keeps TensorBoard when it is installed
    (and `tensorboard` is true), quietly nothing otherwise; a tracker named explicitly must be
    installed (a ConfigValueError names the package to install)."""
    value = str(config.report_to).strip().lower()
    if value == "auto":
        return ["tensorboard"] if config.tensorboard and is_tensorboard_available() else []
    if value in ("none", ""):
        return []
    names = [n.strip() for n in value.split(",") if n.strip()]
    known = [t for t in LoggerType.list()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigValueError("report_to", config.report_to,
                               f"unknown tracker {', '.join(unknown)}: choose auto, none, or from {', '.join(known)}")
    if "all" in names:
        return ["all"]  # every installed tracker (accelerate's choice)
    import accelerate.utils as accelerate_utils

    missing = [n for n in names if not getattr(accelerate_utils, f"is_{n}_available")()]
    if missing:
        raise ConfigValueError("report_to", config.report_to,
                               f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
                               f"`pip install {' '.join(missing)}`, "
                               "or leave it out (--report-to none)")
    return names


def make_accelerator(config: "TrainConfig", cpu: bool, mixed_precision: str, trackers: list[str]) -> Accelerator:
    _allow_new_precision(mixed_precision)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=config.find_unused_parameters)]
    return Accelerator(
        mixed_precision=mixed_precision,
        # sync_with_dataloader=False: a step is always grad_accum micro-batches, epoch end or not
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=config.grad_accum,
                                                                sync_with_dataloader=False),
        # schedulers step once per optimizer step, not once per process as accelerate does by default
        step_scheduler_with_optimizer=False,
        cpu=cpu,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=config.out_dir,
                                            logging_dir=str(Path(config.out_dir) / "tensorboard")),
        kwargs_handlers=handlers,
    )


_SHARDED_FIX = ("tokgen's EMA weights and checkpoints need every parameter whole on each process: train with "
                "DDP instead (`accelerate launch --multi_gpu`, or `accelerate config` with multi-GPU and no "
                "FSDP/DeepSpeed)")


def refuse_sharding_from_env() -> None:
    """FSDP / DeepSpeed asked for by `accelerate launch --use_fsdp / --use_deepspeed` (or its config
    file): refused before any Accelerator is built (DeepSpeed's would need the package)."""
    for env, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if parse_flag_from_env(env):
            raise ValueError(f"{name} is not supported ({env} is set, by accelerate launch or its config): "
                             f"{_SHARDED_FIX}")


def refuse_sharding(distributed_type) -> None:
    if distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ValueError(f"accelerate's distributed type is {distributed_type.value}, which tokgen does not "
                         f"support: {_SHARDED_FIX}")


@contextlib.contextmanager
def no_second_unscale(accelerator: Accelerator):
    """Accelerator.clip_grad_norm_ with its unscale_gradients() call turned off (the loop has
    unscaled the optimizers that step, once, itself)."""
    accelerator.unscale_gradients = lambda optimizer=None: None
    try:
        yield
    finally:
        del accelerator.unscale_gradients


def compile_modules(modules: dict[str, nn.Module], accelerator: Accelerator) -> None:
    """torch.compile each trained module's forward in place (nn.Module.compile): parameter names,
    state dicts, the DDP wrapper and checkpoints stay as they are; fit() takes it off at the end."""
    if not hasattr(torch, "compile"):
        raise ValueError("compile=True needs torch.compile (PyTorch >= 2.0): upgrade torch or leave --compile off")
    for module in modules.values():
        accelerator.unwrap_model(module).compile()


# A second Trainer in one program (a tokenizer, then generators) may use another device or
# precision: accelerate keeps them in process-wide singletons that silently ignore (device) or
# refuse (precision) a change, so those are reset first. The process group, if any, is kept.
def _allow_new_device(cpu: bool) -> None:
    partial = PartialState._shared_state
    if partial and partial.get("_cpu") != cpu and partial.get("num_processes", 1) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def _allow_new_precision(mixed_precision: str) -> None:
    full = AcceleratorState._shared_state
    if full and full.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def cpu_only_multiprocess() -> bool:
    """Launched as several processes on a machine without GPUs: accelerate needs cpu=True to use
    gloo, otherwise each process silently trains alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    has_accelerator = getattr(torch, "accelerator", None)
    return not (has_accelerator.is_available() if has_accelerator else torch.cuda.is_available())
