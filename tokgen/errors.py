"""User mistakes: the errors and range checks the library raises them with (generators, pipeline,
jobs), and what the one boundary (`tokgen.train.cli.main`) makes of them: `error: ...`.

A user mistake (a bad flag or config value, a missing or damaged input file) prints one line,

    error: --top-p 1.5: must be in (0, 1] (1 = no nucleus filter)

on stderr and exits with status 2 (EXIT_USAGE, argparse's own code for a bad flag), without a
traceback; `--debug` (anywhere on the command line) or TOKGEN_DEBUG=1 re-raises it with its
traceback.  Ctrl-C exits with 130 (EXIT_INTERRUPTED) and one line.  Anything else is a bug in tokgen
and keeps its traceback (exit status 1).

What counts as a user mistake (`is_user_error`): `UsageError` and every `ValueError` (the library
raises ValueError, naming the input and the fix, for every bad argument: that is its contract,
train/jobs/__init__.py), the OSErrors of a file or folder (FileNotFoundError, IsADirectoryError,
PermissionError, ... anything with an errno), and safetensors' error on a damaged weights file.
TypeError, KeyError, RuntimeError, AssertionError and the rest are internal errors.

Library checks may tag a ValueError with the config field it is about (`ConfigValueError`: attributes
`field`, `value`, `reason`); the boundary then names the command's flag for that field
(`--top-p 1.5: ...` rather than `top_p=1.5: ...`) when the command has one.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable

EXIT_USAGE = 2             # a user mistake (as argparse exits for a bad flag)
EXIT_INTERRUPTED = 130     # Ctrl-C (128 + SIGINT)
DEBUG_ENV = "TOKGEN_DEBUG"
DEBUG_FLAG = "--debug"


class UsageError(ValueError):
    """A user mistake: a bad flag, config value or input file.  The message names it and says
    the fix; the command line prints it as `error: <message>` with no traceback."""


class ConfigValueError(UsageError):
    """A config field out of range: `field` (the dataclass field), `value`, `reason`."""

    def __init__(self, field: str, value: Any, reason: str):
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field}={value!r}: {reason}")


class ErrorExit(SystemExit):
    """SystemExit(EXIT_USAGE) whose text is the `error: ...` line (already printed by the boundary,
    or to be printed by it), so `pytest.raises(SystemExit, match=...)` reads the message."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(code)
        self.message = message if message.startswith("error:") else f"error: {message}"

    def __str__(self) -> str:
        return self.message


def debug_enabled(argv: list[str] | None = None) -> bool:
    return DEBUG_FLAG in (argv or ()) or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def is_user_error(e: BaseException) -> bool:
    if isinstance(e, ValueError):          # UsageError, json.JSONDecodeError, UnicodeDecodeError, ...
        return True
    if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)):
        return True
    if isinstance(e, OSError) and e.errno is not None:          # a file the system could not read or write
        return True
    return type(e).__name__ == "SafetensorError"      # a damaged .safetensors file


def message(e: BaseException, flags: Iterable[str] = ()) -> str:
    """The text after `error: ` for a user error; a field-tagged ValueError names the command's flag."""
    field = getattr(e, "field", None)
    if field is not None and hasattr(e, "reason"):
        flag = "--" + field.replace("_", "-")
        if flag in set(flags):
            return f"{flag} {_show(e.value)}: {e.reason}"
    if isinstance(e, UnicodeDecodeError):
        return (f"a file is not UTF-8 text ({e}): pass a text file")
    if type(e).__name__ == "SafetensorError":
        return f"a .safetensors weights file is damaged or not a safetensors file ({e}): save it again"
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    text = str(e) or type(e).__name__
    return text[len("error: "):] if text.startswith("error: ") else text


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


# ---------------------------------------------------------------------------- range checks

def positive(v) -> bool:
    return _number(v) and v > 0


def at_least(low) -> Callable[[Any], bool]:
    return lambda v: _number(v) and v >= low


def in_range(low, high, low_open: bool = False, high_open: bool = False) -> Callable[[Any], bool]:
    def check(v) -> bool:
        return _number(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    return check


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_ranges(obj: Any, rules: Iterable[tuple[str, Callable[[Any], bool], str]], *,
                 optional: Iterable[str] = (), integers: Iterable[str] = ()) -> None:
    """Raise ConfigValueError for the first field of `obj` breaking its rule (field, test, what it
    must be).  Fields in `optional` may be None; fields in `integers` must be ints."""
    optional, integers = set(optional), set(integers)
    for name, test, reason in rules:
        value = getattr(obj, name)
        if value is None and name in optional:
            continue
        if name in integers and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigValueError(name, value, f"must be a whole number ({reason})")
        if not test(value):
            raise ConfigValueError(name, value, reason)


def check_device(device: Any, what: str = "--device") -> None:
    """A device string (or torch.device) this machine has, else a UsageError naming `what`:
    `--device cuda` on a machine without CUDA is a mistake to report before anything is loaded."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"{what} {device}: not a device; use cpu, cuda, cuda:N or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if dev.type not in available:
        raise UsageError(f"{what} {device}: tokgen runs on cpu, cuda or mps")
    if not available[dev.type]:
        raise UsageError(f"{what} {device}: this machine has no {dev.type.upper()} device (torch "
                         f"{torch.__version__} sees none); use --device cpu or leave --device out")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"{what} {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0")
