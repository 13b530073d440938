"""tokgen.Pipeline: captions or labels in, images out, for every family; inpainting and outpainting
keep the given tokens exactly; saved and loaded as one folder, or as a generator folder that records
and verifies its tokenizer; `tokgen sample --image/--mask/--outpaint` end to end."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import tokgen
from tokgen.generators import FAMILIES, build_generator, condition_kind, train_text_tokenizer
from tokgen.pipeline import TOKENIZER_REF, known_tokens, record_tokenizer, recorded_tokenizer
from tokgen.tokenizers_vq import VQTokenizer, get_preset
from tokgen.train.cli import main as tokgen_cli

CAPTIONS = ["a large red circle at the top left", "a small blue square in the center"]
ANY_MASK_FAMILIES = [f for f, cls in sorted(FAMILIES.items()) if cls.known_support == "any"]


def _listed(names: list[str]) -> str:
    """'a', 'b' or 'c', as the pipeline's messages list families."""
    quoted = [repr(n) for n in names]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]


@pytest.fixture(scope="module")
def tokenizer() -> VQTokenizer:
    """A random multi-scale tokenizer, 32 px -> scales 1, 2, 4, codebook 32 (VAR needs the scales)."""
    torch.manual_seed(0)
    settings = dict(base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2), scales=(1, 2, 4), codebook_size=32,
                    kmeans_init=False)
    return VQTokenizer(get_preset("shapes-tiny-msvq", **settings)).eval()


@pytest.fixture(scope="module")
def single_scale() -> VQTokenizer:
    """A random single-scale tokenizer, 32 px -> 4x4 tokens (factor 8), codebook 32 (AR's raster order)."""
    torch.manual_seed(0)
    return VQTokenizer(get_preset("shapes-tiny", base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2),
                                  codebook_size=32, kmeans_init=False)).eval()


def pipeline(tokenizer, family: str, condition: str) -> tokgen.Pipeline:
    torch.manual_seed(0)
    kind = condition_kind(condition)
    config = dict(width=32, depth=1, heads=4, condition=condition, num_classes=10 if kind.uses_labels else 0)
    text = train_text_tokenizer(CAPTIONS * 4, vocab_size=300) if kind.uses_captions else None
    if family == "d3pm":
        config["timesteps"] = 8
    return tokgen.Pipeline(build_generator(family, tokenizer.spec, config, text_tokenizer=text), tokenizer)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_captions_in_images_out_seeded_for_every_family(tokenizer, family):
    pipe = pipeline(tokenizer, family, "text")
    images = pipe(CAPTIONS, num_per_prompt=2, seed=1, batch_size=3, steps=None if FAMILIES[family].fixed_steps else 2)
    assert len(images) == 4 and all(im.size == (32, 32) and im.mode == "RGB" for im in images)
    batch = pipe(CAPTIONS, num_per_prompt=2, seed=1, output_type="pt", batch_size=3,
                 steps=None if FAMILIES[family].fixed_steps else 2)
    assert batch.shape == (4, 3, 32, 32) and 0 <= batch.min() and batch.max() <= 1
    # the same seed (and batch size) gives the same images; the PIL images are those pixels
    again = pipe(CAPTIONS, num_per_prompt=2, seed=1, output_type="pt", batch_size=3,
                 steps=None if FAMILIES[family].fixed_steps else 2)
    assert torch.equal(batch, again)
    pixels = torch.from_numpy(np.asarray(images[0])).permute(2, 0, 1).float() / 255         # (3, 32, 32)
    assert torch.allclose(pixels, batch[0], atol=1 / 255 + 1e-6)
    assert len(pipe("a red circle", steps=None if FAMILIES[family].fixed_steps else 2)) == 1   # one caption


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
    # the generator folder records the tokenizer beside it, so it also loads on its own
    alone = tokgen.Pipeline.from_pretrained(tmp_path / "pipe" / "generator", device="cpu")
    assert torch.equal(alone(CAPTIONS, output_type="pt"), want)
    pipe.generator.save_pretrained(tmp_path / "bare")                          # no record, no tokenizer=
    with pytest.raises(FileNotFoundError, match="pass tokenizer=DIR .*record_tokenizer"):
        tokgen.Pipeline.from_pretrained(tmp_path / "bare")


# ---------------------------------------------------------------------------- inpainting, outpainting

def picture(seed: int = 0) -> torch.Tensor:
    """A (3, 32, 32) image of 8-bit values (so a PNG or PIL copy holds exactly the same pixels)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, 32, 32), generator=g).float() / 255


def box() -> torch.Tensor:
    """A pixel mask (32, 32) not aligned to tokens: rows 5-19, columns 9-31."""
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[5:20, 9:] = True
    return mask


def as_pil(image: torch.Tensor) -> Image.Image:
    array = (image.permute(1, 2, 0) * 255).round().byte().numpy() if image.dim() == 3 else \
        image.byte().numpy() * 255
    return Image.fromarray(array)


def patches(mask: torch.Tensor, side: int) -> torch.Tensor:
    """(side, side): True where any pixel of the token's patch is masked (32 px images)."""
    f = 32 // side
    return mask.reshape(side, f, side, f).any(dim=3).any(dim=1)


@pytest.mark.parametrize("family", ANY_MASK_FAMILIES)
def test_inpaint_redraws_the_masked_tokens_and_keeps_every_other_exactly(tokenizer, family):
    pipe = pipeline(tokenizer, family, "class")
    steps = None if FAMILIES[family].fixed_steps else 2
    image, mask = picture(), box()
    out = pipe.inpaint(image, mask, labels=[3, 7], num_per_prompt=2, steps=steps, seed=0, output_type="tokens")
    encoded = tokenizer.encode(image[None])
    redrawn = False
    for side, got, want in zip(tokenizer.spec.scales, out, encoded):
        redraw = patches(mask, side)                   # a token is redrawn when any pixel of its patch is
        assert got.shape == (4, side, side)
        assert torch.equal(got[:, ~redraw], want[:, ~redraw].expand(4, -1))
        redrawn |= bool((got[:, redraw] != want[:, redraw]).any())
    assert redrawn                                     # the region is sampled, not copied
    # PIL image and mask (white = redraw) give the same tokens; seed= and a seeded generator= agree
    from_pil = pipe.inpaint(as_pil(image), as_pil(mask), labels=[3, 7], num_per_prompt=2, steps=steps,
                            generator=torch.Generator().manual_seed(0), output_type="tokens")
    assert all(torch.equal(a, b) for a, b in zip(from_pil, out))
    images = pipe.inpaint(as_pil(image), as_pil(mask), labels=3, steps=steps)
    assert len(images) == 1 and images[0].size == (32, 32)


def test_inpaint_pairs_images_masks_and_prompts_row_by_row(tokenizer):
    pipe = pipeline(tokenizer, "maskgit", "text")
    images = torch.stack([picture(1), picture(2)])
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, :, :8] = True                             # the left column of tokens of image 0
    masks[1, 24:] = True                               # the bottom row of tokens of image 1
    out = pipe.inpaint(images, masks, CAPTIONS, steps=2, output_type="tokens")
    encoded = tokenizer.encode(images)
    for row in range(2):
        keep = ~patches(masks[row], 4)
        assert torch.equal(out[-1][row][keep], encoded[-1][row][keep])
    # a single image serves every prompt; the finest-scale masks follow the pixel masks
    one = pipe.inpaint(images[0], masks[0], CAPTIONS, num_per_prompt=2, steps=2, output_type="pt")
    assert one.shape == (4, 3, 32, 32) and 0 <= one.min() and one.max() <= 1
    known = known_tokens(encoded, masks)["mask"]
    assert torch.equal(known[-1], ~torch.stack([patches(m, 4) for m in masks]))
    assert not known[0].any()                          # the 1x1 scale covers both regions


def test_inpaint_refuses_what_it_cannot_use_and_says_what_fits(tokenizer):
    pipe = pipeline(tokenizer, "maskgit", "class")
    image, mask = picture(), box()
    with pytest.raises(ValueError, match="16x16 pixels but this pipeline takes 32x32"):
        pipe.inpaint(as_pil(image).resize((16, 16)), mask, labels=1)
    with pytest.raises(ValueError, match=r"shape \(3, 16, 16\) but this pipeline takes 32x32"):
        pipe.inpaint(image[:, :16, :16], mask, labels=1)
    with pytest.raises(ValueError, match="the mask is 16x16 pixels but the image is 32x32"):
        pipe.inpaint(image, as_pil(mask).resize((16, 16)), labels=1)
    with pytest.raises(ValueError, match="selects nothing to redraw"):
        pipe.inpaint(image, torch.zeros(32, 32), labels=1)
    with pytest.raises(ValueError, match="2 images, 1 masks, 3 prompts: give each either once or once per row"):
        pipe.inpaint(torch.stack([image, image]), mask, labels=[1, 2, 3])
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        pipe.inpaint(image, mask, CAPTIONS)
    with pytest.raises(ValueError, match="floats in"):
        pipe.inpaint((image * 255).byte(), mask, labels=1)


def test_ar_inpaints_after_a_raster_position_and_refuses_other_masks(tokenizer, single_scale):
    pipe = pipeline(single_scale, "ar", "class")
    image = picture()
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[20:] = True                                   # token rows 2 and 3 ...
    mask[12:16, 20:] = True                            # ... and the end of row 1: the first 6 tokens given
    out = pipe.inpaint(image, mask, labels=[1, 2], output_type="tokens")[0].flatten(1)
    encoded = single_scale.encode(image[None])[0].flatten(1)
    assert torch.equal(out[:, :6], encoded[:, :6].expand(2, -1)) and (out[:, 6:] != encoded[:, 6:]).any()
    bottom = pipe.outpaint(image, "bottom", 0.5, labels=1, output_type="tokens")[0]
    shifted, _ = pipe.prepare_outpaint(image, "bottom", 0.5)
    assert torch.equal(bottom[:, :2], single_scale.encode(shifted)[0][:, :2])
    right = torch.zeros(32, 32, dtype=torch.bool)
    right[:, 16:] = True
    with pytest.raises(ValueError, match=r"raster order, so it can only redraw everything after one raster "
                                         r"position.* outpaint\(side='bottom'\).* " + re.escape(_listed(ANY_MASK_FAMILIES))):
        pipe.inpaint(image, right, labels=1)
    with pytest.raises(ValueError, match="can only outpaint side='bottom'"):
        pipe.outpaint(image, "right", labels=1)
    multi = pipeline(tokenizer, "ar", "class")          # coarse scales come first: only the whole image
    with pytest.raises(ValueError, match=r"scales \[1, 2, 4\].* can only redraw the whole image"):
        multi.inpaint(image, mask, labels=1)
    assert multi.inpaint(image, torch.ones(32, 32), labels=1, output_type="pt").shape == (1, 3, 32, 32)


def test_outpaint_shifts_the_image_away_from_the_side_and_keeps_its_tokens(tokenizer):
    pipe = pipeline(tokenizer, "maskgit", "none")
    image = picture()
    kept = {"right": ((..., slice(0, 24)), (..., slice(8, 32))), "left": ((..., slice(8, 32)), (..., slice(0, 24))),
            "bottom": ((..., slice(0, 24), slice(None)), (..., slice(8, 32), slice(None))),
            "top": ((..., slice(8, 32), slice(None)), (..., slice(0, 24), slice(None)))}
    for side, (where, source) in kept.items():
        shifted, mask = pipe.prepare_outpaint(image, side, fraction=0.3)    # 0.3 of 4 tokens: 1 token, 8 px
        assert torch.equal(shifted[0][where], image[source])                  # the content moved by 8 px
        assert not mask[0][where].any() and mask.sum() == 8 * 32                 # the uncovered 8 px strip
        out = pipe.outpaint(image, side, 0.3, num_per_prompt=2, steps=2, seed=0, output_type="tokens")
        encoded = tokenizer.encode(shifted)
        given = known_tokens(encoded, mask)["mask"]
        assert int(given[-1].sum()) == 12                                     # 3 of 4 token columns / rows
        for got, want, keep in zip(out, encoded, given):
            assert torch.equal(got[:, keep[0]], want[:, keep[0]].expand(2, -1))
    with pytest.raises(ValueError, match="side must be one of"):
        pipe.outpaint(image, "up")
    for fraction in (0.05, 1.0):
        with pytest.raises(ValueError, match="fraction must be in"):
            pipe.outpaint(image, "left", fraction)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_generator_seeds_a_cuda_pipeline(tokenizer):
    import copy

    pipe = pipeline(tokenizer, "maskgit", "class")
    pipe = tokgen.Pipeline(pipe.generator.to("cuda"), copy.deepcopy(tokenizer).to("cuda"))
    a = pipe(labels=[1, 2], steps=2, generator=torch.Generator().manual_seed(4), output_type="pt")
    b = pipe(labels=[1, 2], steps=2, generator=torch.Generator().manual_seed(4), output_type="pt")
    assert torch.equal(a, b)
    g = torch.Generator(device="cuda").manual_seed(4)
    out = pipe.inpaint(picture(), box(), labels=1, steps=2, generator=g, output_type="tokens")
    keep = ~patches(box(), 4)
    assert torch.equal(out[-1][0][keep], tokenizer.encode(picture()[None])[-1][0][keep])


# ---------------------------------------------------------------------------- the recorded tokenizer

def test_the_generator_folder_records_and_verifies_its_tokenizer(tokenizer, tmp_path):
    pipe = pipeline(tokenizer, "maskgit", "class")
    runs = tmp_path / "runs"
    tokenizer.save_pretrained(runs / "tok" / "tokenizer")
    pipe.generator.save_pretrained(runs / "gen" / "generator")
    ref = record_tokenizer(runs / "gen" / "generator", runs / "tok" / "tokenizer")
    meta = json.loads(ref.read_text())
    assert ref.name == TOKENIZER_REF and meta["spec"] == tokenizer.spec.to_dict()
    assert meta["relative"].replace("\\", "/") == "../../tok/tokenizer"
    assert len(meta["sha256"]["model.safetensors"]) == 64
    want = pipe(labels=[1, 2], steps=2, output_type="pt")
    loaded = tokgen.Pipeline.from_pretrained(runs / "gen" / "generator", device="cpu")       # no tokenizer=
    assert torch.equal(loaded(labels=[1, 2], steps=2, output_type="pt"), want)
    # moved as a whole (the recorded absolute path is gone): found through the path relative to the generator
    moved = tmp_path / "moved"
    shutil.copytree(runs, moved)
    shutil.rmtree(runs)
    generator_dir = moved / "gen" / "generator"
    assert recorded_tokenizer(generator_dir).resolve() == (moved / "tok" / "tokenizer").resolve()
    # other weights of the same spec in its place: refused, naming the file, unless passed explicitly
    torch.manual_seed(1)
    other = VQTokenizer(get_preset("shapes-tiny-msvq", base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2),
                                   scales=(1, 2, 4), codebook_size=32, kmeans_init=False))
    other.save_pretrained(moved / "tok" / "tokenizer")
    with pytest.raises(ValueError, match=r"has changed: .*tok.tokenizer.model\.safetensors no longer has the sha256 "
                                         r".* Pass tokenizer=DIR"):
        tokgen.Pipeline.from_pretrained(generator_dir)
    tokgen.Pipeline.from_pretrained(generator_dir, tokenizer=moved / "tok" / "tokenizer", device="cpu")
    shutil.rmtree(moved / "tok")
    with pytest.raises(FileNotFoundError, match="the tokenizer recorded for the generator at .* is gone"):
        tokgen.Pipeline.from_pretrained(generator_dir)
    # a tokenizer of another spec is not recorded
    VQTokenizer(get_preset("shapes-tiny-msvq", base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2),
                           scales=(1, 2, 4), codebook_size=64, kmeans_init=False)).save_pretrained(tmp_path / "t64")
    with pytest.raises(ValueError, match="trained on tokens of spec"):
        record_tokenizer(generator_dir, tmp_path / "t64")


# ---------------------------------------------------------------------------- tokgen sample --image

def test_sample_inpaints_and_outpaints_from_the_command_line(tokenizer, single_scale, tmp_path):
    pipe = pipeline(tokenizer, "maskgit", "class")
    tokenizer.save_pretrained(tmp_path / "tok")
    pipe.generator.save_pretrained(tmp_path / "gen")
    record_tokenizer(tmp_path / "gen", tmp_path / "tok")
    as_pil(picture()).save(tmp_path / "in.png")
    as_pil(box()).save(tmp_path / "mask.png")
    base = ["sample", "--generator", str(tmp_path / "gen"), "--classes", "1", "2", "--num-per-prompt", "2",
            "--steps", "2", "--out"]                               # no --tokenizer: the recorded one
    assert tokgen_cli(base + [str(tmp_path / "inpaint.png"), "--image", str(tmp_path / "in.png"),
                              "--mask", str(tmp_path / "mask.png")]) == 0
    assert Image.open(tmp_path / "inpaint.png").size[0] > 0
    assert tokgen_cli(base + [str(tmp_path / "outpaint.png"), "--image", str(tmp_path / "in.png"),
                              "--outpaint", "right:0.25"]) == 0
    assert (tmp_path / "outpaint.png").is_file()
    (tmp_path / "broken.png").write_bytes(b"not an image")
    as_pil(box()).resize((16, 16)).save(tmp_path / "small-mask.png")
    out = base + [str(tmp_path / "never.png")]
    image = ["--image", str(tmp_path / "in.png")]
    for flags, message in [
            (["--mask", str(tmp_path / "mask.png")], "--mask needs --image"),
            (image, "--image needs --mask PATH"),
            (["--image", str(tmp_path / "missing.png"), "--mask", str(tmp_path / "mask.png")], "no such file"),
            (["--image", str(tmp_path / "broken.png"), "--mask", str(tmp_path / "mask.png")],
             "is not an image PIL can read"),
            (image + ["--mask", str(tmp_path / "small-mask.png")], "the mask is 16x16 pixels but the image is 32x32"),
            (image + ["--outpaint", "up"], "the side must be one of"),
            (image + ["--outpaint", "left:wide"], "the fraction must be a number"),
            (image + ["--outpaint", "left", "--mask", str(tmp_path / "mask.png")], "not both")]:
        with pytest.raises(SystemExit, match=message):
            tokgen_cli(out + flags)
    assert not (tmp_path / "never.png").exists()
    # an 'ar' model refuses a region it cannot complete, as an error, not a traceback
    ar = pipeline(single_scale, "ar", "class")
    single_scale.save_pretrained(tmp_path / "tok1")
    ar.generator.save_pretrained(tmp_path / "ar")
    with pytest.raises(SystemExit, match="can only outpaint side='bottom'"):
        tokgen_cli(["sample", "--generator", str(tmp_path / "ar"), "--tokenizer", str(tmp_path / "tok1"),
                    "--classes", "1", "--out", str(tmp_path / "never.png")] + image + ["--outpaint", "left"])
