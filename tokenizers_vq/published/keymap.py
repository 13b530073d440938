"""Map a published VQGAN-family state dict onto a `VQTokenizer`'s, by walking our modules.

taming (Esser et al. 2021), LlamaGen (Sun et al. 2024) and VAR (Tian et al. 2024) share one
autoencoder; they differ only in names.  A `Layout` says how one codebase names a level, a block
and the middle; `autoencoder_rules` then walks our Encoder and Decoder in construction order (the
order their `down` / `up` Sequentials hold the blocks) and pairs each of our blocks with the peer's
block of the same level and index.  So the table of names is never written out by hand, and a
config that builds another layout (more levels, attention elsewhere) maps without a change here.

A `Rule` fills one of our keys from one or more peer keys (several: q, k, v concatenated into our
fused qkv).  `apply_rules` fills the target state dict and checks it whole: every target key
filled exactly once with the right shape, every source key used or deliberately skipped; anything
else is one ValueError listing the keys.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..autoencoder import AttnBlock, Downsample, ResnetBlock, Upsample
from ..quantizers.kmeans import CODEBOOK_STATE_KEYS, codebook_state

# Our parameter names that the peers spell differently (the first component of a block's key).
_RENAMED = {"shortcut": "nin_shortcut", "proj": "proj_out"}


def _identity(tensors: list[Tensor]) -> Tensor:
    return tensors[0]


def _concat(tensors: list[Tensor]) -> Tensor:
    return torch.cat(tensors, dim=0)


@dataclass(frozen=True)
class Rule:
    target: str                                   # our key
    sources: tuple[str, ...]                      # the peer keys it is made of
    combine: Callable[[list[Tensor]], Tensor] = _identity


@dataclass(frozen=True)
class Layout:
    """How one codebase names the blocks of the shared VQGAN autoencoder."""

    encoder_level: str            # "encoder.down.{i}": the blocks of resolution level i (0 = full)
    decoder_level: str            # "decoder.up.{i}", or with {j} = L - 1 - i (LlamaGen: lowest first)
    res: str                      # the res-block list inside a level: "block" (taming, VAR) or "res"
    middle: tuple[str, str, str]  # ("block_1", "attn_1", "block_2") or ("0", "1", "2")
    fused_qkv: bool               # attention with one qkv conv (VAR) or separate q, k, v (taming, LlamaGen)

    def level(self, part: str, i: int, levels: int) -> str:
        pattern = self.encoder_level if part == "encoder" else self.decoder_level
        return pattern.format(i=i, j=levels - 1 - i)

    def num_levels(self, state: dict[str, Tensor]) -> int:
        """How many resolution levels the encoder in `state` has."""
        return self.count(state, self.encoder_level.rpartition(".")[0])

    def count(self, state: dict[str, Tensor], prefix: str) -> int:
        """How many numbered children `prefix.N` the state holds."""
        found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"\.(\d+)\.", k))}
        return len(found)


def _module_rules(ours: str, peer: str, module: nn.Module, layout: Layout) -> list[Rule]:
    """The rules of one block: each of its keys from the peer's key of the same role."""
    rules = []
    for name in module.state_dict():
        head, _, rest = name.partition(".")
        if isinstance(module, AttnBlock) and head == "qkv" and not layout.fused_qkv:
            # our qkv conv's output channels are [q; k; v], the order the forward splits them in
            sources = tuple(f"{peer}.{p}.{rest}" for p in ("q", "k", "v"))
            rules.append(Rule(f"{ours}.{name}", sources, _concat))
        else:
            renamed = ".".join(p for p in (peer, _RENAMED.get(head, head), rest) if p)
            rules.append(Rule(f"{ours}.{name}", (renamed,)))
    return rules


def _walk_levels(ours: str, part: str, blocks: nn.Sequential, levels: range, layout: Layout) -> list[Rule]:
    """Pair the blocks of our flat `down` / `up` Sequential with the peer's per-level blocks: a
    level is its res blocks (each maybe followed by attention), closed by a Downsample / Upsample
    (none after the last level)."""
    n_levels = len(levels)
    order = iter(levels)
    level, res_index, rules = next(order), -1, []
    for index, module in enumerate(blocks):
        stage = layout.level(part, level, n_levels)
        if isinstance(module, ResnetBlock):
            res_index += 1
            peer = f"{stage}.{layout.res}.{res_index}"
        elif isinstance(module, AttnBlock):
            peer = f"{stage}.attn.{res_index}"  # the attention after res block res_index
        elif isinstance(module, (Downsample, Upsample)):
            peer = f"{stage}.{'downsample' if part == 'encoder' else 'upsample'}"
        else:  # pragma: no cover - the autoencoder builds nothing else
            raise TypeError(f"unexpected block {type(module).__name__} in {ours}")
        rules += _module_rules(f"{ours}.{index}", peer, module, layout)
        if isinstance(module, (Downsample, Upsample)):
            level, res_index = next(order), -1
    return rules


def autoencoder_rules(tokenizer: nn.Module, layout: Layout) -> list[Rule]:
    """Rules for every key of the tokenizer's encoder, decoder and quant convs."""
    rules: list[Rule] = []
    n_levels = len(tokenizer.config.channel_mults)
    for part, seq, levels in (("encoder", "down", range(n_levels)), ("decoder", "up", range(n_levels - 1, -1, -1))):
        net = getattr(tokenizer, part)
        for name in ("conv_in", "norm_out", "conv_out"):
            rules += _module_rules(f"{part}.{name}", f"{part}.{name}", getattr(net, name), layout)
        for index, module in enumerate(net.mid):
            rules += _module_rules(f"{part}.mid.{index}", f"{part}.mid.{layout.middle[index]}", module, layout)
        rules += _walk_levels(f"{part}.{seq}", part, getattr(net, seq), levels, layout)
    for name in ("quant_conv", "post_quant_conv"):
        rules += _module_rules(name, name, getattr(tokenizer, name), layout)
    return rules


def codebook_rules(target: str, source: str, normalise: bool = False) -> list[Rule]:
    """Rules filling our vector-quantize codebook (`target`, e.g. "quantizer.vq._codebook") from
    the peer's (K, d) embedding, with the buffers `quantizers.kmeans.codebook_state` says make it
    the codes.  `normalise`: store l2-normalised rows (LlamaGen normalises its rows at every use;
    vector-quantize-pytorch's cosine codebook uses them as stored)."""

    def entry(key: str) -> Callable[[list[Tensor]], Tensor]:
        def fill(tensors: list[Tensor]) -> Tensor:
            embed = tensors[0].float()
            return codebook_state(F.normalize(embed, dim=-1) if normalise else embed)[key]
        return fill

    return [Rule(f"{target}.{key}", (source,), entry(key)) for key in CODEBOOK_STATE_KEYS]


@dataclass
class Converted:
    state: dict[str, Tensor]                       # our state dict
    skipped: list[str] = field(default_factory=list)  # peer keys deliberately left out


def apply_rules(rules: list[Rule], source: dict[str, Tensor], target_shapes: dict[str, torch.Size],
                skip: Callable[[str], bool], name: str) -> Converted:
    """Fill `target_shapes`' keys from `source` by `rules`; one ValueError listing every problem."""
    problems: list[str] = []
    filled: dict[str, Tensor] = {}
    used: set[str] = set()
    duplicate = sorted(k for k, n in Counter(r.target for r in rules).items() if n > 1)
    if duplicate:  # pragma: no cover - a bug in a format's rules, not a user mistake
        raise RuntimeError(f"{name}: keys filled twice by the conversion rules: {duplicate}")
    missing = sorted({s for r in rules for s in r.sources if s not in source})
    if missing:
        problems.append(f"{len(missing)} key(s) the architecture needs are missing: {_few(missing)}")
    for rule in rules:
        if rule.target not in target_shapes:
            problems.append(f"the rules fill {rule.target!r}, which the tokenizer does not have")
            continue
        if any(s not in source for s in rule.sources):
            continue
        value = rule.combine([source[s] for s in rule.sources])
        used.update(rule.sources)
        if value.shape != target_shapes[rule.target]:
            shapes = ", ".join(f"{s} {tuple(source[s].shape)}" for s in rule.sources)
            problems.append(f"{rule.target} needs shape {tuple(target_shapes[rule.target])}, got {shapes}")
            continue
        filled[rule.target] = value
    unfilled = sorted(set(target_shapes) - {r.target for r in rules})
    if unfilled:
        problems.append(f"{len(unfilled)} tokenizer key(s) no peer key fills: {_few(unfilled)}")
    skipped = sorted(k for k in source if k not in used and skip(k))
    unused = sorted(k for k in source if k not in used and not skip(k))
    if unused:
        problems.append(f"{len(unused)} key(s) of the file are not part of this architecture: {_few(unused)}")
    if problems:
        raise ValueError(f"the checkpoint does not fit the {name} architecture inferred from it:\n  "
                         + "\n  ".join(problems))
    return Converted(filled, skipped)


def _few(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
