"""The generator interface every family implements, the facts each family declares, the family
registry and checkpoints.

    gen = build_generator("maskgit", tokenizer.spec, MaskGITConfig(num_classes=24))
    loss, logs = gen.loss(tokens, cond)              # tokens: list of (B, s, s) maps, as encode returns
    maps = gen.generate(cond, cfg_scale=3.0, generator=torch.Generator(gen.device).manual_seed(0))
    gen.save_pretrained("ckpt/gen");  gen = load_generator("ckpt/gen")

`generate` takes the same arguments in every family:
    cond          Condition | dict | labels | None (see conditioning.py; what the model takes is
                  its condition kind's business, `gen.conditioning`, condition_kinds.py)
    num_samples   rows to draw; defaults to the condition's batch (required when cond is None)
    steps         sampling steps; None = the model's default (`sampling_steps()`); fixed in the
                  families that declare `fixed_steps` (AR one per token, VAR one per scale)
    cfg_scale     classifier-free guidance s in l = l_u + s (l_c - l_u); 1 = off (no extra work)
    temperature, top_k, top_p   the usual filters (sampling.py)
    generator     torch.Generator: all randomness comes from it
    known         {"tokens": [maps], "mask": [bool maps]} (True = given): the given tokens are kept
                  exactly; the family fills the rest (masks as its `known_support` says: AR takes
                  a raster prefix only, a ValueError otherwise)
and returns one LongTensor (B, s, s) per scale.

Each family declares what it is as class attributes, read by tools instead of tables keyed by
family name (`Generator` lists them): `default_steps` / `fixed_steps`, `compare_steps`,
`likelihood` ("exact": `nll_bits`; "bound": `elbo_bits`), `needs_multiscale`, `known_support`,
`default_cfg_scale` (`resolve_cfg_scale()`) and `default_top_p`.

Checkpoints are a directory: config.json (format, family, spec, config), model.safetensors, and
for caption models tokenizer.json (and text_encoder/ for a frozen Hugging Face encoder).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tokgen.hub import HubMixin
from tokgen.io import check_state, read_model, write_model, writing_dir

from .condition_kinds import ConditionKind, condition_kind
from .conditioning import CondState, Condition, as_condition
from .config import GeneratorConfig, resolve_config
from .sampling import guided
from .spec import TokenSpec, as_spec, check_token_maps, flatten_tokens
from .text import FrozenHFTextEncoder, load_text_tokenizer

TEXT_TOKENIZER_NAME = "tokenizer.json"
TEXT_ENCODER_DIR = "text_encoder"
FORMAT = "tokgen.Generator"
FORMAT_VERSION = 1

FAMILIES: dict[str, type["Generator"]] = {}


KNOWN_SUPPORT = ("any", "raster-prefix")
LIKELIHOODS = (None, "exact", "bound")


def register_family(name: str):
    """Class decorator: `@register_family("ar")` makes the class buildable by name, once its
    declared facts (see `Generator`) agree with each other."""
    def wrap(cls: type[Generator]) -> type[Generator]:
        if name in FAMILIES and FAMILIES[name] is not cls:
            raise ValueError(f"generator family {name!r} is already registered by {FAMILIES[name].__name__}")
        _check_facts(name, cls)
        cls.family = name
        cls.display_name = cls.__dict__.get("display_name") or name   # a subclass does not inherit its parent's
        FAMILIES[name] = cls
        return cls
    return wrap


def _check_facts(name: str, cls: type["Generator"]) -> None:
    """A family's facts are what tools act on: refuse a class whose facts contradict each other."""
    problems = []
    if (cls.default_steps is None) == (cls.fixed_steps is None):
        problems.append("declare exactly one of default_steps (steps are a choice) and fixed_steps (they are not)")
    if cls.fixed_steps is not None and cls.compare_steps:
        problems.append("a fixed step count has no compare_steps sweep: leave it ()")
    if cls.fixed_steps is None and not cls.compare_steps:
        problems.append("declare compare_steps, the step counts `tokgen compare` sweeps")
    if cls.likelihood not in LIKELIHOODS:
        problems.append(f"likelihood must be one of {LIKELIHOODS}, got {cls.likelihood!r}")
    elif (cls.likelihood is not None) != callable(getattr(cls, "nll_bits", None)):
        problems.append("an nll_bits method and a likelihood go together: declare likelihood 'exact' or "
                        "'bound' with it, None without it")
    if cls.likelihood == "bound" and not callable(getattr(cls, "elbo_bits", None)):
        problems.append("likelihood='bound' needs an elbo_bits method")
    if cls.known_support not in KNOWN_SUPPORT:
        problems.append(f"known_support must be one of {KNOWN_SUPPORT}, got {cls.known_support!r}")
    if problems:
        raise ValueError(f"generator family {name!r} ({cls.__name__}): " + "; ".join(problems))


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


class Generator(nn.Module, HubMixin, loader="tokgen.generators:load_generator", tags=("image-generation",),
                card_fields=("family", "condition", "width", "depth", "heads"), tag_fields=("family",),
                card_title="tokgen {family} generator",
                card_summary="A {family} generator of image tokens (condition: {condition}) for a tokenizer with "
                             "{codebook_size} codes and token maps of sides {scales}."):
    """Base class: the family's facts, condition and token checks, checkpoints.  Families
    implement `loss`, `generate`, `logits` and `sampling_steps`, and override the facts below.

    The facts are class attributes, so that tools read them off `family_class(name)` instead of
    keeping tables keyed by family name (tests/test_generators_facts.py holds every family to
    them)."""

    family: ClassVar[str] = ""
    display_name: ClassVar[str] = ""             # how reports spell it ("MaskGIT"); "" = the registered name
    config_class: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    uses_text_encoder: ClassVar[bool] = True     # False: text tokens go into the model's own sequence (DALL-E)
    # sampling steps: what generate(steps=None) runs under the family's default config (None when
    # the count is fixed; a model's config may choose another: `sampling_steps()` says), and, for
    # a fixed count, what fixes it ("one step per token"); None when steps are a choice
    default_steps: ClassVar[int | None] = None
    fixed_steps: ClassVar[str | None] = None
    compare_steps: ClassVar[tuple[int, ...]] = ()   # the step counts `tokgen compare` sweeps; () = the fixed count
    # the likelihood the family computes: "exact" (`nll_bits` is the NLL), "bound" (`elbo_bits`, an
    # upper bound on it, also as `nll_bits`), None (neither method)
    likelihood: ClassVar[str | None] = None
    needs_multiscale: ClassVar[bool] = False      # True: the method is made for multi-scale tokenizers (VAR)
    # the masks generate(known=...) accepts: "any" (any set of given tokens) or "raster-prefix"
    # (every given token comes before every unknown one in sequence order); others are a ValueError
    known_support: ClassVar[str] = "any"
    # the guidance scale and nucleus mass samplers use when the caller leaves them open
    # (`resolve_cfg_scale`, train.tasks.generator.SampleConfig); None = no nucleus filter
    default_cfg_scale: ClassVar[float] = 3.0
    default_top_p: ClassVar[float | None] = None

    def __init__(self, spec: Any, config: GeneratorConfig | dict | None = None, *, text_tokenizer=None):
        super().__init__()
        self.spec: TokenSpec = as_spec(spec)
        config = resolve_config(self.config_class, config)
        kind = condition_kind(config.condition)
        config, text_tokenizer = kind.prepare(config, text_tokenizer, family=self.family,
                                              frozen_encoder_ok=self.uses_text_encoder)
        config.validate()
        self.config = config
        # what the model is conditioned on, asked instead of comparing config.condition strings;
        # a plain object, not a module: the embedding modules it builds sit on the model itself
        self.conditioning: ConditionKind = kind(config, text_tokenizer)

    @property
    def text_tokenizer(self):
        """The caption tokenizer of a caption model (saved with it); None for the other kinds."""
        return self.conditioning.text_tokenizer

    # ------------------------------------------------------------------ the interface

    def loss(self, tokens: list[Tensor], cond: Any = None) -> tuple[Tensor, dict[str, Tensor]]:
        """(the training loss, logs): logs map names to detached 0-dim tensors on the model's
        device, never .item() (a host sync every step on a GPU); the training loop reads them
        once per log_every steps."""
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

    def sampling_steps(self, steps: int | None = None) -> int:
        """The steps generate(steps=steps) runs on this model: its config's default when None,
        checked (a ValueError naming what is allowed; a fixed count accepts only itself)."""
        raise NotImplementedError

    def resolve_cfg_scale(self, cfg_scale: float | None = None) -> float:
        """cfg_scale, or when None the scale to sample this model with: the family's
        default_cfg_scale, or 1.0 (off) for an unconditional model, which has no null to guide by."""
        if cfg_scale is not None:
            return float(cfg_scale)
        return float(self.default_cfg_scale) if self.conditioning.conditional else 1.0

    def _fixed_step_count(self, steps: int | None, count: int, what: str) -> int:
        """`sampling_steps` of a family with fixed_steps: `count` (what it is: `what`), or an error."""
        if steps is not None and steps != count:
            raise ValueError(f"{self.family!r} samples with a fixed step count ({self.fixed_steps}): steps must be "
                             f"None or {count} ({what}), got {steps}")
        return count

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
        need not ask which kind it is."""
        return self.conditioning.make(labels, captions, truncate=truncate, device=self.device)

    def _condition(self, cond: Any, batch: int | None = None) -> Condition | None:
        """Validate `cond` against the model's conditioning; tokenizes captions; moves to device."""
        cond = as_condition(cond)
        if cond is None:
            return None
        cond = self.conditioning.check(cond)
        if cond is None:
            return None
        if batch is not None and cond.batch_size != batch:
            raise ValueError(f"the condition has {cond.batch_size} rows but the tokens have {batch}: "
                             f"pass one condition per token map")
        return cond.to(self.device)

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
        if cfg_scale != 1.0 and not self.conditioning.conditional:
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
        if self.known_support == "raster-prefix" and (flat_mask[:, 1:] & ~flat_mask[:, :-1]).any():
            others = sorted(f for f, c in FAMILIES.items() if c.known_support == "any")
            raise ValueError(f"{self.family!r} completes a raster prefix only: known['mask'] must cover the first "
                             f"tokens in raster order (whole first rows, then the start of the next; coarse scales "
                             f"first) with nothing given after the first unknown token. For other regions "
                             f"(inpainting, outpainting) use one of {others}")
        flat = torch.where(flat_mask, flatten_tokens(tokens).to(self.device), 0)
        return flat, flat_mask

    # ------------------------------------------------------------------ adaLN / cross-attention conditioning

    def _build_condition_embedders(self) -> None:
        """`class_emb` and `text` as the condition kind builds them (None where unused): the
        modules `_condition_state` reads."""
        self.conditioning.build(self)

    def _condition_state(self, cond: Condition | None, batch: int, drop: Tensor | None) -> CondState:
        """Class label -> adaLN vector; caption -> cross-attention states + pooled adaLN vector;
        cond None (or dropped rows) -> the learned null condition."""
        return self.conditioning.embed(self, cond, batch, drop)

    def _guided_state(self, cond: Condition | None, batch: int, cfg_scale: float) -> tuple[CondState, bool]:
        """The sampling condition: B rows, or [conditional; null] 2B rows when guidance is on."""
        state, doubled = self._condition_state(cond, batch, None), guided(cfg_scale)
        if doubled:
            state = state.cat(self.conditioning.null_state(self, batch))
        return state, doubled

    # ------------------------------------------------------------------ checkpoints

    def _persistent_state(self) -> dict[str, Tensor]:
        """Weights that go into model.safetensors (a frozen HF encoder is saved on its own)."""
        frozen = tuple(f"{name}." for name, m in self.named_modules() if isinstance(m, FrozenHFTextEncoder))
        return {k: v for k, v in self.state_dict().items() if not k.startswith(frozen or ("\0",))}

    def save_pretrained(self, save_directory: str | os.PathLike, *, training: dict | None = None,
                        license: str | None = None) -> Path:
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
            self.write_model_card(tmp, load_from=save_directory, training=training, license=license)   # README.md
        return Path(save_directory)

    @classmethod
    def _from_folder(cls, directory: str | os.PathLike, *, spec: Any = None,  # HubMixin.from_pretrained: dir or hub id
                     device: str | torch.device = "cpu") -> "Generator":
        """Load a directory written by `save_pretrained`, in eval mode.  Called on `Generator` it
        builds whichever family the checkpoint holds; `spec` (optional) checks that the checkpoint
        was trained on tokens of this tokenizer spec."""
        directory = Path(directory)
        meta, state = _read_folder(directory)
        family = meta["family"]
        if cls.family and cls.family != family:
            raise ValueError(f"{directory} holds a {family!r} generator, not {cls.family!r}: load it with "
                             f"load_generator(dir) or {family_class(family).__name__}.from_pretrained")
        try:
            saved_spec = as_spec(meta["spec"])
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{directory / 'config.json'}: its spec is not a token spec ({e}): the file was edited "
                             f"or damaged; save the generator again") from None
        if spec is not None and as_spec(spec) != saved_spec:
            raise ValueError(f"{directory} was trained on tokens of spec {saved_spec} but the tokenizer has "
                             f"{as_spec(spec)}: use the tokenizer the generator was trained with")
        klass = family_class(family)
        try:
            config = klass.config_class.from_dict(meta["config"])
        except ValueError as e:
            raise ValueError(f"{directory / 'config.json'}: {e} (the file was edited or damaged; save the "
                             f"generator again)") from None
        tokenizer = None
        if condition_kind(config.condition).uses_captions:
            if config.text_encoder_path:
                config.text_encoder_path = str(directory / config.text_encoder_path)
            tokenizer = load_text_tokenizer(directory / TEXT_TOKENIZER_NAME)
        model = klass(saved_spec, config, text_tokenizer=tokenizer)
        _load_checked(model, state, source=str(directory))
        return model.to(device).eval()


def _read_folder(directory: Path) -> tuple[dict, dict[str, Tensor]]:
    """`read_model` of a generator folder (it names a damaged config.json or model.safetensors),
    and the generator's own entry, the family name."""
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file, not a generator folder: pass the folder "
                                 f"save_pretrained wrote")
    meta, state = read_model(directory, FORMAT, "tokenizers load with VQTokenizer.from_pretrained")
    if not isinstance(meta.get("family"), str):
        raise ValueError(f"{directory / 'config.json'} lacks or mistypes 'family' (str): the file was edited or "
                         f"damaged; save the generator again")
    return meta, state


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
