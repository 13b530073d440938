"""Model folders the Hugging Face way (config.json + model.safetensors, and the README.md model
card of tokgen/hub.py, written inside the same atomic swap), written and read the same way by
`tokenizers_vq` and `generators`: one implementation of the atomic folder swap, the strict load
that names every bad key, and the eval-mode context.  Depends on torch alone."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

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
    for a missing file or a folder of another kind (`hint` says how to load that)."""
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: pass a directory written by save_pretrained")
    meta = json.loads((directory / CONFIG_NAME).read_text())
    if meta.get("format") != fmt:
        raise ValueError(f"{directory / CONFIG_NAME} is not a {fmt} checkpoint (format {meta.get('format')!r}); {hint}")
    return meta, load_file(str(directory / WEIGHTS_NAME))


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
