"""Model folders the Hugging Face way (config.json + model.safetensors), written and read the same
way by `tokenizers_vq` and `generators`: one implementation of the atomic folder swap, the strict
load that names every bad key, and the eval-mode context.  Depends on torch alone."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from torch import Tensor, nn


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
