"""Bad data and damaged files are refused or skipped loudly, never accepted silently (issue 15,
item 2): high-bit and float images scaled by their real range, NaN/inf and out-of-range values
refused, token folders checked against meta.json, model folders' config.json and weights named
when damaged, config fields checked for type."""

import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before `datasets` is first imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from tokgen.data.tokens import TokenDataset, write_token_split  # noqa: E402
from tokgen.data.transforms import BadImage, square_tensor, to_pixels  # noqa: E402
from tokgen.generators.spec import as_spec, check_token_maps  # noqa: E402
from tokgen.io import check_types  # noqa: E402
from tokgen.tokenizers_vq import TokenizerConfig, VQTokenizer, read_spec  # noqa: E402

SPEC = {"codebook_size": 16, "scales": [1, 2], "image_size": 4, "channels": 3, "factor": 2}


def tiny_tokenizer() -> VQTokenizer:
    torch.manual_seed(0)
    config = TokenizerConfig(image_size=8, base_width=4, channel_mults=(1, 2), num_res_blocks=1, z_channels=4,
                             mid_attention=False, codebook_size=16, kmeans_init=False)
    return VQTokenizer(config).eval()


# ----------------------------------------------------------------------------- image decoding

def test_16_bit_png_round_trips_to_its_values(tmp_path):
    values = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as img:
        assert img.mode.startswith("I")          # 16-bit grey: not all white any more
        x = square_tensor(img, 8)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x[0] * 65535, torch.from_numpy(values.astype(np.float32)), atol=0.05)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    big_endian = Image.fromarray(values.astype(">u2"))
    assert big_endian.mode == "I;16B" and torch.allclose(square_tensor(big_endian, 8), x)
    shrunk = square_tensor(Image.open(tmp_path / "grey16.png"), 4)   # resampled at full precision
    assert 0 <= shrunk.min() and shrunk.max() <= 1 and shrunk.max() > 0.5


def test_32_bit_and_float_modes(tmp_path):
    # mode I: the file's bit depth decides (a 32-bit TIFF: / (2**31 - 1)); none recorded: the values
    ints = np.full((8, 8), 2**30, np.int32)
    Image.fromarray(ints).save(tmp_path / "i32.tif")
    with Image.open(tmp_path / "i32.tif") as img:
        assert img.mode == "I"
        assert torch.allclose(square_tensor(img, 8), torch.full((3, 8, 8), 2**30 / (2**31 - 1)))
    assert torch.allclose(square_tensor(Image.fromarray(np.full((8, 8), 65535, np.int32)), 8), torch.ones(3, 8, 8))
    with pytest.raises(BadImage, match=r"negative values .*\[-5, 0\]"):
        to_pixels(Image.fromarray(np.array([[-5, 0]], np.int32)))
    # mode F: [0, 1] intensities as they are; anything else refused, never clipped silently
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    assert torch.allclose(square_tensor(Image.fromarray(f), 8)[0], torch.from_numpy(f))
    with pytest.raises(BadImage, match=r"values in \[0, 255\].*rescale it to \[0, 1\]"):
        to_pixels(Image.fromarray(f * 255))
    f[3, 4] = np.nan
    with pytest.raises(BadImage, match="1 NaN/inf value"):
        to_pixels(Image.fromarray(f))


def test_alpha_palette_and_cmyk_become_rgb():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255                      # red, opaque in the top half, transparent below
    rgba[:2, :, 3] = 255
    x = square_tensor(Image.fromarray(rgba, "RGBA"), 4)
    assert torch.equal(x[:, 0, 0], torch.tensor([1.0, 0, 0])) and torch.equal(x[:, 3, 0], torch.ones(3))  # white
    la = Image.fromarray(np.stack([np.full((4, 4), 100, np.uint8), np.full((4, 4), 255, np.uint8)], -1), "LA")
    assert torch.allclose(square_tensor(la, 4), torch.full((3, 4, 4), 100 / 255))
    rgb = Image.new("RGB", (4, 4), (10, 20, 200))
    for img in (rgb.convert("P", palette=Image.Palette.ADAPTIVE), rgb.convert("CMYK")):
        assert (square_tensor(img, 4)[:, 0, 0] * 255 - torch.tensor([10.0, 20, 200])).abs().max() < 8


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    return str(tmp_path / "hf_cache")


def test_image_folder_reads_16_bit_and_skips_and_counts_bad_files(tmp_path, offline_cache):
    from tokgen.data.folder import ImageFolderDataset

    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(root / "grey16.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(root / "blue.png")
    png = (root / "blue.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    Image.fromarray(np.full((8, 8), 7.5, np.float32)).save(root / "float.tiff")
    ds = ImageFolderDataset(str(root), "train", image_size=8, cache_dir=offline_cache)
    assert len(ds) == 4  # files are checked lazily, when an item is read
    items = [ds[i]["image"] for i in range(len(ds))]   # bad files met: each item is the next good one
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\) of 4 .*(truncated\.png|float\.tiff)"):
        ds.report_skipped()
    assert sorted(os.path.basename(p) for p in ds.skipped) == ["float.tiff", "truncated.png"]
    assert any("values in [7.5, 7.5]" in r for r in ds.skip_reasons)
    grey = [items[i] for i in range(len(ds)) if "grey16" in ds.item_path(i)]
    assert len(grey) == 1 and torch.allclose(grey[0], torch.full((3, 8, 8), 32768 / 65535))


def test_image_folder_without_images_names_the_folder(tmp_path, offline_cache):
    from tokgen.data import build_dataset

    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match=re.escape(f"no images found in {tmp_path / 'empty'}")):
        build_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"no readable images in .*broken"):
        build_dataset(f"folder:{tmp_path / 'broken'}")


# ----------------------------------------------------------------------------- tokenizer input

def test_tokenizer_images_float64_converted_integers_nan_and_range_refused():
    tok = tiny_tokenizer()
    x = torch.rand(2, 3, 8, 8)
    assert [torch.equal(a, b) for a, b in zip(tok.encode(x.double()), tok.encode(x))] == [True]
    recon, _ = tok(x.double())
    assert recon.dtype == torch.float32
    with pytest.raises(ValueError, match=re.escape("images.float() / 255")):
        tok.encode((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=re.escape("images.float() / 65535")):
        tok.encode((x * 65535).to(torch.int32))
    bad = x.clone()
    bad[1, 2, 3, 4] = float("nan")
    bad[0, 0, 0, 0] = float("inf")
    for call in (tok.encode, tok):
        with pytest.raises(ValueError, match=r"1 NaN and 1 inf value\(s\) of 384"):
            call(bad)
    with pytest.raises(ValueError, match=r"values in \[[\d.]+, [\d.]+\]: .*from 0\.\.255 with x / 255"):
        tok.encode(x * 255)
    tok.encode(x.clamp(0, 1) + 1e-4)         # resampling overshoot within the tolerance passes


def test_token_maps_refuse_nan_bad_ids_and_wrong_scales():
    tok = tiny_tokenizer()
    good = tok.encode(torch.rand(2, 3, 8, 8))
    nan = good[0].float()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="holding 1 NaN/inf value"):
        tok.decode([nan])
    ids = good[0].clone()
    ids[1, 2, 3] = 99
    with pytest.raises(ValueError, match=r"1 id\(s\) outside \[0, 15\] \(codebook_size 16\), the first 99 at "
                                         r"index \(1, 2, 3\)"):
        tok.decode([ids])
    spec = as_spec(SPEC)
    maps = [torch.zeros(2, 1, 1, dtype=torch.long), torch.zeros(2, 2, 2, dtype=torch.long)]
    check_token_maps(maps, spec)
    with pytest.raises(ValueError, match=r"the first 16 at index \(0, 1, 0\)"):
        check_token_maps([maps[0], maps[1].index_put((torch.tensor([0]), torch.tensor([1]), torch.tensor([0])),
                                                     torch.tensor([16]))], spec)
    with pytest.raises(ValueError, match=r"list of 2 token maps \[\(B, 1, 1\), \(B, 2, 2\)\].*got 1"):
        check_token_maps(maps[:1], spec)
    with pytest.raises(ValueError, match="NaN/inf"):
        check_token_maps([maps[0], torch.full((2, 2, 2), float("nan"))], spec)
    with pytest.raises(ValueError, match=r"spec codebook_size must be an int, got str '512'"):
        as_spec({**SPEC, "codebook_size": "512"})


# ----------------------------------------------------------------------------- token folders

def token_folder(tmp_path, n=3):
    folder = tmp_path / "tokens"
    tokens = [torch.randint(0, 16, (n, 1, 1)), torch.randint(0, 16, (n, 2, 2))]
    write_token_split(folder, "train", tokens, torch.arange(n), [f"c{i}" for i in range(n)], SPEC, "shapes")
    return folder


def rewrite(path, **changes):
    data = load_file(str(path))
    data.update(changes)
    save_file({k: v for k, v in data.items() if v is not None}, str(path))


def test_token_folder_checked_against_meta_json(tmp_path):
    folder = token_folder(tmp_path)
    assert len(TokenDataset(folder, "train")) == 3
    data = folder / "train.safetensors"
    original = data.read_bytes()
    cases = [
        (dict(scale_1=None), r"train\.safetensors does not match meta\.json.*missing \['scale_1'\]"),
        (dict(scale_1=torch.zeros(3, 3, 3, dtype=torch.int16)),
         r"'scale_1' has shape \(3, 3, 3\), expected \(3, 2, 2\)"),
        (dict(scale_1=torch.full((3, 2, 2), 40, dtype=torch.int16)),
         r"'scale_1' has 12 id\(s\) outside \[0, 15\] \(meta\.json's codebook_size 16\), the first 40 at item 0"),
        (dict(scale_0=torch.zeros(3, 1, 1)), r"'scale_0' has dtype torch\.float32"),
        (dict(scale_2=torch.zeros(3, 4, 4, dtype=torch.int16)), r"unexpected \['scale_2'\]"),
        (dict(label=torch.arange(4), scale_0=torch.zeros(4, 1, 1, dtype=torch.int16),
              scale_1=torch.zeros(4, 2, 2, dtype=torch.int16)), r"holds 4 token maps and labels but .* 3 captions"),
    ]
    for changes, message in cases:
        data.write_bytes(original)
        rewrite(data, **changes)
        with pytest.raises(ValueError, match=message) as err:
            TokenDataset(folder, "train")
        assert str(data) in str(err.value) or str(folder) in str(err.value)
    data.write_bytes(original[: len(original) - 10])
    with pytest.raises(ValueError, match=re.escape(str(data)) + r" \(\d+ bytes\) .*truncated or corrupt"):
        TokenDataset(folder, "train")
    data.write_bytes(original)
    with pytest.raises(FileNotFoundError, match=r"no 'val' split: val\.safetensors is missing .*\['train'\]"):
        TokenDataset(folder, "val")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "splits": {"train": 5}}))
    with pytest.raises(ValueError, match=r"meta\.json records 5 items for 'train' but train\.safetensors holds 3"):
        TokenDataset(folder, "train")
    (folder / "meta.json").write_text(json.dumps(meta)[:40])
    with pytest.raises(ValueError, match=re.escape(str(folder / "meta.json")) + " is not valid JSON"):
        TokenDataset(folder, "train")
    (folder / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no token folder at .*tokens \(it has no meta\.json\)"):
        TokenDataset(folder, "train")


# ----------------------------------------------------------------------------- model folders

def test_damaged_model_folder_is_named(tmp_path):
    folder = tiny_tokenizer().save_pretrained(tmp_path / "tok")
    config, weights = folder / "config.json", folder / "model.safetensors"
    text, blob = config.read_text(), weights.read_bytes()

    config.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=re.escape(str(config)) + r" is not valid JSON: .* at line \d+ column \d+ "
                                         r"\(char \d+\) \(it ends early: cut off\?\); the model folder .* is damaged"):
        VQTokenizer.from_pretrained(folder)
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_spec(folder)

    meta = json.loads(text)
    for field, value, want in (("codebook_size", "512", r"'codebook_size' must be int, got string \"512\""),
                               ("channel_mults", 2, r"'channel_mults' must be a list of int, got int 2"),
                               ("scales", [1, "2"], r"'scales' must be a list of int or null"),
                               ("mid_attention", 1, r"'mid_attention' must be bool, got int 1")):
        config.write_text(json.dumps({**meta, "config": {**meta["config"], field: value}}))
        with pytest.raises(ValueError, match=re.escape(str(config)) + r": wrong type in TokenizerConfig field " + want):
            VQTokenizer.from_pretrained(folder)
    config.write_text(json.dumps({**meta, "spec": {**meta["spec"], "factor": 2.5}}))
    with pytest.raises(ValueError, match=r"config\.json \(spec\): wrong type .*'factor' must be int, got float 2\.5"):
        read_spec(folder)

    config.write_text(text)
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=re.escape(str(weights)) + r" \(\d+ bytes\) is not a readable safetensors "
                                         r"file .*truncated or corrupt"):
        VQTokenizer.from_pretrained(folder)
    weights.write_bytes(blob)
    VQTokenizer.from_pretrained(folder)


def test_check_fields_knows_generator_configs():
    from tokgen.generators import GeneratorConfig

    check_types(GeneratorConfig, {"width": 64, "mlp_ratio": 4, "condition": "class"}, "g.json")
    with pytest.raises(ValueError, match=r"g\.json: wrong type in GeneratorConfig fields 'width' must be int, got "
                                         r"float 64\.5; 'dropout' must be a number, got string"):
        check_types(GeneratorConfig, {"width": 64.5, "dropout": "0.1"}, "g.json")
    with pytest.raises(ValueError, match="must be a JSON object"):
        check_types(GeneratorConfig, [1, 2], "g.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TokenizerConfig.from_dict(TokenizerConfig().to_dict())   # a saved config passes unchanged
