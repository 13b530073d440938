"""The kinds of condition a generator is built for: "none", "class" (labels), "text" (captions).

One class per kind owns everything that depends on it, so that families, trainers and tools ask
the kind instead of comparing `config.condition` strings:
- the config fields it needs (`check_config`) and the text tokenizer only captions take (`prepare`);
- the embedding modules it puts on the generator, under the names checkpoints hold (`build`:
  `class_emb`, `text`);
- the `Condition` it makes from python values (`make`) and its checks of an incoming one (`check`);
- its embedding into the core's `CondState` (`embed`), the learned null condition of
  classifier-free guidance included (`null_state`);
- the facts a family's core and a caller read: `conditional`, `uses_labels`, `uses_captions`,
  `adaln`, `cross_attention`.

    kind = condition_kind("class")     # by name, before a model exists (e.g. what to read off the data)
    kind.uses_labels                   # True: fill num_classes from the labels
    gen.conditioning                   # the model's kind, an instance built from its config
    gen.conditioning.cross_attention   # what the core needs

The config keeps the kind's name (`config.condition`), so config.json is unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from .conditioning import ClassEmbedder, CondState, Condition, TextConditioner
from .text import FrozenHFTextEncoder, TextEncoder, encode_captions, load_hf_tokenizer, pad_id_of

CONDITION_KINDS: dict[str, type["ConditionKind"]] = {}


def register_condition(name: str):
    """Class decorator: `@register_condition("class")` makes the kind buildable by name."""
    def wrap(cls: type[ConditionKind]) -> type[ConditionKind]:
        if name in CONDITION_KINDS and CONDITION_KINDS[name] is not cls:
            raise ValueError(f"condition kind {name!r} is already registered by {CONDITION_KINDS[name].__name__}")
        cls.name = name
        CONDITION_KINDS[name] = cls
        return cls
    return wrap


def condition_kind(name: str) -> type["ConditionKind"]:
    """The kind registered as `name` (its class: the facts are class attributes)."""
    if name not in CONDITION_KINDS:
        raise ValueError(f"condition must be one of {tuple(CONDITION_KINDS)}, got {name!r}")
    return CONDITION_KINDS[name]


class ConditionKind:
    """Base class of the kinds.  An instance is built once per generator from its final config
    (and text tokenizer); the facts are class attributes, readable before a model exists."""

    name: ClassVar[str] = ""
    conditional: ClassVar[bool] = True       # False: no condition, so no null condition and no guidance
    uses_labels: ClassVar[bool] = False      # made from class labels (num_classes comes from the data)
    uses_captions: ClassVar[bool] = False    # made from captions: needs a text tokenizer
    adaln: ClassVar[bool] = False            # `embed` gives a vector (B, D) (for adaLN, or a class token)
    cross_attention: ClassVar[bool] = False  # `embed` gives states (B, S, D) for cross-attention

    def __init__(self, config: Any, text_tokenizer: Any = None):
        self.num_classes = config.num_classes
        self.text_length, self.text_pad_id = config.text_length, config.text_pad_id
        self.text_vocab_size = config.text_vocab_size
        self.text_tokenizer = text_tokenizer

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # ------------------------------------------------------------------ config and modules

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Raise a ValueError naming the fix when a field this kind needs is unusable."""

    @classmethod
    def prepare(cls, config: Any, text_tokenizer: Any, *, family: str, frozen_encoder_ok: bool) -> tuple[Any, Any]:
        """(config, text tokenizer) before validation: caption models take their tokenizer's
        vocabulary and pad id; the other kinds refuse a tokenizer."""
        if text_tokenizer is not None:
            raise ValueError(f"a text tokenizer was given but condition={cls.name!r}: build with "
                             f"condition='text' for captions, or drop text_tokenizer")
        return config, None

    def build(self, model: Any) -> None:
        """Put this kind's embedding modules on `model` as `class_emb` and `text` (None where
        unused): the names its checkpoints hold, read back by `embed`."""
        model.class_emb = None
        model.text = None

    # ------------------------------------------------------------------ conditions from python values

    def make(self, labels: Any = None, captions: str | list[str] | None = None, *, truncate: bool = False,
             device: torch.device | str | None = None) -> Condition | None:
        """The condition from what a dataset batch has; the kind takes the part it uses."""
        return None

    def check(self, cond: Condition) -> Condition | None:
        """A condition checked against this kind (raw captions tokenized); None when it is empty."""
        if cond.captions is not None:
            if cond.text_ids is not None:
                raise ValueError("pass captions or text_ids, not both")
            cond = self._from_captions(cond.captions)
        has_labels, has_text = cond.labels is not None, cond.text_ids is not None
        if not has_labels and not has_text:
            return None
        if has_labels and has_text:
            raise ValueError("the condition has both labels and a caption: pass the one this model was "
                             f"built for (condition={self.name!r})")
        return self._check(cond)

    def _from_captions(self, captions: list[str]) -> Condition:
        raise ValueError(f"captions need a generator built with condition='text'; this one has "
                         f"condition={self.name!r}")

    def _check(self, cond: Condition) -> Condition:
        raise NotImplementedError

    # ------------------------------------------------------------------ embedding

    def embed(self, model: Any, cond: Condition | None, batch: int, drop: Tensor | None) -> CondState:
        """The condition (None: the null one; rows of `drop`: dropped to the null one) as the
        core takes it, through the modules `build` put on `model`."""
        return CondState()

    def null_state(self, model: Any, batch: int) -> CondState:
        """The learned null condition of `batch` rows: the unconditional half of guidance."""
        return self.embed(model, None, batch, None)


@register_condition("none")
class NoCondition(ConditionKind):
    """Unconditional: nothing to embed; families start from a learned token instead."""

    conditional = False

    def _check(self, cond: Condition) -> Condition:
        raise ValueError("this generator is unconditional (condition='none') but got a condition: "
                         "pass cond=None, or build it with condition='class' or 'text'")


@register_condition("class")
class ClassCondition(ConditionKind):
    """Class labels in [0, num_classes), -1 = the learned null class (`ClassEmbedder`)."""

    uses_labels = True
    adaln = True

    @classmethod
    def check_config(cls, config: Any) -> None:
        if config.num_classes < 1:
            raise ValueError("condition='class' needs num_classes >= 1 (e.g. 24 for shapes, 10 for digits); "
                             "use condition='none' for an unconditional model")

    def build(self, model: Any) -> None:
        model.class_emb = ClassEmbedder(self.num_classes, model.config.width)
        model.text = None

    def make(self, labels: Any = None, captions: str | list[str] | None = None, *, truncate: bool = False,
             device: torch.device | str | None = None) -> Condition:
        if labels is None:
            raise ValueError("this generator is class-conditional: pass labels (ints in [0, num_classes), "
                             "-1 = unconditional)")
        return Condition(labels=torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1))

    def _check(self, cond: Condition) -> Condition:
        if cond.labels is None:
            raise ValueError("this generator is class-conditional but got a caption: pass class labels "
                             "(Condition(labels=LongTensor (B,))), or build it with condition='text'")
        labels, n = cond.labels, self.num_classes
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a LongTensor (B,), got {tuple(labels.shape)} {labels.dtype}")
        if labels.numel() and (int(labels.min()) < -1 or int(labels.max()) >= n):
            raise ValueError(f"labels in [{int(labels.min())}, {int(labels.max())}] outside [-1, {n - 1}] "
                             f"(num_classes {n}; -1 = unconditional): use the dataset this model was built for")
        return Condition(labels=labels.long())

    def embed(self, model: Any, cond: Condition | None, batch: int, drop: Tensor | None) -> CondState:
        labels = cond.labels if cond is not None else torch.full((batch,), -1, device=model.device)
        return CondState(vector=model.class_emb(labels, drop))                 # (B, D)


@register_condition("text")
class TextCondition(ConditionKind):
    """Captions: token ids of the model's own text tokenizer, through a text encoder to
    cross-attention states and a pooled adaLN vector (`TextConditioner`)."""

    uses_captions = True
    adaln = True
    cross_attention = True

    @classmethod
    def check_config(cls, config: Any) -> None:
        if config.text_length < 1:
            raise ValueError(f"text_length must be >= 1, got {config.text_length}")

    @classmethod
    def prepare(cls, config: Any, text_tokenizer: Any, *, family: str, frozen_encoder_ok: bool) -> tuple[Any, Any]:
        """Caption models own their text tokenizer; vocabulary size and pad id come from it."""
        if config.text_encoder_path:
            if not frozen_encoder_ok:
                raise ValueError(f"the {family!r} family puts caption tokens into its own sequence and "
                                 f"cannot use a frozen encoder: drop text_encoder_path")
            if text_tokenizer is None:
                text_tokenizer, pad = load_hf_tokenizer(config.text_encoder_path)
            else:   # reloading a checkpoint: the pad id was saved with it
                pad = config.text_pad_id if config.text_vocab_size else pad_id_of(text_tokenizer)
        elif text_tokenizer is None:
            raise ValueError("condition='text' needs a text tokenizer: train one with "
                             "tokgen.generators.train_text_tokenizer(captions, vocab_size) and pass "
                             "text_tokenizer=..., or set text_encoder_path to a local Hugging Face encoder")
        else:
            pad = pad_id_of(text_tokenizer)
        vocab = text_tokenizer.get_vocab_size()
        if config.text_vocab_size and config.text_vocab_size != vocab:
            raise ValueError(f"config.text_vocab_size {config.text_vocab_size} != the text tokenizer's "
                             f"{vocab}: pass the tokenizer the model was trained with (or text_vocab_size=0)")
        return dataclasses.replace(config, text_vocab_size=vocab, text_pad_id=pad), text_tokenizer

    def build(self, model: Any) -> None:
        cfg = model.config
        model.class_emb = None
        if cfg.text_encoder_path:
            encoder = FrozenHFTextEncoder(cfg.text_encoder_path)
            model.text = TextConditioner(encoder, encoder.width, cfg.width)
            return
        encoder = TextEncoder(cfg.text_vocab_size, cfg.text_length, cfg.width, cfg.text_depth, cfg.heads,
                              cfg.mlp_ratio, cfg.dropout)
        model.text = TextConditioner(encoder, cfg.width, cfg.width)

    def make(self, labels: Any = None, captions: str | list[str] | None = None, *, truncate: bool = False,
             device: torch.device | str | None = None) -> Condition:
        if captions is None:
            raise ValueError("this generator is caption-conditional: pass captions (a list of strings)")
        captions = [captions] if isinstance(captions, str) else list(captions)   # a bare string is one caption
        bad = [c for c in captions if not isinstance(c, str)]
        if bad:
            raise ValueError(f"captions must be strings, got {type(bad[0]).__name__} {bad[0]!r}: pass a list of "
                             f"strings (or one string)")
        ids, mask = encode_captions(self.text_tokenizer, captions, self.text_length,
                                    pad_id=self.text_pad_id, truncate=truncate)
        return Condition(text_ids=ids.to(device), text_mask=mask.to(device))

    def _from_captions(self, captions: list[str]) -> Condition:
        return self.make(captions=captions)

    def _check(self, cond: Condition) -> Condition:
        if cond.text_ids is None:
            raise ValueError("this generator is caption-conditional but got class labels: pass captions "
                             "(gen.make_condition(captions=[...])), or build it with condition='class'")
        ids, mask, L = cond.text_ids, cond.text_mask, self.text_length
        if ids.dim() != 2 or ids.shape[1] != L or ids.is_floating_point():
            raise ValueError(f"text_ids must be a LongTensor (B, {L}) (text_length {L}), got "
                             f"{tuple(ids.shape)} {ids.dtype}: build it with gen.make_condition(captions=...)")
        if mask is None:
            raise ValueError("text_ids need a text_mask (B, L), True on real tokens: use gen.make_condition")
        if mask.shape != ids.shape:
            raise ValueError(f"text_mask {tuple(mask.shape)} must match text_ids {tuple(ids.shape)}")
        v = self.text_vocab_size
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= v):
            raise ValueError(f"text ids in [{int(ids.min())}, {int(ids.max())}] outside [0, {v - 1}]: the "
                             f"captions were tokenized by another tokenizer; use gen.make_condition(captions=...)")
        return Condition(text_ids=ids.long(), text_mask=mask != 0)

    def embed(self, model: Any, cond: Condition | None, batch: int, drop: Tensor | None) -> CondState:
        if cond is None:
            length = self.text_length + model.text.encoder.extra_tokens         # as a real caption's
            ctx, cmask, pooled = model.text.null(batch, length, model.device, model.dtype)
        else:
            ctx, cmask, pooled = model.text(cond.text_ids, cond.text_mask, drop)
        return CondState(vector=pooled, context=ctx, context_mask=cmask)


CONDITIONS = tuple(CONDITION_KINDS)      # ("none", "class", "text"): the names config.condition takes
