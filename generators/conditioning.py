"""Conditions and their embeddings, with the learned null condition classifier-free guidance
needs (Ho & Salimans 2022: drop the condition about 10% of the time during training).

A `Condition` is one of
- class labels: `Condition(labels=LongTensor (B,))`, labels in [0, num_classes), -1 = null
  (no label: unconditional rows, and what datasets without labels give);
- a caption batch: `Condition(text_ids=LongTensor (B, L), text_mask=BoolTensor (B, L))`, built
  from strings by `generator.make_condition(captions=[...])` (or `encode_captions`);
- None: unconditional.
Dicts work too: {"labels": ...} or {"text_ids"/"input_ids": ..., "text_mask"/"attention_mask": ...}
or {"captions": [...]}.

Which of these a model takes, and how it embeds them into a `CondState`, is its condition kind's
business (condition_kinds.py); this module holds the data and the embedding modules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

NULL_LABEL = -1


@dataclass
class Condition:
    labels: Tensor | None = None       # (B,) long, class ids in [0, num_classes); -1 = null (unconditional)
    text_ids: Tensor | None = None     # (B, L) long, caption token ids padded with the pad id
    text_mask: Tensor | None = None    # (B, L) bool, True on real caption tokens
    captions: list[str] | None = None  # raw strings; the generator tokenizes them with its text tokenizer

    @property
    def batch_size(self) -> int:
        for x in (self.labels, self.text_ids, self.captions):
            if x is not None:
                return len(x)
        return 0

    def to(self, device: torch.device | str) -> "Condition":
        move = lambda t: t.to(device) if isinstance(t, Tensor) else t
        return Condition(move(self.labels), move(self.text_ids), move(self.text_mask), self.captions)


@dataclass
class CondState:
    """A condition embedded once per call, in the form the core takes: an adaLN vector (or a
    prefix token) and/or cross-attention states (built by the model's condition kind, `embed`)."""
    vector: Tensor | None = None         # (B, D) class embedding or pooled caption, for adaLN
    prefix: Tensor | None = None         # (B, 1, D) a class token in front of the sequence instead
    context: Tensor | None = None        # (B, S, D) caption states for cross-attention
    context_mask: Tensor | None = None   # (B, S) bool, True on real states

    def cat(self, other: "CondState") -> "CondState":
        """Rows of self, then rows of other (the [conditional; null] batch of guidance)."""
        join = lambda a, b: None if a is None else torch.cat([a, b])
        return CondState(**{f.name: join(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)})


_ALIASES = {"labels": "labels", "label": "labels", "y": "labels", "class_labels": "labels",
            "text_ids": "text_ids", "input_ids": "text_ids", "text_mask": "text_mask",
            "attention_mask": "text_mask", "captions": "captions", "caption": "captions"}


def as_condition(cond: Any) -> Condition | None:
    """Condition | dict | LongTensor (B,) labels | a caption or a list of them | None -> Condition | None."""
    if cond is None or isinstance(cond, Condition):
        return cond
    if isinstance(cond, Tensor):
        if cond.dim() == 1 and not cond.is_floating_point():
            return Condition(labels=cond)
        raise ValueError(f"a bare tensor condition must be class labels (B,) long, got {tuple(cond.shape)} "
                         f"{cond.dtype}: pass captions as Condition(text_ids=..., text_mask=...)")
    if isinstance(cond, str):
        return Condition(captions=[cond])                                      # one caption, not one per character
    if isinstance(cond, (list, tuple)) and cond and all(isinstance(c, str) for c in cond):
        return Condition(captions=list(cond))
    if isinstance(cond, dict):
        unknown = [k for k in cond if k not in _ALIASES]
        if unknown:
            raise ValueError(f"unknown condition keys {unknown}: use 'labels', or 'text_ids' + 'text_mask', "
                             f"or 'captions'")
        fields = {_ALIASES[k]: v for k, v in cond.items()}
        if isinstance(fields.get("labels"), list):
            fields["labels"] = torch.tensor(fields["labels"], dtype=torch.long)
        if isinstance(fields.get("captions"), str):
            fields["captions"] = [fields["captions"]]
        return Condition(**fields)
    raise ValueError(f"cannot read a condition from {type(cond).__name__}: pass a Condition, a dict "
                     f"(labels / text_ids + text_mask / captions), a LongTensor of labels, or None")


def drop_mask(batch: int, p: float, device: torch.device, training: bool) -> Tensor | None:
    """(B,) bool: rows whose condition becomes the null one (only while training, with prob. p)."""
    if not training or p <= 0:
        return None
    return torch.rand(batch, device=device) < p


class ClassEmbedder(nn.Module):
    """Class label -> (B, D), with a learned null class (index num_classes) for -1 labels and for
    label dropout (LlamaGen / DiT `LabelEmbedder`)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def ids(self, labels: Tensor, drop: Tensor | None = None) -> Tensor:
        """Labels with -1 (and dropped rows) mapped to the null index."""
        null = (labels < 0) if drop is None else (labels < 0) | drop
        return torch.where(null, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: Tensor, drop: Tensor | None = None) -> Tensor:
        return self.table(self.ids(labels, drop))                 # (B, D)

    def null(self, batch: int, device: torch.device) -> Tensor:
        return self.table.weight[self.num_classes].expand(batch, -1)


class TextConditioner(nn.Module):
    """Text encoder (learned or frozen HF) + projection to the generator's width + a learned null
    text: a dropped caption becomes one learned state (mask: only it is real) and a learned
    pooled vector.  forward -> (context (B, S, D), context_mask (B, S), pooled (B, D))."""

    def __init__(self, encoder: nn.Module, encoder_width: int, width: int):
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Linear(encoder_width, width) if encoder_width != width else nn.Identity()
        self.null_state = nn.Parameter(torch.randn(width) * 0.02)
        self.null_pooled = nn.Parameter(torch.randn(width) * 0.02)

    def forward(self, ids: Tensor, mask: Tensor, drop: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        states, smask, pooled = self.encoder(ids, mask)
        states, pooled = self.proj(states), self.proj(pooled)        # (B, S, D), (B, D)
        if drop is not None:
            states, smask, pooled = self._null_rows(states, smask, pooled, drop)
        return states, smask, pooled

    def null(self, batch: int, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """The null text for `batch` rows, padded to `length` context positions."""
        states = torch.zeros(batch, length, self.null_state.shape[0], device=device, dtype=dtype)
        mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
        return self._null_rows(states, mask, states[:, 0], torch.ones(batch, dtype=torch.bool, device=device))

    def _null_rows(self, states: Tensor, mask: Tensor, pooled: Tensor, drop: Tensor):
        d = drop[:, None, None]
        first = torch.zeros_like(mask)
        first[:, 0] = True
        null_states = torch.where(first[..., None], self.null_state.to(states.dtype), torch.zeros_like(states))
        states = torch.where(d, null_states, states)
        mask = torch.where(drop[:, None], first, mask)
        pooled = torch.where(drop[:, None], self.null_pooled.to(pooled.dtype).expand_as(pooled), pooled)
        return states, mask, pooled
