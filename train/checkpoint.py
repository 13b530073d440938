"""Atomic training checkpoints and the search for the latest complete one.

A checkpoint is a folder `<out_dir>/checkpoint-<step>` holding what `Accelerator.save_state`
writes (model weights as safetensors, optimizers, schedulers, the fp16 grad scaler, every
process's RNG states) plus:

    ema.safetensors      the EMA weights, one `<module>.<parameter>` tensor each (if EMA is on)
    trainer_state.json   the step, the data position, counters (see `Trainer._trainer_state`)
    COMPLETE             written last: a folder without it is never resumed from

It is written into `<out_dir>/.tmp-checkpoint-<step>`, flushed to disk, marked complete and only
then renamed with `os.replace`, so a run killed mid-write leaves a temporary folder (ignored and
removed later) and never a half-written `checkpoint-<step>`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .ema import EMA

COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
_TMP_PREFIX = ".tmp-checkpoint-"
_NAME = re.compile(r"^checkpoint-(\d+)$")


class NonFiniteError(FloatingPointError):
    """Training produced NaN/inf: weights that must not be saved, or too many bad steps in a row."""


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / f"checkpoint-{step}"


def is_complete(path: str | os.PathLike) -> bool:
    return (Path(path) / COMPLETE_MARKER).is_file()


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete checkpoints in `out_dir` as (step, path), oldest first."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = []
    for entry in out.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_dir() and is_complete(entry):
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def resolve_resume(resume: str | None, out_dir: str | os.PathLike) -> Path | None:
    """`resume` from a TrainConfig -> the checkpoint folder to load, or None to start afresh.

    "auto": the latest complete checkpoint in out_dir (None if there is none);
    None / "" / "none": start afresh; anything else: a checkpoint folder, which must be complete.
    """
    if resume is None or str(resume).lower() in ("", "none", "no", "false"):
        return None
    if resume == "auto":
        return latest_checkpoint(out_dir)
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"resume={resume!r}: no such checkpoint folder; "
                                "use resume='auto' or a checkpoint-<step> path")
    if not is_complete(path):
        raise ValueError(
            f"resume={resume!r} is an incomplete checkpoint (no {COMPLETE_MARKER} file: the run was "
            "cut off while writing it); resume from an earlier checkpoint-<step> or use resume='auto'"
        )
    return path


def check_finite(named_tensors, what: str) -> None:
    """Raise NonFiniteError naming the tensors of `named_tensors` that hold NaN or inf."""
    named = [(n, t) for n, t in named_tensors if t.is_floating_point()]
    if not named:
        return
    finite = torch.stack([torch.isfinite(t).all() for _, t in named])
    if bool(finite.all()):
        return
    bad = [n for (n, _), ok in zip(named, finite.tolist()) if not ok]
    raise NonFiniteError(
        f"refusing to save a checkpoint: {what} has non-finite values in {len(bad)} tensor(s) "
        f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); the last good checkpoint is "
        "kept: lower the learning rate, set grad_clip, or use bf16 instead of fp16, and resume from it"
    )


def save_checkpoint(accelerator, out_dir, step: int, state: dict, modules: dict, ema: dict[str, EMA]) -> Path:
    """Write checkpoint-<step> atomically; every process must call this (save_state is collective).

    `modules` (name -> prepared module) and `ema` are checked for NaN/inf first, on every process,
    so that all of them raise together instead of leaving the others waiting.
    """
    for name, module in modules.items():
        check_finite(accelerator.unwrap_model(module).state_dict().items(), f"module {name!r}")
    for name, average in ema.items():
        check_finite(average.shadow.items(), f"the EMA of {name!r}")
    out_dir, final = Path(out_dir), checkpoint_path(out_dir, step)
    tmp = out_dir / f"{_TMP_PREFIX}{step}"
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process has written its RNG state into tmp
    if accelerator.is_main_process:
        if ema:
            tensors = {f"{name}.{k}": v.detach().cpu().contiguous()
                       for name, average in ema.items() for k, v in average.shadow.items()}
            meta = {f"num_updates.{name}": str(average.num_updates) for name, average in ema.items()}
            save_file(tensors, str(tmp / EMA_FILE), metadata=meta)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, default=str))
        _fsync_tree(tmp)
        _write_marker(tmp, step)
        _replace_dir(tmp, final)
    accelerator.wait_for_everyone()
    return final


def read_trainer_state(path) -> dict:
    """The trainer_state.json of a complete checkpoint (read it before loading, to check it fits)."""
    path = Path(path)
    if not is_complete(path):
        raise ValueError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER} file)")
    return json.loads((path / STATE_FILE).read_text())


def load_checkpoint(accelerator, path, ema: dict[str, EMA]) -> dict:
    """Restore what save_checkpoint wrote (in place) and return the trainer state dict."""
    path = Path(path)
    state = read_trainer_state(path)
    accelerator.load_state(str(path))
    if ema:
        if not (path / EMA_FILE).is_file():
            raise FileNotFoundError(f"{path} has no {EMA_FILE}, but ema_decay > 0: "
                                    "resume with ema_decay=0 or from a run that had EMA")
        tensors = load_file(str(path / EMA_FILE))
        with safe_open(str(path / EMA_FILE), framework="pt") as f:
            meta = f.metadata() or {}
        for name, average in ema.items():
            prefix = f"{name}."
            shadow = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            average.load_state_dict({"num_updates": meta[f"num_updates.{name}"], "shadow": shadow})
    return state


def prune_checkpoints(out_dir, keep_last: int) -> None:
    """Delete all but the `keep_last` newest complete checkpoints (keep_last <= 0 keeps all)."""
    if keep_last <= 0:
        return
    for _, path in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_temp(out_dir) -> None:
    """Remove temporary folders left by a run that was killed while writing a checkpoint."""
    out = Path(out_dir)
    if out.is_dir():
        for entry in out.iterdir():
            if entry.name.startswith(_TMP_PREFIX) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


def _write_marker(folder: Path, step: int) -> None:
    with open(folder / COMPLETE_MARKER, "w") as f:
        json.dump({"step": step}, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_tree(folder: Path) -> None:
    """Flush the files to disk before the marker says they are there."""
    for file in folder.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _replace_dir(tmp: Path, final: Path) -> None:
    # os.replace cannot overwrite a non-empty folder: move an old one (same step) aside first.
    old = None
    if final.exists():
        old = final.with_name(f"{_TMP_PREFIX}old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    try:  # make the rename itself durable
        fd = os.open(final.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass
