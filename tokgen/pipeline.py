"""Captions (or class labels) in, images out: a generator and the tokenizer whose tokens it learned.

    import tokgen
    pipe = tokgen.Pipeline.from_pretrained("runs/pipe")                 # generator/ + tokenizer/
    pipe = tokgen.Pipeline.from_pretrained("runs/gen/generator", tokenizer="runs/tok/tokenizer")
    images = pipe(["a large red circle at the top left"], num_per_prompt=4, seed=0)   # 4 PIL images
    batch = pipe(labels=[3, 7], output_type="pt")                       # (2, 3, H, W) in [0, 1]
    pipe.save_pretrained("runs/pipe")

Like diffusers' pipelines: the one call a user needs, built on the parts' own APIs (the
generator's `make_condition` / `generate`, the tokenizer's `decode`).  Sampling is seeded per
call (`seed`): the same seed and batch size give the same images.  The sampling
helpers below (`SampleConfig`, `condition_rows`, `sample_tokens`, `decode_tokens`) are the ones
training, evaluation and the `tokgen sample` command use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

OUTPUT_TYPES = ("pil", "pt")


@dataclass
class SampleConfig:
    steps: int | None = None         # sampling steps (not training steps); None = the family's own (AR: one per token)
    cfg_scale: float | None = None   # classifier-free guidance; None = the family's default (AR 1.5, others 3.0) for conditional models, 1.0 (off) otherwise
    temperature: float = 1.0         # softmax temperature of the sampled tokens (0 = greedy)
    top_k: int | None = None         # keep the k most likely tokens; None = all
    top_p: float | None = None       # nucleus sampling: keep the most likely tokens up to this mass; None = the family's default (AR 0.9, others all), 1.0 = all

    def resolved(self, generator) -> dict[str, Any]:
        """The keyword arguments of `generator.generate`, with the family's guidance scale and
        nucleus mass filled in where they were left open."""
        for name, kind in (("steps", int), ("top_k", int), ("top_p", (int, float))):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise ValueError(f"{name} must be a number or None, got {value!r}")
        cfg = self.cfg_scale
        if cfg is None:
            cfg = 1.0 if generator.config.condition == "none" else generator.default_cfg_scale
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


def sample_tokens(generator, rows: dict[str, Tensor], n: int, sampling: SampleConfig, seed: int,
                  batch_size: int = 64) -> list[Tensor]:
    """n token maps per scale for the condition `rows` (n rows, or {} for unconditional), drawn in
    batches from one seeded generator on the model's device: the same seed gives the same maps."""
    device = generator.device
    g = torch.Generator(device=device).manual_seed(seed)
    kwargs = sampling.resolved(generator)
    chunks: list[list[Tensor]] = []
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        cond = {k: v[lo:hi].to(device) for k, v in rows.items()} or None
        chunks.append(generator.generate(cond, num_samples=hi - lo, generator=g, **kwargs))
    return [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]


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


class Pipeline:
    """A generator and the tokenizer whose tokens it learned (their specs must agree)."""

    def __init__(self, generator, tokenizer):
        generator.attach_tokenizer(tokenizer)           # the spec check (and VAR's multi-scale quantizer)
        self.generator, self.tokenizer = generator.eval(), tokenizer.eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, *, tokenizer: str | Path | None = None,
                        device: str | torch.device | None = None) -> "Pipeline":
        """A pipeline folder (`generator/` and `tokenizer/`, as `save_pretrained` writes), or a
        generator folder with `tokenizer=` naming its tokenizer folder.  device: default cuda
        when available."""
        from tokgen.generators import load_generator
        from tokgen.tokenizers_vq import VQTokenizer

        path = Path(path)
        generator_dir = path / "generator" if (path / "generator").is_dir() else path
        tokenizer_dir = Path(tokenizer) if tokenizer is not None else path / "tokenizer"
        if not tokenizer_dir.is_dir():
            raise FileNotFoundError(f"no tokenizer folder at {tokenizer_dir}: pass tokenizer=DIR (the tokenizer whose "
                                    f"tokens the generator learned), or load a folder written by "
                                    f"Pipeline.save_pretrained")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tok = VQTokenizer.from_pretrained(tokenizer_dir, device=device)
        return cls(load_generator(generator_dir, spec=tok.spec, device=device), tok)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write `generator/` and `tokenizer/` into `path` (each folder written atomically)."""
        path = Path(path)
        self.generator.save_pretrained(path / "generator")
        self.tokenizer.save_pretrained(path / "tokenizer")
        return path

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def __call__(self, captions: str | list[str] | None = None, *, labels: Any = None, num_per_prompt: int = 1,
                 steps: int | None = None, cfg_scale: float | None = None, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0, batch_size: int = 64,
                 truncate: bool = False, output_type: str = "pil"):
        """num_per_prompt images for each caption (a caption model) or label (a class model), or
        num_per_prompt unconditional ones when neither is given; prompt-major order.  Sampling
        arguments left None take the family's defaults (`SampleConfig`).  output_type "pil": a list
        of PIL images; "pt": one (N, 3, H, W) float tensor in [0, 1] on the CPU."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if num_per_prompt < 1 or batch_size < 1:
            raise ValueError(f"num_per_prompt and batch_size must be >= 1, got {num_per_prompt} and {batch_size}")
        if captions is not None and labels is not None:
            raise ValueError("pass captions or labels, not both")
        captions = [captions] if isinstance(captions, str) else captions           # one caption, one label
        labels = [labels] if isinstance(labels, int) else labels
        prompts = captions if captions is not None else labels
        if prompts is None:
            rows, n = condition_rows(self.generator), num_per_prompt     # raises for a conditional model
        else:
            prompts = [p.item() if isinstance(p, Tensor) else p for p in prompts]
            repeated = [p for p in prompts for _ in range(num_per_prompt)]
            rows = condition_rows(self.generator, labels=None if captions is not None else repeated,
                                  captions=repeated if captions is not None else None, truncate=truncate)
            if not rows:
                raise ValueError("this generator is unconditional: call it without captions or labels "
                                 "(num_per_prompt sets the count)")
            n = len(repeated)
        sampling = SampleConfig(steps=steps, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p)
        maps = sample_tokens(self.generator, rows, n, sampling, seed, batch_size)
        images = torch.cat(list(decode_tokens(self.tokenizer, maps, batch_size))).clamp(0, 1)
        return images if output_type == "pt" else [_to_pil(im) for im in images]


def _to_pil(image: Tensor):
    from PIL import Image

    return Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
