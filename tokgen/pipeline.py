"""Captions (or class labels) in, images out: a generator and the tokenizer whose tokens it learned.

    import tokgen
    pipe = tokgen.Pipeline.from_pretrained("runs/gen/generator")       # the tokenizer it recorded
    pipe = tokgen.Pipeline.from_pretrained("runs/gen/generator", tokenizer="runs/tok/tokenizer")
    pipe = tokgen.Pipeline.from_pretrained("runs/pipe")                 # generator/ + tokenizer/
    images = pipe(["a large red circle at the top left"], num_per_prompt=4, seed=0)   # 4 PIL images
    batch = pipe(labels=[3, 7], output_type="pt")                       # (2, 3, H, W) in [0, 1]
    edited = pipe.inpaint(image, mask, "a small blue square in the center")   # mask: white = redraw
    wider = pipe.outpaint(image, side="right", fraction=0.25, labels=3)
    pipe.save_pretrained("runs/pipe")

Like diffusers' pipelines: the one call a user needs, built on the parts' own APIs (the
generator's `make_condition` / `generate` with `known`, the tokenizer's `encode` / `decode`).
Sampling is seeded per call (`seed`, or `generator=` a torch.Generator on any device): the same
seed and batch size give the same images.

A generator folder records the tokenizer it was trained on (`record_tokenizer`: tokenizer_ref.json
with the folder's path and the sha256 of its weights), so `from_pretrained(generator_dir)` needs no
tokenizer= and refuses a tokenizer whose weights changed since.

The sampling helpers below (`SampleConfig`, `condition_rows`, `sample_tokens`, `decode_tokens`)
are the ones training, evaluation and the `tokgen sample` command use.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tokgen.io import file_sha256

OUTPUT_TYPES = ("pil", "pt", "tokens")
SIDES = ("left", "right", "top", "bottom")
TOKENIZER_REF = "tokenizer_ref.json"          # in a generator folder: the tokenizer it was trained on
TOKENIZER_REF_FORMAT = "tokgen.TokenizerRef"


@dataclass
class SampleConfig:
    steps: int | None = None         # sampling steps (not training steps); None = the family's own (AR: one per token)
    cfg_scale: float | None = None   # classifier-free guidance; None = the family's default (AR 1.5, others 3.0) for conditional models, 1.0 (off) otherwise
    temperature: float = 1.0         # softmax temperature of the sampled tokens (0 = greedy)
    top_k: int | None = None         # keep the k most likely tokens; None = all
    top_p: float | None = None       # nucleus sampling: keep the most likely tokens up to this mass; None = the family's default (AR 0.9, others all), 1.0 = all

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every value in range, else a ValueError (`tokgen.errors.ConfigValueError`) naming the
        field, which the command line reports as its flag (`--top-p 1.5: must be in (0, 1] ...`)."""
        from tokgen.errors import at_least, check_ranges, in_range

        check_ranges(self, [
            ("steps", at_least(1), "sampling steps must be >= 1 (or none: the family's own count)"),
            ("cfg_scale", at_least(0), "the guidance scale must be >= 0 (1 = no guidance, 0 = the unconditional "
                                       "model alone; or none: the family's default)"),
            ("temperature", at_least(0), "the temperature must be a finite number >= 0 (0 = greedy, 1 = as "
                                         "learned)"),
            ("top_k", at_least(1), "top-k must be >= 1 (or none: no top-k filter)"),
            ("top_p", in_range(0, 1, low_open=True), "top-p must be in (0, 1] (1 = no nucleus filter; or none: the "
                                                     "family's default)"),
        ], optional=("steps", "cfg_scale", "top_k", "top_p"), integers=("steps", "top_k"))

    def resolved(self, generator) -> dict[str, Any]:
        """The keyword arguments of `generator.generate`, with the family's guidance scale and
        nucleus mass filled in where they were left open."""
        self.validate()                       # fields may have been set after construction
        cfg = generator.resolve_cfg_scale(self.cfg_scale)
        top_p = self.top_p if self.top_p is not None else generator.default_top_p
        return dict(steps=self.steps, cfg_scale=float(cfg), temperature=self.temperature, top_k=self.top_k,
                    top_p=top_p)


def condition_rows(generator, labels: Any = None, captions: list[str] | None = None, *,
                   truncate: bool = False) -> dict[str, Tensor]:
    """The model's condition for these rows as a dict of CPU tensors (empty: unconditional), so a
    batch can gather rows by index and travel to the device like any tensor dict.  `truncate`:
    cut captions longer than the model's text_length instead of refusing them."""
    cond = generator.make_condition(labels=labels, captions=captions, truncate=truncate)
    if cond is None:
        return {}
    return {k: v.cpu() for k, v in vars(cond).items() if isinstance(v, Tensor)}


def sample_tokens(generator, rows: dict[str, Tensor], n: int, sampling: SampleConfig,
                  seed: int | torch.Generator, batch_size: int = 64,
                  known: dict[str, list[Tensor]] | None = None) -> list[Tensor]:
    """n token maps per scale for the condition `rows` (n rows, or {} for unconditional), drawn in
    batches from one seeded generator on the model's device: the same seed gives the same maps.
    seed: an int, or a torch.Generator on any device (`torch_generator`).  known: `generate`'s
    {"tokens": [maps], "mask": [bool maps]} with n rows (True = given, kept exactly)."""
    device = generator.device
    g = torch_generator(seed, device)
    kwargs = sampling.resolved(generator)
    chunks: list[list[Tensor]] = []
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        cond = {k: v[lo:hi].to(device) for k, v in rows.items()} or None
        part = None if known is None else {key: [m[lo:hi].to(device) for m in maps] for key, maps in known.items()}
        chunks.append(generator.generate(cond, num_samples=hi - lo, generator=g, known=part, **kwargs))
    return [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def torch_generator(seed: int | torch.Generator, device: torch.device | str) -> torch.Generator:
    """The torch.Generator sampling draws from on `device`: seeded from an int; a generator given
    on that device as it is; one given on another device (e.g. a CPU generator for a CUDA model)
    seeds a new one on `device` with a number drawn from it, so it stays reproducible and advances."""
    device = torch.device(device)
    if isinstance(seed, torch.Generator):
        if seed.device.type == device.type:
            return seed
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=seed, device=seed.device))
    elif not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int (or pass generator=torch.Generator()), got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def decode_tokens(tokenizer, maps: list[Tensor], batch_size: int):
    """Token maps (one tensor per scale, N rows) decoded batch by batch: yields (B, 3, H, W)
    float32 CPU images in [0, 1].  Always in float32, also inside an autocast region: a precision
    choice is the generator's, and every family is decoded alike."""
    device = next(tokenizer.parameters()).device
    for lo in range(0, len(maps[0]), batch_size):
        with torch.autocast(device.type, enabled=False):     # entered per batch: nothing leaks past a yield
            images = tokenizer.decode([m[lo:lo + batch_size].to(device) for m in maps]).float().cpu()
        yield images


def prompt_title(prompt: int | str | None) -> str:
    """What an image was conditioned on, for a grid: a class id, a caption, or nothing."""
    if prompt is None or (isinstance(prompt, int) and prompt < 0):
        return "unconditional"
    return f"class {prompt}" if isinstance(prompt, int) else prompt


def known_tokens(tokens: list[Tensor], regenerate: Tensor) -> dict[str, list[Tensor]]:
    """`generate`'s `known` from the encoded tokens of an image (one map per scale, B rows) and the
    pixel region to regenerate (B, H, W) bool, True = redraw: a finest-scale token is redrawn when
    any pixel of its patch is, a coarser scale's token when any finest token under it is (VAR's
    `known_region`); every other token is given and comes back exactly."""
    from tokgen.generators import known_region

    if regenerate.dtype != torch.bool or regenerate.dim() != 3 or regenerate.shape[0] != tokens[-1].shape[0]:
        raise ValueError(f"regenerate must be a bool map (B, H, W) with the tokens' {tokens[-1].shape[0]} rows, "
                         f"got {tuple(regenerate.shape)} {regenerate.dtype}")
    side = tokens[-1].shape[-1]
    finest = F.adaptive_max_pool2d(regenerate[:, None].float(), side)[:, 0] > 0      # (B, S, S)
    return known_region(list(tokens), ~finest.to(tokens[-1].device))


# ---------------------------------------------------------------------------- the recorded tokenizer

def record_tokenizer(generator_dir: str | Path, tokenizer_dir: str | Path) -> Path:
    """Write tokenizer_ref.json into a saved generator folder: the tokenizer folder it was trained on
    (the path as given, resolved, and relative to the generator folder), its spec and the sha256 of
    its model.safetensors, so that `Pipeline.from_pretrained(generator_dir)` finds it and refuses it
    once its weights change.  Call it after `generator.save_pretrained(generator_dir)` (which
    replaces the folder whole).  Refuses a tokenizer of another spec.  Returns the file written."""
    from tokgen.generators import as_spec
    from tokgen.io import CONFIG_NAME, WEIGHTS_NAME
    from tokgen.tokenizers_vq import read_spec

    generator_dir, tokenizer_dir = Path(generator_dir), Path(tokenizer_dir)
    config = generator_dir / CONFIG_NAME
    if not config.is_file():
        raise FileNotFoundError(f"no generator at {generator_dir} ({CONFIG_NAME} missing): record the tokenizer "
                                f"after generator.save_pretrained({str(generator_dir)!r})")
    weights = tokenizer_dir / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no tokenizer weights at {weights}: pass the folder VQTokenizer.save_pretrained wrote")
    spec = read_spec(tokenizer_dir)
    trained_on = json.loads(config.read_text()).get("spec")
    if trained_on is not None and as_spec(trained_on) != as_spec(spec):
        raise ValueError(f"the generator at {generator_dir} was trained on tokens of spec {as_spec(trained_on)} but "
                         f"the tokenizer at {tokenizer_dir} has {as_spec(spec)}: record the tokenizer its tokens "
                         f"came from")
    resolved = tokenizer_dir.resolve()
    record = {"format": TOKENIZER_REF_FORMAT, "format_version": 1,
              "path": str(tokenizer_dir), "resolved": str(resolved),
              "relative": os.path.relpath(resolved, generator_dir.resolve()),
              "spec": spec.to_dict(), "sha256": {WEIGHTS_NAME: file_sha256(weights)}}
    out = generator_dir / TOKENIZER_REF
    tmp = generator_dir / f".{TOKENIZER_REF}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, out)
    return out


def recorded_tokenizer(generator_dir: str | Path) -> Path | None:
    """The tokenizer folder recorded in `generator_dir` (`record_tokenizer`), verified: its
    model.safetensors must have the recorded sha256.  Tried in order: the path relative to the
    generator folder, the path as recorded (a relative one against the generator folder, then the
    working directory), the resolved path; the first whose weights match wins.  None when nothing
    was recorded; FileNotFoundError when no candidate exists, ValueError when they all changed."""
    from tokgen.io import WEIGHTS_NAME

    generator_dir = Path(generator_dir)
    ref_file = generator_dir / TOKENIZER_REF
    if not ref_file.is_file():
        return None
    try:
        ref = json.loads(ref_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{ref_file} is damaged ({e}): pass tokenizer=DIR (tokgen sample --tokenizer DIR), or "
                         f"record the tokenizer again with record_tokenizer") from None
    if not isinstance(ref, dict) or ref.get("format") != TOKENIZER_REF_FORMAT:
        raise ValueError(f"{ref_file} is not a tokenizer record: pass tokenizer=DIR")
    missing = [k for k, kind in (("path", str), ("relative", str), ("resolved", str), ("sha256", dict))
               if not isinstance(ref.get(k), kind)]
    if missing or not isinstance(ref["sha256"].get(WEIGHTS_NAME), str):
        raise ValueError(f"{ref_file} is damaged (missing {missing or ['sha256']}): pass tokenizer=DIR (tokgen "
                         f"sample --tokenizer DIR), or record the tokenizer again with record_tokenizer")
    given = Path(ref["path"])
    candidates = [generator_dir / ref["relative"]] + ([] if given.is_absolute() else [generator_dir / given]) + \
        [given, Path(ref["resolved"])]
    seen, changed = set(), []
    want = ref["sha256"][WEIGHTS_NAME]
    for folder in candidates:
        weights = folder / WEIGHTS_NAME
        if not weights.is_file() or weights.resolve() in seen:
            continue
        seen.add(weights.resolve())
        if file_sha256(weights) == want:
            return folder
        changed.append(weights)
    if changed:
        raise ValueError(f"the tokenizer recorded for the generator at {generator_dir} has changed: {changed[0]} no "
                         f"longer has the sha256 recorded in {ref_file} (the weights the generator's tokens came "
                         f"from). Pass tokenizer=DIR (tokgen sample --tokenizer DIR) explicitly to use it anyway, "
                         f"or the tokenizer the generator was trained on")
    raise FileNotFoundError(f"the tokenizer recorded for the generator at {generator_dir} is gone: no "
                            f"{WEIGHTS_NAME} at {ref['path']!r} (resolved {ref['resolved']}) nor at "
                            f"{ref['relative']!r} beside it. Pass tokenizer=DIR (tokgen sample --tokenizer DIR)")


# ---------------------------------------------------------------------------- the pipeline

class Pipeline:
    """A generator and the tokenizer whose tokens it learned (their specs must agree)."""

    def __init__(self, generator, tokenizer):
        generator.attach_tokenizer(tokenizer)           # the spec check (and VAR's multi-scale quantizer)
        self.generator, self.tokenizer = generator.eval(), tokenizer.eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, *, tokenizer: str | Path | None = None,
                        device: str | torch.device | None = None) -> "Pipeline":
        """A pipeline folder (`generator/` and `tokenizer/`, as `save_pretrained` writes), or a
        generator folder: with `tokenizer=` naming its tokenizer folder, or without it the one the
        folder recorded (`record_tokenizer`; train-generator records it), refused when its weights
        changed since.  device: default cuda when available."""
        from tokgen.generators import load_generator
        from tokgen.tokenizers_vq import VQTokenizer

        path = Path(path)
        if not path.is_dir():
            raise (NotADirectoryError if path.exists() else FileNotFoundError)(
                f"no generator folder at {path}: pass the folder train-generator wrote (<out-dir>/generator) or "
                f"Pipeline.save_pretrained wrote")
        generator_dir = path / "generator" if (path / "generator").is_dir() else path
        if tokenizer is not None:
            tokenizer_dir = Path(tokenizer)
        elif (path / "tokenizer").is_dir():
            tokenizer_dir = path / "tokenizer"
        else:
            tokenizer_dir = recorded_tokenizer(generator_dir)
            if tokenizer_dir is None:
                raise FileNotFoundError(f"no tokenizer for the generator at {generator_dir}: pass tokenizer=DIR "
                                        f"(the tokenizer whose tokens the generator learned), record it once with "
                                        f"tokgen.pipeline.record_tokenizer(generator_dir, tokenizer_dir), or load "
                                        f"a folder written by Pipeline.save_pretrained")
        if not tokenizer_dir.is_dir():
            raise FileNotFoundError(f"no tokenizer folder at {tokenizer_dir}: pass tokenizer=DIR (the tokenizer whose "
                                    f"tokens the generator learned), or load a folder written by "
                                    f"Pipeline.save_pretrained")
        from tokgen.errors import check_device

        check_device(device, "device=")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tok = VQTokenizer.from_pretrained(tokenizer_dir, device=device)
        return cls(load_generator(generator_dir, spec=tok.spec, device=device), tok)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write `generator/` and `tokenizer/` into `path` (each folder written atomically); the
        generator folder records the tokenizer beside it, so it also loads on its own."""
        path = Path(path)
        self.generator.save_pretrained(path / "generator")
        self.tokenizer.save_pretrained(path / "tokenizer")
        record_tokenizer(path / "generator", path / "tokenizer")
        return path

    @property
    def device(self) -> torch.device:
        return self.generator.device

    @property
    def image_size(self) -> int:
        return self.tokenizer.spec.image_size

    # ------------------------------------------------------------------ sampling

    def __call__(self, captions: str | list[str] | None = None, *, labels: Any = None, num_per_prompt: int = 1,
                 steps: int | None = None, cfg_scale: float | None = None, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                 generator: torch.Generator | None = None, batch_size: int = 64, truncate: bool = False,
                 output_type: str = "pil"):
        """num_per_prompt images for each caption (a caption model) or label (a class model), or
        num_per_prompt unconditional ones when neither is given; prompt-major order.  Sampling
        arguments left None take the family's defaults (`SampleConfig`).  seed, or generator: a
        torch.Generator on any device (used instead of seed).  output_type "pil": a list of PIL
        images; "pt": one (N, 3, H, W) float tensor in [0, 1] on the CPU; "tokens": the token maps,
        one (N, s, s) LongTensor per scale on the CPU."""
        self._check_call(output_type, num_per_prompt, batch_size)
        prompts = _prompt_list(captions, labels)
        order = [i for i in range(len(prompts[1]) if prompts else 1) for _ in range(num_per_prompt)]
        rows = self._condition_rows(prompts, order, truncate)
        sampling = SampleConfig(steps=steps, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p)
        maps = sample_tokens(self.generator, rows, len(order), sampling, generator if generator is not None else seed,
                             batch_size)
        return self._output(maps, batch_size, output_type)

    def inpaint(self, image, mask, prompt: str | list[str] | None = None, *, labels: Any = None,
                num_per_prompt: int = 1, steps: int | None = None, cfg_scale: float | None = None,
                temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                generator: torch.Generator | None = None, batch_size: int = 64, truncate: bool = False,
                output_type: str = "pil"):
        """Redraw the masked region of `image` (for the prompt / label, or unconditionally), keeping
        the rest: the image is encoded, every token whose patch the mask touches is regenerated
        (`known_tokens`: at coarser scales, every token over such a patch) and every other token
        comes back exactly as encoded; then decoded, so pixels outside the mask are the tokenizer's
        reconstruction of the image.

        image: a PIL image, a list of them, or a (3, H, W) / (B, 3, H, W) float tensor in [0, 1], at
        the tokenizer's image size.  mask: the region to redraw, as diffusers has it: white (> 127)
        in a PIL image ("L", or any mode, converted), or True / > 0.5 in an (H, W) / (B, H, W) tensor.
        Images, masks and prompts pair up row by row; a single one serves every row.
        num_per_prompt results per row, row-major.  The other arguments are those of `__call__`.
        The 'ar' family regenerates only what follows one raster position (a mask covering every
        token from some point on, e.g. the bottom rows) and refuses other masks."""
        self._check_call(output_type, num_per_prompt, batch_size)
        images = self._image_batch(image)
        regenerate = self._mask_batch(mask)
        prompts = _prompt_list(captions=prompt, labels=labels)
        counts = {"images": len(images), "masks": len(regenerate), "prompts": len(prompts[1]) if prompts else 1}
        rows = max(counts.values())
        if any(c not in (1, rows) for c in counts.values()):
            raise ValueError(f"got {', '.join(f'{c} {k}' for k, c in counts.items())}: give each either once or "
                             f"once per row ({rows})")
        if not regenerate.any(dim=(1, 2)).all():
            raise ValueError("the mask selects nothing to redraw: white (PIL) or True (tensor) marks the region to "
                             "regenerate")
        order = [i for i in range(rows) for _ in range(num_per_prompt)]
        pick = lambda n: torch.tensor([i if n > 1 else 0 for i in order])                     # noqa: E731
        tokens = self._encode(images, batch_size)
        known = known_tokens([t[pick(len(images))] for t in tokens], regenerate[pick(len(regenerate))])
        self._check_known(known)
        cond_rows = self._condition_rows(prompts, [i if counts["prompts"] > 1 else 0 for i in order], truncate)
        sampling = SampleConfig(steps=steps, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p)
        maps = sample_tokens(self.generator, cond_rows, len(order), sampling,
                             generator if generator is not None else seed, batch_size, known=known)
        return self._output(maps, batch_size, output_type)

    def outpaint(self, image, side: str = "right", fraction: float = 0.5, prompt: str | list[str] | None = None,
                 **kwargs):
        """Extend `image` beyond one side: its content moves away from `side` by `fraction` of the
        image (rounded to whole tokens of the finest scale), is kept as given tokens, and the
        uncovered strip is generated (`inpaint` of `prepare_outpaint`'s image and mask; the other
        arguments are inpaint's).  The 'ar' family outpaints side="bottom" only, on a single-scale
        tokenizer (the kept rows are then a raster prefix)."""
        shifted, regenerate = self.prepare_outpaint(image, side, fraction)
        return self.inpaint(shifted, regenerate, prompt, **kwargs)

    def prepare_outpaint(self, image, side: str = "right", fraction: float = 0.5) -> tuple[Tensor, Tensor]:
        """(images (B, 3, H, W) with the content shifted away from `side` by `fraction` of the image,
        whole finest-scale tokens, the uncovered strip filled with the edge pixels repeated; the
        strip as the mask to redraw (B, H, W) bool) for `inpaint`."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        if self.generator.known_support == "raster-prefix" and side != "bottom":
            raise ValueError(f"the {self.generator.family!r} generator draws tokens in raster order, so it can only "
                             f"outpaint side='bottom' (the kept image is then a raster prefix); for side={side!r} "
                             f"use {_any_mask_families()}")
        images = self._image_batch(image)
        finest = self.tokenizer.spec.scales[-1]
        size = self.image_size
        strip = round(fraction * finest) if isinstance(fraction, (int, float)) and not isinstance(fraction, bool) else 0
        if not 0 < strip < finest:
            raise ValueError(f"fraction must be in (0, 1) and come to at least one of the {finest} token rows/columns "
                             f"of the finest scale, short of all of them; {fraction!r} rounds to {strip}")
        shift = strip * size // finest                                                    # pixels
        keep = {"right": (..., slice(None), slice(shift, None)), "left": (..., slice(None), slice(0, size - shift)),
                "bottom": (..., slice(shift, None), slice(None)), "top": (..., slice(0, size - shift), slice(None))}
        pad = {"right": (0, shift, 0, 0), "left": (shift, 0, 0, 0), "bottom": (0, 0, 0, shift),
               "top": (0, 0, shift, 0)}[side]                                             # (left, right, top, bottom)
        kept = images[keep[side]]
        shifted = F.pad(kept, pad, mode="replicate")
        regenerate = F.pad(torch.zeros_like(kept[:, :1]), pad, value=1.0)[:, 0] > 0      # the uncovered strip
        return shifted, regenerate

    def preview(self, image, mask) -> Tensor:
        """The image(s) with the region `inpaint` redraws greyed out (the mask widened to whole tokens
        of the finest scale): (B, 3, H, W) in [0, 1], to show beside the results."""
        images, regenerate = self._image_batch(image), self._mask_batch(mask)
        if len(regenerate) not in (1, len(images)) and len(images) != 1:
            raise ValueError(f"got {len(images)} images and {len(regenerate)} masks: give one mask, or one per image")
        finest = F.adaptive_max_pool2d(regenerate[:, None].float(), self.tokenizer.spec.scales[-1])
        region = F.interpolate(finest, size=(self.image_size, self.image_size), mode="nearest") > 0
        return torch.where(region, 0.3 * images + 0.35, images)

    # ------------------------------------------------------------------ parts

    @staticmethod
    def _check_call(output_type: str, num_per_prompt: int, batch_size: int) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        for name, value in (("num_per_prompt", num_per_prompt), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                from tokgen.errors import ConfigValueError

                raise ConfigValueError(name, value, "must be a whole number >= 1")

    def _condition_rows(self, prompts: tuple[str, list] | None, order: list[int], truncate: bool) -> dict[str, Tensor]:
        """The condition rows for prompts[order] ({} for an unconditional model without prompts)."""
        if prompts is None:
            return condition_rows(self.generator)                                  # raises for a conditional model
        kind, values = prompts
        repeated = [values[i] for i in order]
        rows = condition_rows(self.generator, labels=repeated if kind == "labels" else None,
                              captions=repeated if kind == "captions" else None, truncate=truncate)
        if not rows:
            raise ValueError("this generator is unconditional: call it without captions or labels "
                             "(num_per_prompt sets the count)")
        return rows

    def _output(self, maps: list[Tensor], batch_size: int, output_type: str):
        if output_type == "tokens":
            return [m.cpu() for m in maps]
        images = torch.cat(list(decode_tokens(self.tokenizer, maps, batch_size))).clamp(0, 1)
        return images if output_type == "pt" else [_to_pil(im) for im in images]

    @torch.no_grad()
    def _encode(self, images: Tensor, batch_size: int) -> list[Tensor]:
        """Token maps of (B, C, H, W) CPU images, encoded in float32 (also inside an autocast region:
        the given tokens must be the image's own) on the tokenizer's device."""
        device = next(self.tokenizer.parameters()).device
        chunks = []
        for lo in range(0, len(images), batch_size):
            with torch.autocast(device.type, enabled=False):
                chunks.append(self.tokenizer.encode(images[lo:lo + batch_size].to(device)))
        return [torch.cat([c[k] for c in chunks]).cpu() for k in range(len(chunks[0]))]

    def _check_known(self, known: dict[str, list[Tensor]]) -> None:
        """A family that completes a raster prefix only ('ar'): say so in terms of the mask."""
        if self.generator.known_support != "raster-prefix":
            return
        from tokgen.generators import flatten_tokens

        given = flatten_tokens(known["mask"])
        if not (given[:, 1:] & ~given[:, :-1]).any():
            return
        scales, family = list(self.tokenizer.spec.scales), self.generator.family
        if len(scales) > 1:
            raise ValueError(f"the {family!r} generator draws tokens in raster order, coarse scales first, and this "
                             f"tokenizer has scales {scales}: a region redrawn anywhere also redraws the coarse "
                             f"tokens over it, which come before every finer token, so {family!r} can only redraw "
                             f"the whole image here. Use {_any_mask_families()} to inpaint or outpaint")
        factor = self.image_size // scales[-1]
        raise ValueError(f"the {family!r} generator draws tokens in raster order, so it can only redraw everything "
                         f"after one raster position, but this mask keeps tokens after a redrawn one. Mask "
                         f"(white/True) every token from some point on in reading order: whole token rows at the "
                         f"bottom (a token covers {factor}x{factor} px; outpaint(side='bottom') does this), optionally "
                         f"with the end of the row above them; or use {_any_mask_families()} for any other region")

    def _image_batch(self, image) -> Tensor:
        """A PIL image (or a list of them) or a (C, H, W) / (B, C, H, W) tensor -> (B, C, S, S) float
        CPU images; a clear error naming the tokenizer's size and channels otherwise."""
        size, channels = self.image_size, self.tokenizer.spec.channels
        want = f"{size}x{size} (the tokenizer's image size)"
        pil = _pil_list(image)
        if pil is not None:
            bad = [im.size for im in pil if im.size != (size, size)]
            if bad:
                raise ValueError(f"the image is {bad[0][0]}x{bad[0][1]} pixels but this pipeline takes {want}: "
                                 f"resize or crop it to {size}x{size} first (e.g. image.resize(({size}, {size})))")
            from tokgen.data.transforms import pil_to_tensor, to_pixels

            # the datasets' own decoding: 16-bit and float images by their range, alpha on white
            images = torch.stack([pil_to_tensor(to_pixels(im)) for im in pil])          # (B, 3, S, S)
            return images if channels == 3 else images.mean(1, keepdim=True)
        if not isinstance(image, Tensor):
            raise ValueError(f"image must be a PIL image or a (3, H, W) / (B, 3, H, W) tensor in [0, 1], got "
                             f"{type(image).__name__}")
        batch = image[None] if image.dim() == 3 else image
        if batch.dim() != 4 or tuple(batch.shape[1:]) != (channels, size, size):
            raise ValueError(f"the image tensor has shape {tuple(image.shape)} but this pipeline takes {want}: "
                             f"({channels}, {size}, {size}) or (B, {channels}, {size}, {size}) in [0, 1]; resize "
                             f"it first (e.g. torch.nn.functional.interpolate)")
        if not batch.is_floating_point():
            raise ValueError(f"the image tensor is {batch.dtype}: pass floats in [0, 1] (x.float() / 255)")
        return batch.detach().float().cpu()

    def _mask_batch(self, mask) -> Tensor:
        """A PIL mask (or a list of them) or an (H, W) / (B, H, W) / (B, 1, H, W) tensor -> (B, S, S)
        bool, True = redraw (white in an image, True or > 0.5 in a tensor)."""
        size = self.image_size
        pil = _pil_list(mask)
        if pil is not None:
            import numpy as np

            bad = [m.size for m in pil if m.size != (size, size)]
            if bad:
                raise ValueError(f"the mask is {bad[0][0]}x{bad[0][1]} pixels but the image is {size}x{size} (the "
                                 f"tokenizer's image size): give a {size}x{size} mask, white where to redraw")
            return torch.from_numpy(np.stack([np.asarray(m.convert("L")) > 127 for m in pil]))
        if not isinstance(mask, Tensor):
            raise ValueError(f"mask must be a PIL image or an (H, W) / (B, H, W) tensor (True = redraw), got "
                             f"{type(mask).__name__}")
        m = mask.detach().cpu()
        m = m[None] if m.dim() == 2 else m[:, 0] if m.dim() == 4 and m.shape[1] == 1 else m
        if m.dim() != 3 or tuple(m.shape[1:]) != (size, size):
            raise ValueError(f"the mask has shape {tuple(mask.shape)} but the image is {size}x{size} (the "
                             f"tokenizer's image size): give ({size}, {size}) or (B, {size}, {size}), True where "
                             f"to redraw")
        if m.dtype == torch.bool:
            return m
        if m.is_floating_point():
            return m > 0.5
        return m > (127 if m.numel() and int(m.max()) > 1 else 0)


def _any_mask_families() -> str:
    """'a 'maskgit', 'var' or 'd3pm' generator': the families that fill any masked region."""
    from tokgen.generators import FAMILIES

    names = [f"{name!r}" for name, cls in sorted(FAMILIES.items()) if cls.known_support == "any"]
    return "a " + (", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)) + " generator"


def _prompt_list(captions: Any = None, labels: Any = None) -> tuple[str, list] | None:
    """("captions", [str]) or ("labels", [int]) or None (no prompt); a single one as a list of one."""
    if captions is not None and labels is not None:
        raise ValueError("pass captions or labels, not both")
    if captions is not None:
        values, kind = ([captions] if isinstance(captions, str) else list(captions)), "captions"
    elif labels is not None:
        if isinstance(labels, Tensor):
            labels = labels.reshape(-1).tolist()
        values, kind = ([labels] if isinstance(labels, int) else list(labels)), "labels"
    else:
        return None
    if not values:
        raise ValueError(f"got an empty list of {kind}: pass at least one (or none for an unconditional model)")
    return kind, [v.item() if isinstance(v, Tensor) else v for v in values]


def _pil_list(obj: Any) -> list | None:
    """A PIL image or a non-empty list of them as a list; None for anything else."""
    if _is_pil(obj):
        return [obj]
    if isinstance(obj, (list, tuple)) and obj and all(_is_pil(o) for o in obj):
        return list(obj)
    return None


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(obj, Image.Image)


def _to_pil(image: Tensor):
    from PIL import Image

    array = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
