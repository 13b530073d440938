"""Read a published tokenizer's released checkpoint and write it as a tokgen tokenizer folder.

    from tokgen import convert_tokenizer
    result = convert_tokenizer("var-vqvae", "vae_ch160v4096z32.pth", "tokenizers/var")
    tok = VQTokenizer.from_pretrained("tokenizers/var")

The file is read with `torch.load(weights_only=True)`: only tensors and plain containers are built.
Released files may also pickle Python objects beside the weights (LlamaGen's training `args`, an
argparse.Namespace; a Lightning checkpoint's callbacks and hyper-parameters).  Those globals are
listed first (`torch.serialization.get_unsafe_globals_in_checkpoint`) and each is allowed as an
inert stand-in class that only records its arguments, so none of their code runs; the state dict
itself must hold tensors only, which is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tokgen.io import file_sha256

from ..config import TokenizerConfig
from ..tokenizer import VQTokenizer, load_checked
from .base import FORMATS, PublishedFormat, get_format
from .keymap import Converted, apply_rules, autoencoder_rules


@dataclass
class ConvertResult:
    out: str                          # the tokenizer folder written
    source: str                       # the format (--from)
    checkpoint: str                   # the file read
    sha256: str
    config: dict[str, Any]            # the TokenizerConfig inferred
    converted_keys: int               # our keys filled
    skipped_keys: int                 # peer keys deliberately left out (loss, discriminator, statistics)
    skipped: dict[str, int] = field(default_factory=dict)   # their count per top-level name
    ignored_entries: list[str] = field(default_factory=list)  # top-level entries of the file beside the weights
    stand_ins: list[str] = field(default_factory=list)        # pickled Python objects read as inert stand-ins


class _StandIn:
    """An inert object in place of a pickled class tokgen does not load: it keeps what the pickle
    passed it and runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def load_checkpoint(path: str | Path) -> tuple[Any, list[str]]:
    """(the object torch.save wrote, the pickled globals read as stand-ins), weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: download the released file first (see the README, "
                                f"'Use a published tokenizer')")
    try:
        with open(path, "rb") as f:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(f))
    except Exception:                  # not a zip checkpoint (e.g. the pre-1.6 format): load without stand-ins
        names = []
    stand_ins = [(type(name.rpartition(".")[2], (_StandIn,), {"__module__": __name__}), name) for name in names]
    try:
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:          # whatever a damaged or foreign file makes the unpickler raise
        first = (str(err).strip().splitlines() or [""])[0].rstrip(".") or type(err).__name__
        raise ValueError(f"{path} is not a readable PyTorch checkpoint (torch.load(weights_only=True) failed: "
                         f"{type(err).__name__}: {first}); check that the file is complete (compare its sha256 "
                         f"with the release's) and is the released checkpoint itself") from None
    return obj, names


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj) and \
        sum(isinstance(v, Tensor) for v in obj.values()) > len(obj) // 2


def state_dict_of(fmt: PublishedFormat, obj: Any) -> tuple[dict[str, Tensor] | None, list[str]]:
    """(the state dict inside the loaded file, the other top-level entries) for `fmt`; None when
    the file has no entry where `fmt` keeps its weights."""
    if _is_state_dict(obj):
        return obj, []
    if isinstance(obj, dict):
        for name in fmt.wrappers:
            if _is_state_dict(obj.get(name)):
                return obj[name], sorted(str(k) for k in obj if k != name)
    return None, []


def _no_match(fmt: PublishedFormat, obj: Any, path: Path) -> ValueError:
    """The error for a file that is not `fmt`: the format it looks like, or what each one expects."""
    others = [f.name for f in FORMATS.values() if f is not fmt and (s := state_dict_of(f, obj)[0]) and f.matches(s)]
    if others:
        return ValueError(f"{path} is not a {fmt.name} checkpoint; its keys are those of {others[0]}: "
                          f"convert it with --from {others[0]}")
    expected = "; ".join(f"{f.name} ({f.released}): "
                         + (f"a {' or '.join(repr(w) for w in f.wrappers)} entry holding " if f.wrappers else "")
                         + ", ".join(f.signature)
                         + (f" and none of {', '.join(f.foreign)}" if f.foreign else "")
                         for f in FORMATS.values())
    state = state_dict_of(fmt, obj)[0]
    if state is None and isinstance(obj, dict):
        found = f"top-level entries {sorted(str(k) for k in obj)[:8]}"
    else:
        found = f"keys such as {sorted(state or {})[:6]}"
    return ValueError(f"{path} matches none of the published tokenizer formats (it has {found}). Expected "
                      f"keys: {expected}")


def convert_state(source: str, state: dict[str, Tensor], image_size: int = 256,
                  scales: tuple[int, ...] | None = None) -> tuple[TokenizerConfig, Converted]:
    """(our config, our state dict with the skipped keys) of a peer state dict in format `source`.
    The target shapes come from a tokenizer built on the meta device (no memory, no init)."""
    fmt = get_format(source)
    bad = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    if bad:
        raise ValueError(f"the {source} state dict holds non-tensor entries {bad[:6]}: not a released checkpoint")
    config = fmt.config(state, image_size=image_size, scales=tuple(scales) if scales is not None else None)
    with torch.device("meta"):
        target = VQTokenizer(config)
    rules = autoencoder_rules(target, fmt.layout) + fmt.quantizer_rules(config)
    shapes = {k: v.shape for k, v in target.state_dict().items()}
    return config, apply_rules(rules, state, shapes, fmt.skip, source)


def convert_tokenizer(source: str, checkpoint: str | Path, out_dir: str | Path, image_size: int = 256,
                      scales: tuple[int, ...] | list[int] | None = None) -> ConvertResult:
    """Convert the released checkpoint file `checkpoint` of format `source` (llamagen-vq16,
    var-vqvae, taming-vqgan) into a tokenizer folder `out_dir` that `VQTokenizer.from_pretrained`
    loads.  `image_size`: the image side the tokenizer will take (256 for all three releases);
    `scales`: VAR's token-map sides (default: the released (1, 2, 3, 4, 5, 6, 8, 10, 13, 16))."""
    fmt = get_format(source)
    path = Path(checkpoint)
    obj, stand_ins = load_checkpoint(path)
    state, ignored = state_dict_of(fmt, obj)
    if state is None or not fmt.matches(state):
        raise _no_match(fmt, obj, path)
    config, converted = convert_state(source, state, image_size=image_size, scales=scales)
    tokenizer = VQTokenizer(config)
    load_checked(tokenizer, converted.state, source=str(path))
    digest = file_sha256(path)
    tokenizer.origin = {"format": source, "file": path.name, "sha256": digest, "image_size": image_size}
    tokenizer.save_pretrained(out_dir)
    skipped: dict[str, int] = {}
    for key in converted.skipped:
        group = ".".join(key.split(".")[:2]) if key.startswith("loss.") else key  # loss.discriminator, ...
        skipped[group] = skipped.get(group, 0) + 1
    return ConvertResult(out=str(out_dir), source=source, checkpoint=str(path), sha256=digest,
                         config=config.to_dict(), converted_keys=len(converted.state),
                         skipped_keys=len(converted.skipped), skipped=skipped, ignored_entries=ignored,
                         stand_ins=stand_ins)
