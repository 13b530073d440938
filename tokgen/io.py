"""Model folders the Hugging Face way (config.json + model.safetensors, and the README.md model
card of tokgen/hub.py, written inside the same atomic swap), written and read the same way by
`tokenizers_vq` and `generators`: one implementation of the atomic folder swap, the strict load
that names every bad key, and the eval-mode context.  Depends on torch alone."""
from __future__ import annotations

import contextlib
import hashlib
import dataclasses
import json
import os
import shutil
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Iterator

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@contextlib.contextmanager
def writing_dir(save_directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `save_directory` to write a model into; when the block ends
    it replaces `save_directory` whole (`replace_dir`), and on an error it is removed."""
    target = Path(save_directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_model(folder: Path, meta: dict, state: dict[str, Tensor], **metadata: str) -> None:
    """config.json (`meta`) + model.safetensors (`state`, copied to contiguous CPU tensors)."""
    (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    weights = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(weights, str(folder / WEIGHTS_NAME), metadata={"format": "pt", **metadata})


def read_model(directory: str | os.PathLike, fmt: str, hint: str) -> tuple[dict, dict[str, Tensor]]:
    """(meta, state) of a folder written by `write_model` with meta["format"] == fmt; a clear error
    for a missing file or a folder of another kind (`hint` says how to load that), and a ValueError
    naming the file for a damaged one (a cut-off or invalid config.json, a truncated or corrupt
    model.safetensors)."""
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: pass a directory written by save_pretrained")
    meta = read_json(directory / CONFIG_NAME, damaged=f"the model folder {directory} is damaged")
    if not isinstance(meta, dict):
        raise ValueError(f"{directory / CONFIG_NAME} holds a JSON {type(meta).__name__}, not an object: the model "
                         f"folder {directory} is damaged; save or download it again")
    if meta.get("format") != fmt:
        raise ValueError(f"{directory / CONFIG_NAME} is not a {fmt} checkpoint (format {meta.get('format')!r}); {hint}")
    for key in ("config", "spec"):
        if not isinstance(meta.get(key), dict):
            got = "is missing" if key not in meta else f"is a {type(meta[key]).__name__}, not an object"
            raise ValueError(f"{directory / CONFIG_NAME}: the {key!r} entry {got}: the model folder {directory} "
                             f"is damaged; save or download it again")
    return meta, read_safetensors(directory / WEIGHTS_NAME, damaged=f"the model folder {directory} is damaged")


def read_json(path: str | os.PathLike, damaged: str = "the file is damaged") -> Any:
    """json.loads of a file, with a ValueError that names the file and where the JSON breaks (a
    cut-off or hand-edited file) instead of json's bare message; `damaged` says what that means."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        cut = " (it ends early: cut off?)" if err.pos >= len(err.doc.rstrip()) or err.msg.startswith("Unterminated") \
            else ""
        raise ValueError(f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno} "
                         f"(char {err.pos}){cut}; {damaged}: write or download it again") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); {damaged}: "
                         f"write or download it again") from None


def read_safetensors(path: str | os.PathLike, damaged: str = "the file is damaged") -> dict[str, Tensor]:
    """safetensors' load_file, with a ValueError naming the file for a truncated or corrupt one."""
    path = Path(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:  # the header or a tensor runs past the end
        size = path.stat().st_size if path.exists() else 0
        raise ValueError(f"{path} ({size} bytes) is not a readable safetensors file ({err}): it is truncated or "
                         f"corrupt; {damaged}: write or download it again") from None


# ---------------------------------------------------------------------------- config field types

def check_types(cls: type, data: Any, source: str) -> None:
    """Check the values of `data` (a dict read from JSON) against the annotations of the dataclass
    `cls`: a ValueError naming `source` (the file or the config), every mistyped field, the type it
    wants and the value it got.  JSON types map as: int (not bool), float (int or float), bool, str,
    None for Optional, a list for tuple[...] / list[...] (elements checked), a dict for dict[...];
    annotations it does not know (classes, Any) accept anything.  Fields absent from `data` keep
    their defaults; unknown fields are the caller's to refuse."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a {cls.__name__} must be a JSON object of its fields, "
                         f"got {type(data).__name__} {_short(data)}")
    hints = typing.get_type_hints(cls)
    bad = [f"{f.name!r} must be {_type_name(hints[f.name])}, got {_json_type(data[f.name])} {_short(data[f.name])}"
           for f in dataclasses.fields(cls) if f.name in data and f.name in hints
           and not _fits(data[f.name], hints[f.name])]
    if bad:
        raise ValueError(f"{source}: wrong type in {cls.__name__} field{'s' if len(bad) > 1 else ''} "
                         + "; ".join(bad) + " (fix the value, e.g. 512 not \"512\", or write the config again)")


def _fits(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or isinstance(tp, typing.TypeVar):
        return True
    if tp is type(None) or tp is None:
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (tuple, list, set, frozenset) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict) and (not args or all(_fits(v, args[1]) for v in value.values()))
    return True  # a class or construct JSON cannot hold: the config's own checks decide


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if tp is type(None):
        return "null"
    if origin in (tuple, list, set, frozenset):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "an object"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    return "a number" if tp is float else getattr(tp, "__name__", str(tp))


def _json_type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", tuple: "list",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    plain = isinstance(value, (str, int, float, bool, list, tuple, dict, type(None)))
    text = json.dumps(value, default=repr) if plain else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks (checkpoint markers, token shards, the
    tokenizer a generator records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder `src` to `dst`.  An existing `dst` is moved aside first and removed
    after, so a reader sees the old folder or the new one, never half of either."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.replace(dst, old / dst.name)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def check_state(own: dict[str, Tensor], state: dict[str, Tensor], source: str, target: str, fix: str) -> None:
    """Raise one ValueError naming every missing, unexpected and mis-shaped key of `state` against
    the model's own `own` state; `target` names the model, `fix` says what to do."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                       for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or misshaped:
        parts = [f"{name} keys {keys[:8]}{' ...' if len(keys) > 8 else ''}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
        raise ValueError(f"{source} does not fit {target}: " + "; ".join(parts) + f". {fix}")


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Eval mode inside the block, the previous mode after it."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
