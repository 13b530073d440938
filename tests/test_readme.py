"""The README's Python examples run as written.

Every ```python block of README.md is executed, in order, each in a fresh namespace, in a folder
that holds the model folders the examples name (small random models of the same kinds: a
multi-scale tokenizer at runs/tok/tokenizer, a caption model at runs/gen/generator, a class model
at runs/gen-class/generator).  An example that stops working (a renamed function, a changed
argument, a path the README does not create) fails here with the block's line number."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tokgen.generators import build_generator, train_text_tokenizer
from tokgen.pipeline import record_tokenizer
from tokgen.tokenizers_vq import VQTokenizer, get_preset

README = Path(__file__).resolve().parents[1] / "README.md"
CAPTIONS = ["a large red circle at the top left", "a small blue square in the center"]


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return blocks


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    torch.manual_seed(0)
    tokenizer = VQTokenizer(get_preset("shapes-tiny-msvq", base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2),
                                       scales=(1, 2, 4), codebook_size=32, kmeans_init=False)).eval()
    tokenizer.save_pretrained(root / "runs/tok/tokenizer")
    small = dict(width=32, depth=1, heads=4)
    text = train_text_tokenizer(CAPTIONS * 4, vocab_size=300)
    build_generator("maskgit", tokenizer.spec, {**small, "condition": "text"},
                    text_tokenizer=text).save_pretrained(root / "runs/gen/generator")
    build_generator("maskgit", tokenizer.spec, {**small, "condition": "class", "num_classes": 10}) \
        .save_pretrained(root / "runs/gen-class/generator")
    for run in ("gen", "gen-class"):       # as train-generator does: the run records its tokenizer
        record_tokenizer(root / f"runs/{run}/generator", root / "runs/tok/tokenizer")
    return root


def test_the_readme_has_python_examples():
    assert len(python_blocks(README.read_text())) >= 3


@pytest.mark.parametrize("line,code", python_blocks(README.read_text()), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_example_runs_as_written(model_folders, monkeypatch, line, code):
    monkeypatch.chdir(model_folders)
    try:
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    except Exception as e:          # name the block: the traceback's file is README.md:<line>
        raise AssertionError(f"the README's example at line {line} fails: {type(e).__name__}: {e}") from e
