"""Atomic training checkpoints and the search for the latest complete one.

A checkpoint is a folder `<out_dir>/checkpoint-<step>` holding what `Accelerator.save_state`
writes (model weights as safetensors, optimizers, schedulers, the fp16 grad scaler, every
process's RNG states) plus:

    ema.safetensors      the EMA weights, one `<module>.<parameter>` tensor each (if EMA is on)
    trainer_state.json   the step, the data position, counters (see `Trainer._trainer_state`)
    COMPLETE             written last: a folder without it is never resumed from. It lists every
                         other file with its size and SHA-256, so damage found later (a truncated,
                         emptied, missing or replaced file) is recognised before anything is loaded

It is written into `<out_dir>/.tmp-checkpoint-<step>`, flushed to disk, marked complete and only
then renamed with `os.replace`, so a run killed mid-write leaves a temporary folder (ignored and
removed later) and never a half-written `checkpoint-<step>`.

Loading (`load_checkpoint`) reads every file itself, pickles only with `torch.load(weights_only=True)`
(whatever accelerate's version), and raises `DamagedCheckpoint` naming the first file that is
missing, unreadable or does not fit; the engine then falls back to the previous complete
checkpoint, or refuses with a `CheckpointError` naming the files. A missing or unreadable RNG state
is damage too (a resume without it is not exact), unless the caller accepts an inexact resume.

One run writes to a run folder at a time: `RunLock` (a `run.lock` file created with O_EXCL holding
the pid and host; a lock whose process is gone is taken over).
"""
from __future__ import annotations

import codecs
import json
import os
import random
import re
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file

from tokgen.errors import UsageError
from tokgen.io import file_sha256

from .ema import EMA

COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
LOCK_FILE = "run.lock"
RNG_PREFIX = "random_states_"  # accelerate's random_states_<process>.pkl
_TMP_PREFIX = ".tmp-checkpoint-"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_DAMAGED_SUFFIX = ".damaged"


class CheckpointError(UsageError):
    """No checkpoint can be resumed from: the message names each one tried and its damaged file."""


class RunLockedError(UsageError):
    """Another live run holds the run folder's lock."""


@dataclass(frozen=True)
class Damage:
    """What is wrong with one checkpoint: the file (a path) and why; `rng` when it is an RNG state."""

    file: str
    reason: str
    rng: bool = False

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class DamagedCheckpoint(Exception):
    """A checkpoint file is missing, unreadable or does not fit (`damage` says which and why)."""

    def __init__(self, damage: Damage):
        super().__init__(str(damage))
        self.damage = damage


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


def resume_candidates(resume: str | None, out_dir: str | os.PathLike) -> tuple[list[Path], bool]:
    """The checkpoints to try, newest first, and whether falling back to older ones is allowed.

    resume="auto": every complete checkpoint in out_dir (fallback allowed); a path: only that one.
    """
    if resume == "auto":
        return [p for _, p in reversed(list_checkpoints(out_dir))], True
    path = resolve_resume(resume, out_dir)
    return ([path] if path is not None else []), False


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
    file = path / STATE_FILE
    try:
        state = json.loads(file.read_text())
    except FileNotFoundError:
        raise DamagedCheckpoint(Damage(str(file), "missing")) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedCheckpoint(Damage(str(file), f"unreadable ({_short(e)})")) from None
    missing = [k for k in _STATE_KEYS if k not in state] if isinstance(state, dict) else ["step"]
    if missing:
        raise DamagedCheckpoint(Damage(str(file), f"not a trainer state (no {', '.join(map(repr, missing))})"))
    return state


# what the engine reads back from trainer_state.json (see Trainer._trainer_state)
_STATE_KEYS = ("step", "epoch", "batch_in_epoch", "global_batch", "nonfinite_total", "nonfinite_streak",
               "scaler_skips", "elapsed_s", "modules", "optimizers", "schedulers", "ema")


def verify_checkpoint(path) -> list[Damage]:
    """Check every file against the sizes and SHA-256 hashes that the COMPLETE marker lists.

    Returns the damage found (empty when all is well). A marker written before markers listed
    files (`{"step": N}` only) checks nothing here: damage then shows when the files are loaded.
    """
    path = Path(path)
    marker = path / COMPLETE_MARKER
    try:
        listing = json.loads(marker.read_text())
        files = listing.get("files") if isinstance(listing, dict) else None
        if files is not None and not isinstance(files, dict):
            raise ValueError("'files' is not a mapping")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return [Damage(str(marker), f"unreadable ({_short(e)})")]
    if files is None:
        return []
    found = []
    for name, expected in sorted(files.items()):
        file = path / name
        rng = _is_rng_file(name)
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            found.append(Damage(str(file), "missing", rng))
            continue
        except OSError as e:
            found.append(Damage(str(file), f"unreadable ({_short(e)})", rng))
            continue
        if size != expected["size"]:
            what = "empty" if size == 0 else "truncated" if size < expected["size"] else "too long"
            found.append(Damage(str(file), f"{what} ({size} bytes, {expected['size']} were written)", rng))
        elif "sha256" in expected and file_sha256(file) != expected["sha256"]:
            found.append(Damage(str(file), "its contents changed since it was written (SHA-256 differs)", rng))
    return found


def load_checkpoint(accelerator, path, ema: dict[str, EMA], *, modules: dict | None = None,
                    optimizers: dict | None = None, schedulers: dict | None = None,
                    skip_rng: bool = False, skipped: list | None = None) -> dict:
    """Restore what save_checkpoint wrote (in place) and return the trainer state dict.

    `modules`, `optimizers`, `schedulers`: name -> prepared object, in the order they were prepared
    (model.safetensors, model_1.safetensors, ... follow it); None: accelerate's own lists.
    Every file is read here (not by `Accelerator.load_state`): pickles only with weights_only=True,
    and any failure raises DamagedCheckpoint naming the file. `skip_rng`: keep this process's RNG
    streams as they are when its RNG state file is missing or unreadable (an inexact resume), and
    append that Damage to `skipped`.
    Each process loads its own RNG state; a process the checkpoint had no state for (the run had
    fewer processes) keeps its seeded streams.
    """
    path = Path(path)
    state = read_trainer_state(path)
    models = ([accelerator.unwrap_model(m) for m in modules.values()] if modules is not None
              else list(accelerator._models))
    optimizers = list(optimizers.values()) if optimizers is not None else list(accelerator._optimizers)
    schedulers = list(schedulers.values()) if schedulers is not None else list(accelerator._schedulers)
    # as accelerate maps them: onto the CPU, or straight onto the device under several processes
    device = accelerator.device if accelerator.num_processes > 1 and accelerator.device.type != "cpu" else "cpu"

    for i, model in enumerate(models):
        file = path / f"model{'' if i == 0 else f'_{i}'}.safetensors"
        with _naming(file, fit="the model"):
            load_model(model, str(file), strict=True, device=str(device))
    for i, optimizer in enumerate(optimizers):
        file = path / f"optimizer{'' if i == 0 else f'_{i}'}.bin"
        loaded = _safe_load(file, map_location=device)
        with _naming(file, fit="the optimizer"):
            optimizer.load_state_dict(loaded)
    for i, scheduler in enumerate(schedulers):
        file = path / f"scheduler{'' if i == 0 else f'_{i}'}.bin"
        loaded = _safe_load(file)
        with _naming(file, fit="the learning-rate scheduler"):
            scheduler.load_state_dict(loaded)
    if accelerator.scaler is not None:
        file = path / "scaler.pt"
        loaded = _safe_load(file)
        with _naming(file, fit="the fp16 gradient scaler"):
            accelerator.scaler.load_state_dict(loaded)
    if ema:
        file = path / EMA_FILE
        if not file.is_file():
            raise DamagedCheckpoint(Damage(str(file), "missing (ema_decay > 0; the run that wrote it "
                                                      "had EMA: its trainer_state.json says so)"))
        with _naming(file, fit="the EMA of the model"):
            tensors = load_file(str(file))
            with safe_open(str(file), framework="pt") as f:
                meta = f.metadata() or {}
            for name, average in ema.items():
                prefix = f"{name}."
                shadow = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                average.load_state_dict({"num_updates": meta[f"num_updates.{name}"], "shadow": shadow})
    process = accelerator.process_index
    if process < int(state.get("num_processes", 1)):
        file = path / f"{RNG_PREFIX}{process}.pkl"
        try:
            _set_rng_states(file, _safe_load(file, rng=True))
        except DamagedCheckpoint as e:
            if not skip_rng:
                raise
            if skipped is not None:
                skipped.append(e.damage)
    return state


def _set_rng_states(file: Path, states) -> None:
    """Put back what accelerate's save_state wrote into random_states_<process>.pkl."""
    try:
        random.setstate(states["random_state"])
        np.random.set_state(states["numpy_random_seed"])
        torch.set_rng_state(states["torch_manual_seed"])
        if "torch_cuda_manual_seed" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["torch_cuda_manual_seed"])
    except Exception as e:  # noqa: BLE001 - any failure means the file is no usable RNG state
        raise DamagedCheckpoint(Damage(str(file), f"not an RNG state ({_short(e)})", rng=True)) from None


def _safe_load(file: Path, map_location="cpu", rng: bool = False):
    """torch.load with weights_only=True (tensors, numbers, strings, containers, the numpy arrays
    of an RNG state; never arbitrary objects): a DamagedCheckpoint naming `file` if it fails."""
    if not hasattr(torch.serialization, "add_safe_globals"):
        raise RuntimeError(f"resuming needs torch >= 2.4 (weights_only loads of RNG states); this is "
                           f"torch {torch.__version__}: upgrade it")
    if not file.is_file():
        raise DamagedCheckpoint(Damage(str(file), "missing", rng))
    try:
        with _numpy_rng_globals():
            return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, wrong format, an unsafe pickle, ...
        raise DamagedCheckpoint(Damage(str(file), f"unreadable ({_short(e)})", rng)) from None


_NUMPY_RNG_GLOBALS = [getattr(np, "_core", None) and np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                      codecs.encode]
if not _NUMPY_RNG_GLOBALS[0]:
    _NUMPY_RNG_GLOBALS[0] = np.core.multiarray._reconstruct
if hasattr(np, "dtypes"):  # numpy >= 1.25 pickles a dtype through its class
    _NUMPY_RNG_GLOBALS.append(np.dtypes.UInt32DType)


class _numpy_rng_globals:
    """Allow, for one weights_only load, the numpy objects in a pickled RNG state (torch >= 2.4)."""

    def __enter__(self):
        self._before = torch.serialization.get_safe_globals()
        torch.serialization.add_safe_globals(_NUMPY_RNG_GLOBALS)

    def __exit__(self, *exc):
        torch.serialization.clear_safe_globals()
        if self._before:
            torch.serialization.add_safe_globals(self._before)
        return False


class _naming:
    """Turn a failure while loading `file` into DamagedCheckpoint naming it."""

    def __init__(self, file: Path, fit: str):
        self.file, self.fit = file, fit

    def __enter__(self):
        if not self.file.is_file():
            raise DamagedCheckpoint(Damage(str(self.file), "missing"))

    def __exit__(self, kind, error, tb):
        if kind is None or not issubclass(kind, Exception) or kind is DamagedCheckpoint:
            return False
        if isinstance(error, (RuntimeError, ValueError, KeyError, IndexError, TypeError)) and \
                "safetensor" not in kind.__module__.lower() and "Safetensor" not in kind.__name__:
            reason = (f"does not fit {self.fit} ({_short(error)}): damaged, or written by a run with "
                      "another model configuration")
        else:
            reason = f"unreadable ({_short(error)})"
        raise DamagedCheckpoint(Damage(str(self.file), reason)) from None


def set_aside_damaged(path) -> Path:
    """Rename a damaged checkpoint-<step> to checkpoint-<step>.damaged(-N): kept for a look, never
    resumed from again and not counted by keep_last. Returns the new path."""
    path = Path(path)
    target = path.with_name(path.name + _DAMAGED_SUFFIX)
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{_DAMAGED_SUFFIX}-{n}")
    os.replace(path, target)
    return target


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
    """COMPLETE: the step and every file's size and SHA-256 (what verify_checkpoint checks)."""
    files = {}
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.name != COMPLETE_MARKER:
            files[file.relative_to(folder).as_posix()] = {"size": file.stat().st_size, "sha256": file_sha256(file)}
    with open(folder / COMPLETE_MARKER, "w") as f:
        json.dump({"step": step, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())




def _is_rng_file(name: str) -> bool:
    return Path(name).name.startswith(RNG_PREFIX)


def _short(error: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > 160 and ". " in text[:160]:  # torch's long advice: its first sentence says it
        text = text[: text.index(". ") + 1]
    return text if len(text) <= 200 else text[:197] + "..."


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


class RunLock:
    """`<out_dir>/run.lock`: one writer per run folder.

    Created with O_CREAT|O_EXCL holding {"pid", "host", "started", "token"}; `release()` removes it
    (if it is still this one). A lock whose process is gone (same host, pid not running, or running
    but started at another time: a reused pid) is stale and taken over with a warning; a live
    holder, or one on another host (which cannot be checked from here), is refused with a
    RunLockedError naming the folder and the pid.
    """

    def __init__(self, path: Path, token: str):
        self.path, self.token = path, token

    @classmethod
    def acquire(cls, out_dir, warn=None) -> "RunLock":
        warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / LOCK_FILE
        token = uuid.uuid4().hex
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid()),
                "time": time.strftime("%Y-%m-%d %H:%M:%S"), "token": token}
        for _ in range(20):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                text = _read_text(path)
                if text is None:  # gone meanwhile: try again
                    continue
                holder = _parse_lock(text)
                stale = _stale(holder, path)
                if stale is None:
                    raise RunLockedError(_locked_message(out, path, holder)) from None
                if _take_over(path, text):
                    warn(f"warning: {path}: taking over the lock of a run that is gone ({stale})")
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
                f.flush()
                os.fsync(f.fileno())
            return cls(path, token)
        raise RunLockedError(f"{out}: could not take the run lock {path}: other runs keep taking it; "
                             "run one training per output folder")

    def release(self) -> None:
        holder = _parse_lock(_read_text(self.path) or "")
        if holder.get("token") == self.token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""


def _parse_lock(text: str) -> dict:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return None if fields[0] == "Z" else fields[19]  # a zombie has exited


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    if Path("/proc").is_dir() and Path(f"/proc/{pid}").exists() and _process_start(pid) is None:
        return False  # a zombie: it has exited, its parent has not reaped it yet
    return True


def _stale(holder: dict, path: Path) -> str | None:
    """Why the lock `holder` is stale, or None when its run may be alive."""
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or not isinstance(host, str):
        # unreadable or half-written: stale unless it was created just now (its writer is at it)
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return "it was removed"
        return f"the lock file is unreadable and {age:.0f} s old" if age > 30 else None
    if host != socket.gethostname():
        return None  # cannot look at another machine's processes
    if not _pid_alive(pid):
        return f"pid {pid} is not running on {host}"
    started = holder.get("started")
    if started is not None and _process_start(pid) not in (None, started):
        return f"pid {pid} now belongs to another process"
    return None


def _take_over(path: Path, seen: str) -> bool:
    """Remove the stale lock whose text is `seen`; a lock taken meanwhile by a new run stays."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(path, aside)  # atomic: of two runs taking over, one moves the stale lock
    except FileNotFoundError:
        return False
    try:
        if _read_text(aside) != seen:  # we moved a live run's new lock: put it back
            try:
                os.link(aside, path)
            except OSError:
                pass
            return False
        return True
    finally:
        aside.unlink(missing_ok=True)


def _locked_message(out: Path, path: Path, holder: dict) -> str:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    since = f", since {holder['time']}" if holder.get("time") else ""
    return (f"{out} is in use by another training run ({who}{since}): only one run may write to an "
            f"output folder. Wait for it to finish, stop it, or use another out_dir; if that run is "
            f"gone for sure (another machine cannot be checked from here), delete {path}")
