"""The generator interface every family implements, the family registry and checkpoints.

    gen = build_generator("maskgit", tokenizer.spec, MaskGITConfig(num_classes=24))
    loss, logs = gen.loss(tokens, cond)              # tokens: list of (B, s, s) maps, as encode returns
    maps = gen.generate(cond, cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
    gen.save_pretrained("ckpt/gen");  gen = load_generator("ckpt/gen")

`generate` takes the same arguments in every family:
    cond          Condition | dict | labels | None (see conditioning.py)
    num_samples   rows to draw; defaults to the condition's batch (required when cond is None)
    steps         sampling steps (family default when None; AR's is fixed at one per token)
    cfg_scale     classifier-free guidance s in l = l_u + s (l_c - l_u); 1 = off (no extra work)
    temperature, top_k, top_p   the usual filters (sampling.py)
    generator     torch.Generator: all randomness comes from it
    known         {"tokens": [maps], "mask": [bool maps]} (True = given): the given tokens are kept
                  exactly; the family fills the rest (AR: a raster prefix only)
and returns one LongTensor (B, s, s) per scale.

Checkpoints are a directory: config.json (format, family, spec, config), model.safetensors, and
for caption models tokenizer.json (and text_encoder/ for a frozen Hugging Face encoder).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tokgen.io import check_state, read_model, write_model, writing_dir

from .conditioning import ClassEmbedder, Condition, TextConditioner, as_condition
from .config import GeneratorConfig, resolve_config
from .sampling import guided
from .spec import TokenSpec, as_spec, check_token_maps, flatten_tokens
from .text import (FrozenHFTextEncoder, TextEncoder, encode_captions, load_hf_tokenizer, load_text_tokenizer,
                   pad_id_of)

TEXT_TOKENIZER_NAME = "tokenizer.json"
TEXT_ENCODER_DIR = "text_encoder"
FORMAT = "tokgen.Generator"
FORMAT_VERSION = 1

FAMILIES: dict[str, type["Generator"]] = {}


@dataclass
class CondState:
    """A condition embedded once per call, in the form the core takes: an adaLN vector (or a
    prefix token) and/or cross-attention states (built by `Generator._condition_state`)."""
    vector: Tensor | None = None         # (B, D) class embedding or pooled caption, for adaLN
    prefix: Tensor | None = None         # (B, 1, D) a class token in front of the sequence instead
    context: Tensor | None = None        # (B, S, D) caption states for cross-attention
    context_mask: Tensor | None = None   # (B, S) bool, True on real states

    def cat(self, other: "CondState") -> "CondState":
        """Rows of self, then rows of other (the [conditional; null] batch of guidance)."""
        join = lambda a, b: None if a is None else torch.cat([a, b])
        return CondState(**{f.name: join(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})


def register_family(name: str):
    """Class decorator: `@register_family("ar")` makes the class buildable by name."""
    def wrap(cls: type[Generator]) -> type[Generator]:
        if name in FAMILIES and FAMILIES[name] is not cls:
            raise ValueError(f"generator family {name!r} is already registered by {FAMILIES[name].__name__}")
        cls.family = name
        FAMILIES[name] = cls
        return cls
    return wrap


def family_class(family: str) -> type["Generator"]:
    if family not in FAMILIES:
        raise ValueError(f"unknown generator family {family!r}: choose one of {sorted(FAMILIES)}")
    return FAMILIES[family]


def build_generator(family: str, spec: Any, config: Any = None, *, text_tokenizer=None,
                    **overrides: Any) -> "Generator":
    """A new generator of `family` for tokens of `spec`; `config` is the family's config, a dict
    of its fields or None (defaults), with keyword overrides on top."""
    cls = family_class(family)
    return cls(spec, resolve_config(cls.config_class, config, **overrides), text_tokenizer=text_tokenizer)


def load_generator(directory: str | os.PathLike, **kwargs: Any) -> "Generator":
    """Any family's checkpoint; see `Generator.from_pretrained`."""
    return Generator.from_pretrained(directory, **kwargs)


class Generator(nn.Module):
    """Base class: condition and token checks, text conditioning, checkpoints.  Families
    implement `loss`, `generate` and `logits`."""

    family: ClassVar[str] = ""
    config_class: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    uses_text_encoder: ClassVar[bool] = True     # False: text tokens go into the model's own sequence (DALL-E)
    # the guidance scale and nucleus mass samplers use when the caller leaves them open
    # (train.tasks.generator.SampleConfig); None = no nucleus filter
    default_cfg_scale: ClassVar[float] = 3.0
    default_top_p: ClassVar[float | None] = None

    def __init__(self, spec: Any, config: GeneratorConfig | dict | None = None, *, text_tokenizer=None):
        super().__init__()
        self.spec: TokenSpec = as_spec(spec)
        config = resolve_config(self.config_class, config)
        self.text_tokenizer = None
        if config.condition == "text":
            config = self._attach_text_tokenizer(config, text_tokenizer)
        elif text_tokenizer is not None:
            raise ValueError(f"a text tokenizer was given but condition={config.condition!r}: build with "
                             f"condition='text' for captions, or drop text_tokenizer")
        config.validate()
        self.config = config

    # ------------------------------------------------------------------ the interface

    def loss(self, tokens: list[Tensor], cond: Any = None) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def generate(self, cond: Any = None, *, num_samples: int | None = None, steps: int | None = None,
                 cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 known: Any = None) -> list[Tensor]:
        raise NotImplementedError

    def logits(self, tokens: list[Tensor], cond: Any = None) -> Tensor:
        """(B, N, V) logits over the codebook for every image position (the family's own
        teacher-forced / fully-masked reading), in eval mode; for checks and scoring."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ------------------------------------------------------------------ conditions

    def attach_tokenizer(self, tokenizer) -> "Generator":
        """Take what sampling needs from the tokenizer whose tokens this model learned (checked by
        spec).  Most families need nothing; VAR overrides it to build each next scale's input
        through the multi-scale quantizer.  Returns the model."""
        if hasattr(tokenizer, "spec") and as_spec(tokenizer.spec) != self.spec:
            raise ValueError(f"the tokenizer has spec {as_spec(tokenizer.spec)} but this generator was built for "
                             f"{self.spec}: attach the tokenizer whose tokens it models")
        return self

    def make_condition(self, labels: Any = None, captions: str | list[str] | None = None, *,
                       truncate: bool = False) -> Condition | None:
        """The condition this model is built for, from python values: pass what a dataset batch
        has (labels: ints / LongTensor, captions: strings) and the model takes the part it uses
        (class -> labels, text -> captions tokenized and padded, none -> None), so that trainers
        need no `if condition == ...`."""
        kind = self.config.condition
        if kind == "none":
            return None
        if kind == "class":
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels (ints in [0, num_classes), "
                                 "-1 = unconditional)")
            return Condition(labels=torch.as_tensor(labels, dtype=torch.long, device=self.device).reshape(-1))
        if captions is None:
            raise ValueError("this generator is caption-conditional: pass captions (a list of strings)")
        captions = [captions] if isinstance(captions, str) else list(captions)   # a bare string is one caption
        bad = [c for c in captions if not isinstance(c, str)]
        if bad:
            raise ValueError(f"captions must be strings, got {type(bad[0]).__name__} {bad[0]!r}: pass a list of "
                             f"strings (or one string)")
        ids, mask = encode_captions(self.text_tokenizer, captions, self.config.text_length,
                                    pad_id=self.config.text_pad_id, truncate=truncate)
        return Condition(text_ids=ids.to(self.device), text_mask=mask.to(self.device))

    def _condition(self, cond: Any, batch: int | None = None) -> Condition | None:
        """Validate `cond` against the model's conditioning; tokenizes captions; moves to device."""
        cond = as_condition(cond)
        if cond is None:
            return None
        kind = self.config.condition
        if cond.captions is not None:
            if cond.text_ids is not None:
                raise ValueError("pass captions or text_ids, not both")
            self._require("text", "captions")
            cond = self.make_condition(captions=cond.captions)
        has_labels, has_text = cond.labels is not None, cond.text_ids is not None
        if not has_labels and not has_text:
            return None
        if has_labels and has_text:
            raise ValueError("the condition has both labels and a caption: pass the one this model was "
                             f"built for (condition={kind!r})")
        if kind == "none":
            raise ValueError("this generator is unconditional (condition='none') but got a condition: "
                             "pass cond=None, or build it with condition='class' or 'text'")
        if kind == "class" and not has_labels:
            raise ValueError("this generator is class-conditional but got a caption: pass class labels "
                             "(Condition(labels=LongTensor (B,))), or build it with condition='text'")
        if kind == "text" and not has_text:
            raise ValueError("this generator is caption-conditional but got class labels: pass captions "
                             "(gen.make_condition(captions=[...])), or build it with condition='class'")
        cond = self._check_labels(cond) if kind == "class" else self._check_text(cond)
        if batch is not None and cond.batch_size != batch:
            raise ValueError(f"the condition has {cond.batch_size} rows but the tokens have {batch}: "
                             f"pass one condition per token map")
        return cond.to(self.device)

    def _check_labels(self, cond: Condition) -> Condition:
        labels, n = cond.labels, self.config.num_classes
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a LongTensor (B,), got {tuple(labels.shape)} {labels.dtype}")
        if labels.numel() and (int(labels.min()) < -1 or int(labels.max()) >= n):
            raise ValueError(f"labels in [{int(labels.min())}, {int(labels.max())}] outside [-1, {n - 1}] "
                             f"(num_classes {n}; -1 = unconditional): use the dataset this model was built for")
        return Condition(labels=labels.long())

    def _check_text(self, cond: Condition) -> Condition:
        ids, mask, L = cond.text_ids, cond.text_mask, self.config.text_length
        if ids.dim() != 2 or ids.shape[1] != L or ids.is_floating_point():
            raise ValueError(f"text_ids must be a LongTensor (B, {L}) (text_length {L}), got "
                             f"{tuple(ids.shape)} {ids.dtype}: build it with gen.make_condition(captions=...)")
        if mask is None:
            raise ValueError("text_ids need a text_mask (B, L), True on real tokens: use gen.make_condition")
        if mask.shape != ids.shape:
            raise ValueError(f"text_mask {tuple(mask.shape)} must match text_ids {tuple(ids.shape)}")
        v = self.config.text_vocab_size
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= v):
            raise ValueError(f"text ids in [{int(ids.min())}, {int(ids.max())}] outside [0, {v - 1}]: the "
                             f"captions were tokenized by another tokenizer; use gen.make_condition(captions=...)")
        return Condition(text_ids=ids.long(), text_mask=mask != 0)

    def _require(self, kind: str, what: str) -> None:
        if self.config.condition != kind:
            raise ValueError(f"{what} need a generator built with condition={kind!r}; this one has "
                             f"condition={self.config.condition!r}")

    def _batch_size(self, cond: Condition | None, num_samples: int | None, known_batch: int | None) -> int:
        sizes = {name: b for name, b in (("cond", cond.batch_size if cond is not None else None),
                                        ("num_samples", num_samples), ("known", known_batch)) if b is not None}
        if not sizes:
            raise ValueError("nothing says how many samples to draw: pass num_samples (or a condition batch)")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"batch sizes disagree: {sizes}: make them equal (or leave num_samples=None)")
        b = next(iter(sizes.values()))
        if b < 1:
            raise ValueError(f"num_samples must be >= 1, got {b}")
        return b

    def _check_sampling(self, cfg_scale: float, generator: torch.Generator | None) -> None:
        """generate()'s checks shared by every family: guidance needs a condition, and the random
        generator must live on the model's device (torch draws on the generator's device)."""
        if cfg_scale != 1.0 and self.config.condition == "none":
            raise ValueError(f"cfg_scale={cfg_scale} needs a conditional model; this one is unconditional "
                             f"(condition='none'): use cfg_scale=1.0")
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(f"generator= is a {generator.device.type} torch.Generator but the model is on "
                             f"{self.device}: pass torch.Generator(device={str(self.device)!r}).manual_seed(seed)")

    # ------------------------------------------------------------------ tokens

    def _tokens(self, tokens: Any) -> Tensor:
        """Checked token maps -> (B, N) on the model's device."""
        return flatten_tokens(check_token_maps(tokens, self.spec)).to(self.device)

    def _factorised_nll_bits(self, tokens: list[Tensor], cond: Any) -> Tensor:
        """Bits per token of each image under the per-position logits (B,): the exact negative
        log-likelihood for families whose logits factorise the joint (AR's raster order, VAR's
        scales)."""
        logits = self.logits(tokens, cond)                                      # (B, N, V)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), self._tokens(tokens),
                                                reduction="none")               # (B, N) nats
        return nll.mean(dim=1) / math.log(2)

    def _known(self, known: Any) -> tuple[Tensor, Tensor] | None:
        """known -> (tokens (B, N) long, mask (B, N) bool), checked; ids only checked where given."""
        if known is None:
            return None
        if isinstance(known, dict):
            missing = {"tokens", "mask"} - set(known)
            if missing:
                raise ValueError(f"known needs keys 'tokens' and 'mask', missing {sorted(missing)}")
            tokens, mask = known["tokens"], known["mask"]
        elif isinstance(known, (tuple, list)) and len(known) == 2 and not isinstance(known[0], Tensor):
            tokens, mask = known
        elif hasattr(known, "tokens") and hasattr(known, "mask"):
            tokens, mask = known.tokens, known.mask
        else:
            raise ValueError("known must be {'tokens': [maps], 'mask': [bool maps]} (True = given), one map per scale")
        if isinstance(mask, Tensor) or not isinstance(mask, (list, tuple)) or \
                any(not isinstance(m, Tensor) or m.dtype != torch.bool for m in mask):
            raise ValueError("known['mask'] must be a list of bool tensors (B, s, s), one per scale (True = given)")
        check_token_maps(list(mask), self.spec, what="known['mask']", check_range=False)
        tokens = check_token_maps(tokens, self.spec, what="known['tokens']", where=list(mask))
        if tokens[0].shape[0] != mask[0].shape[0]:
            raise ValueError(f"known tokens have {tokens[0].shape[0]} rows but the mask {mask[0].shape[0]}")
        flat_mask = flatten_tokens(mask).to(self.device)
        flat = torch.where(flat_mask, flatten_tokens(tokens).to(self.device), 0)
        return flat, flat_mask

    # ------------------------------------------------------------------ adaLN / cross-attention conditioning

    def _build_condition_embedders(self) -> None:
        """`class_emb` (condition="class") and `text` (condition="text"), None otherwise: the modules
        `_condition_state` reads."""
        cfg = self.config
        self.class_emb = ClassEmbedder(cfg.num_classes, cfg.width) if cfg.condition == "class" else None
        self.text = self._build_text_conditioner() if cfg.condition == "text" else None

    def _condition_state(self, cond: Condition | None, batch: int, drop: Tensor | None) -> CondState:
        """Class label -> adaLN vector; caption -> cross-attention states + pooled adaLN vector;
        cond None (or dropped rows) -> the learned null condition."""
        cfg = self.config
        if cfg.condition == "class":
            labels = cond.labels if cond is not None else torch.full((batch,), -1, device=self.device)
            return CondState(vector=self.class_emb(labels, drop))               # (B, D)
        if cfg.condition == "text":
            if cond is None:
                length = cfg.text_length + self.text.encoder.extra_tokens       # as a real caption's
                ctx, cmask, pooled = self.text.null(batch, length, self.device, self.dtype)
            else:
                ctx, cmask, pooled = self.text(cond.text_ids, cond.text_mask, drop)
            return CondState(vector=pooled, context=ctx, context_mask=cmask)
        return CondState()

    def _guided_state(self, cond: Condition | None, batch: int, cfg_scale: float) -> tuple[CondState, bool]:
        """The sampling condition: B rows, or [conditional; null] 2B rows when guidance is on."""
        state, doubled = self._condition_state(cond, batch, None), guided(cfg_scale)
        if doubled:
            state = state.cat(self._condition_state(None, batch, None))
        return state, doubled

    # ------------------------------------------------------------------ text conditioning

    def _attach_text_tokenizer(self, config: GeneratorConfig, text_tokenizer) -> GeneratorConfig:
        """Caption models own their text tokenizer; vocabulary size and pad id come from it."""
        if config.text_encoder_path:
            if not self.uses_text_encoder:
                raise ValueError(f"the {self.family!r} family puts caption tokens into its own sequence and "
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
        self.text_tokenizer = text_tokenizer
        return resolve_config(self.config_class, config, text_vocab_size=vocab, text_pad_id=pad)

    def _build_text_conditioner(self, encoder_path: str | None = None) -> TextConditioner:
        cfg = self.config
        path = encoder_path or cfg.text_encoder_path
        if path:
            encoder = FrozenHFTextEncoder(path)
            return TextConditioner(encoder, encoder.width, cfg.width)
        encoder = TextEncoder(cfg.text_vocab_size, cfg.text_length, cfg.width, cfg.text_depth, cfg.heads,
                              cfg.mlp_ratio, cfg.dropout)
        return TextConditioner(encoder, cfg.width, cfg.width)

    # ------------------------------------------------------------------ checkpoints

    def _persistent_state(self) -> dict[str, Tensor]:
        """Weights that go into model.safetensors (a frozen HF encoder is saved on its own)."""
        frozen = tuple(f"{name}." for name, m in self.named_modules() if isinstance(m, FrozenHFTextEncoder))
        return {k: v for k, v in self.state_dict().items() if not k.startswith(frozen or ("\0",))}

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write config.json + model.safetensors (+ tokenizer.json, text_encoder/) atomically: into
        a temporary directory beside the target, then renamed over it."""
        with writing_dir(save_directory) as tmp:
            meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": self.family,
                    "spec": self.spec.to_dict(), "config": self.config.to_dict()}
            if self.config.text_encoder_path:
                meta["config"]["text_encoder_path"] = TEXT_ENCODER_DIR   # relative to the checkpoint
                _frozen_encoder(self).model.save_pretrained(tmp / TEXT_ENCODER_DIR, safe_serialization=True)
            if self.text_tokenizer is not None:
                self.text_tokenizer.save(str(tmp / TEXT_TOKENIZER_NAME))
            write_model(tmp, meta, self._persistent_state(), family=self.family)
        return Path(save_directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, spec: Any = None,
                        device: str | torch.device = "cpu") -> "Generator":
        """Load a directory written by `save_pretrained`, in eval mode.  Called on `Generator` it
        builds whichever family the checkpoint holds; `spec` (optional) checks that the checkpoint
        was trained on tokens of this tokenizer spec."""
        directory = Path(directory)
        meta, state = read_model(directory, FORMAT, "tokenizers load with VQTokenizer.from_pretrained")
        family = meta["family"]
        if cls.family and cls.family != family:
            raise ValueError(f"{directory} holds a {family!r} generator, not {cls.family!r}: load it with "
                             f"load_generator(dir) or {family_class(family).__name__}.from_pretrained")
        saved_spec = as_spec(meta["spec"])
        if spec is not None and as_spec(spec) != saved_spec:
            raise ValueError(f"{directory} was trained on tokens of spec {saved_spec} but the tokenizer has "
                             f"{as_spec(spec)}: use the tokenizer the generator was trained with")
        klass = family_class(family)
        config = klass.config_class.from_dict(meta["config"])
        tokenizer = None
        if config.condition == "text":
            if config.text_encoder_path:
                config.text_encoder_path = str(directory / config.text_encoder_path)
            tokenizer = load_text_tokenizer(directory / TEXT_TOKENIZER_NAME)
        model = klass(saved_spec, config, text_tokenizer=tokenizer)
        _load_checked(model, state, source=str(directory))
        return model.to(device).eval()


def _frozen_encoder(model: nn.Module) -> FrozenHFTextEncoder:
    for m in model.modules():
        if isinstance(m, FrozenHFTextEncoder):
            return m
    raise ValueError("text_encoder_path is set but the model holds no frozen text encoder")


def _load_checked(model: Generator, state: dict[str, Tensor], source: str) -> None:
    """Strict load that raises one ValueError naming every missing, unexpected and mis-shaped key."""
    check_state(model._persistent_state(), state, source, f"the {model.family!r} generator built from its config",
                "Re-save it with this version of tokgen or retrain.")
    model.load_state_dict(state, strict=False)
