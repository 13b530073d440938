"""tokgen.Pipeline: captions or labels in, images out, for every family; saved and loaded as one folder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tokgen
from tokgen.generators import FAMILIES, build_generator, train_text_tokenizer
from tokgen.tokenizers_vq import VQTokenizer, get_preset

CAPTIONS = ["a large red circle at the top left", "a small blue square in the center"]


@pytest.fixture(scope="module")
def tokenizer() -> VQTokenizer:
    """A random multi-scale tokenizer, 32 px -> scales 1, 2, 4, codebook 32 (VAR needs the scales)."""
    torch.manual_seed(0)
    settings = dict(base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2), scales=(1, 2, 4), codebook_size=32,
                    kmeans_init=False)
    return VQTokenizer(get_preset("shapes-tiny-msvq", **settings)).eval()


def pipeline(tokenizer, family: str, condition: str) -> tokgen.Pipeline:
    torch.manual_seed(0)
    config = dict(width=32, depth=1, heads=4, condition=condition, num_classes=10 if condition == "class" else 0)
    text = train_text_tokenizer(CAPTIONS * 4, vocab_size=300) if condition == "text" else None
    if family == "d3pm":
        config["timesteps"] = 8
    return tokgen.Pipeline(build_generator(family, tokenizer.spec, config, text_tokenizer=text), tokenizer)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_captions_in_images_out_seeded_for_every_family(tokenizer, family):
    pipe = pipeline(tokenizer, family, "text")
    images = pipe(CAPTIONS, num_per_prompt=2, seed=1, batch_size=3, steps=None if family in ("ar", "var") else 2)
    assert len(images) == 4 and all(im.size == (32, 32) and im.mode == "RGB" for im in images)
    batch = pipe(CAPTIONS, num_per_prompt=2, seed=1, output_type="pt", batch_size=3,
                 steps=None if family in ("ar", "var") else 2)
    assert batch.shape == (4, 3, 32, 32) and 0 <= batch.min() and batch.max() <= 1
    # the same seed (and batch size) gives the same images; the PIL images are those pixels
    again = pipe(CAPTIONS, num_per_prompt=2, seed=1, output_type="pt", batch_size=3,
                 steps=None if family in ("ar", "var") else 2)
    assert torch.equal(batch, again)
    pixels = torch.from_numpy(np.asarray(images[0])).permute(2, 0, 1).float() / 255         # (3, 32, 32)
    assert torch.allclose(pixels, batch[0], atol=1 / 255 + 1e-6)
    assert len(pipe("a red circle", steps=None if family in ("ar", "var") else 2)) == 1   # one caption


def test_labels_unconditional_and_the_mistakes_a_user_makes(tokenizer):
    pipe = pipeline(tokenizer, "maskgit", "class")
    assert pipe(labels=[3, 7], output_type="pt", steps=2).shape == (2, 3, 32, 32)
    assert pipe(labels=torch.tensor([1]), num_per_prompt=3, output_type="pt", steps=2).shape == (3, 3, 32, 32)
    assert pipe(labels=5, output_type="pt", steps=2).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        pipe(CAPTIONS, steps=2)
    with pytest.raises(ValueError, match="output_type"):
        pipe(labels=[1], output_type="numpy")
    unconditional = pipeline(tokenizer, "maskgit", "none")
    assert unconditional(num_per_prompt=2, output_type="pt", steps=2).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="unconditional: call it without captions"):
        unconditional(CAPTIONS, steps=2)
    other = VQTokenizer(get_preset("shapes-tiny-msvq", base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2),
                                   scales=(1, 2, 4), codebook_size=64, kmeans_init=False))
    with pytest.raises(ValueError, match="attach the tokenizer whose tokens it models"):
        tokgen.Pipeline(pipe.generator, other)


def test_save_and_load_one_folder_or_a_generator_with_its_tokenizer(tokenizer, tmp_path):
    pipe = pipeline(tokenizer, "var", "text")
    pipe.save_pretrained(tmp_path / "pipe")
    want = pipe(CAPTIONS, output_type="pt")
    loaded = tokgen.Pipeline.from_pretrained(tmp_path / "pipe", device="cpu")
    assert torch.equal(loaded(CAPTIONS, output_type="pt"), want)
    apart = tokgen.Pipeline.from_pretrained(tmp_path / "pipe" / "generator", tokenizer=tmp_path / "pipe" / "tokenizer")
    assert torch.equal(apart(CAPTIONS, output_type="pt"), want)
    with pytest.raises(FileNotFoundError, match="pass tokenizer=DIR"):
        tokgen.Pipeline.from_pretrained(tmp_path / "pipe" / "generator")
