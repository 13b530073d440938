"""tokgen: image tokenizers and the discrete generators that run on their tokens.

    import tokgen
    tok = tokgen.VQTokenizer.from_pretrained("runs/tok/tokenizer")
    gen = tokgen.load_generator("runs/gen/generator")

The parts are packages of this one: `tokgen.tokenizers_vq` (images <-> tokens), `tokgen.generators`
(tokens -> tokens), `tokgen.data` (the datasets and the shapes renderer, which training and the
judges both read), `tokgen.train` (training, the command line), `tokgen.eval` (metrics, judges, the
comparison), `tokgen.pipeline` (sampling, inpainting), `tokgen.io` (model folders) and `tokgen.hub` (model cards,
`push_to_hub`, loading by hub id).  Their folders sit at the repository root
(pyproject's package-dir maps them under `tokgen` when installed), so nothing is installed as a
top-level `train` or `eval` that a user's own train.py or eval.py would shadow.
"""
from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("tokgen")
except metadata.PackageNotFoundError:      # a source checkout that was never installed
    __version__ = "0.1.0+source"

# A source checkout (not installed, or installed editable): the sub-packages are the folders beside
# this one, so the package's search path takes in the repository root.  An installed wheel has them
# inside this folder and needs nothing.
_here = Path(__file__).resolve().parent
if not (_here / "generators").is_dir() and (_here.parent / "generators" / "__init__.py").is_file():
    __path__.append(str(_here.parent))      # noqa: F821  (the package's own __path__)

# The public API, imported on first use so that `import tokgen` stays cheap (no torch import).
_API = {
    "VQTokenizer": "tokgen.tokenizers_vq", "TokenizerConfig": "tokgen.tokenizers_vq",
    "get_preset": "tokgen.tokenizers_vq", "PRESETS": "tokgen.tokenizers_vq",
    "convert_tokenizer": "tokgen.tokenizers_vq.published",      # LlamaGen, VAR, taming checkpoints
    "Generator": "tokgen.generators", "TokenSpec": "tokgen.generators", "Condition": "tokgen.generators",
    "FAMILIES": "tokgen.generators", "build_generator": "tokgen.generators", "load_generator": "tokgen.generators",
    "train_text_tokenizer": "tokgen.generators",
    "Pipeline": "tokgen.pipeline", "SampleConfig": "tokgen.pipeline",
    # the jobs behind the commands: typed configs in, results out (tokgen.train.jobs)
    "train_tokenizer": "tokgen.train.jobs", "TokenizerRunConfig": "tokgen.train.jobs",
    "extract_tokens": "tokgen.train.jobs", "ExtractConfig": "tokgen.train.jobs",
    "train_generator": "tokgen.train.jobs", "GeneratorRunConfig": "tokgen.train.jobs",
    "evaluate_generator": "tokgen.train.jobs", "EvalConfig": "tokgen.train.jobs",
    "compare": "tokgen.train.jobs", "CompareConfig": "tokgen.train.jobs",
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tokgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
