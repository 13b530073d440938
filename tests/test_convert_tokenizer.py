"""Published tokenizers (LlamaGen VQ-16, VAR's VQVAE, taming's VQGAN) converted into VQTokenizer:
parity with outputs the peers' own code made, every key of the full-size releases mapped, a
converted tokenizer through extract-tokens -> train-generator -> sample, and the errors.

The reference data lies beside the checkout, in ../shared/fixtures/tokenizers/ (its README says
what each tensor is): a small random-weight model of each architecture saved in the released
format, the peer's outputs on 4 images, and a manifest of every key of the full-size release.
Where it is absent (a plain checkout) these tests skip and say so.

Tolerances: indices exact; latents and images 1e-4 (the peer's own float32 noise is up to 3e-5 on
images, 7e-6 on latents; a mapping mistake shows at 1e-2 or more); VAR's next-scale inputs 1e-5.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tokgen.tokenizers_vq import VQTokenizer
from tokgen.tokenizers_vq.published import FORMATS, RELEASED_SCALES, convert_state, convert_tokenizer
from tokgen.train.cli import main as tokgen

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "tokenizers"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"the tokenizer parity fixtures are not at {FIXTURES} (CI puts shared/ beside "
                                  f"the checkout)")

# format -> (fixture folder, checkpoint file, VAR's scales of the small model)
CASES = {
    "llamagen-vq16": ("llamagen_vq16", "checkpoint.pt", None),
    "var-vqvae": ("var_vqvae", "checkpoint.pth", (1, 2, 3, 4, 6, 8)),
    "taming-vqgan": ("taming_vqgan", "checkpoint.ckpt", None),
}
LATENT_TOL, IMAGE_TOL, VAR_INPUT_TOL = 1e-4, 1e-4, 1e-5


def _load(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / name))


def _max_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape, (tuple(ours.shape), tuple(ref.shape))
    return (ours.double() - ref.double()).abs().max().item()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Each small fixture converted once, at its own image size."""
    if not FIXTURES.is_dir():
        pytest.skip(f"the tokenizer parity fixtures are not at {FIXTURES}")
    root = tmp_path_factory.mktemp("converted")
    out = {}
    for source, (folder, file, scales) in CASES.items():
        size = json.loads((FIXTURES / folder / "config.json").read_text())["image_size"]
        convert_tokenizer(source, FIXTURES / folder / file, root / folder, image_size=size, scales=scales)
        out[source] = root / folder
    return out


def _next_scale_inputs(quantizer, ids: list[torch.Tensor]) -> torch.Tensor:
    """VAR's teacher-forcing input (B, sum of s_k^2 for k >= 1, C), built as the VAR generator's
    `_next_input` builds it: f_hat += upsample_and_refine(lookup(ids_k), k), then the area-downsample
    of f_hat to the next scale, flattened row-major."""
    f_hat, parts = None, []
    for k in range(len(ids) - 1):
        h = quantizer.upsample_and_refine(quantizer.lookup(ids[k]), k).float()
        f_hat = h if f_hat is None else f_hat + h
        parts.append(quantizer.downsample(f_hat, k + 1).flatten(2).transpose(1, 2))
    return torch.cat(parts, dim=1)


# ---------------------------------------------------------------------------- parity

@needs_fixtures
@pytest.mark.parametrize("source", ["llamagen-vq16", "taming-vqgan"])
def test_single_scale_parity_with_the_peer(converted, source):
    """Indices exact; encoder output, quant_conv output, the quantized latent (encode path and from
    the indices) and the raw decoder output (the peers do not clamp) within 1e-4; the public
    [0, 1] decode is the same image, clamped."""
    ref = _load(f"{CASES[source][0]}/fixtures.safetensors")
    tok = VQTokenizer.from_pretrained(converted[source])
    images = ref["images"]                                    # [-1, 1], as the peers take them
    with torch.no_grad():
        encoder_out = tok.encoder(images)
        pre_quant = tok.quant_conv(encoder_out)
        quant = tok.quantizer(pre_quant).z_q
        tokens = tok.encode((images + 1) / 2)                 # the public path takes [0, 1]
        from_indices = tok.quantizer.indices_to_latent(tokens)
        decoded = tok.decode_latent(from_indices)
    assert torch.equal(tokens[0], ref["indices_bhw"])
    assert torch.equal(tokens[0].flatten(), ref["indices"])   # the peer's flat (b, h, w) layout
    errors = {"encoder_out": _max_error(encoder_out, ref["encoder_out"]),
              "pre_quant": _max_error(pre_quant, ref["pre_quant"]),
              "quant": _max_error(quant, ref["quant"]),
              "quant_from_indices": _max_error(from_indices, ref["quant_from_indices"]),
              "decoded": _max_error(decoded, ref["decoded"])}
    public = _max_error(tok.decode(tokens), ((ref["decoded"] + 1) / 2).clamp(0, 1))
    print(source, errors, "public decode", public)
    assert max(errors.values()) < LATENT_TOL and public < IMAGE_TOL, errors


@needs_fixtures
def test_var_parity_with_the_peer(converted):
    """Indices of every scale exact; f_hat after each scale, the encoder and quant_conv outputs and
    the clamped decode within 1e-4; the next-scale inputs within 1e-5."""
    ref = _load("var_vqvae/fixtures.safetensors")
    tok = VQTokenizer.from_pretrained(converted["var-vqvae"])
    q = tok.quantizer
    assert q.phi_of_scale == ref["phi_index_per_scale"].tolist()
    images = ref["images"]
    with torch.no_grad():
        encoder_out = tok.encoder(images)
        pre_quant = tok.quant_conv(encoder_out)
        out = q(pre_quant)
        tokens = tok.encode((images + 1) / 2)
        f_hat, fhat_errors = None, []
        for k, ids in enumerate(tokens):
            h = q.upsample_and_refine(q.lookup(ids), k)
            f_hat = h if f_hat is None else f_hat + h
            fhat_errors.append(_max_error(f_hat, ref[f"fhat_scale{k}"]))
        decoded = tok.decode_latent(q.indices_to_latent(tokens)).clamp(-1, 1)   # VAR clamps its decode
        var_input = _next_scale_inputs(q, tokens)
    for k, ids in enumerate(tokens):
        assert torch.equal(ids.flatten(1), ref[f"indices_scale{k}"]), k
    assert torch.equal(torch.cat([t.flatten(1) for t in tokens], 1), ref["indices_concat"])
    errors = {"encoder_out": _max_error(encoder_out, ref["encoder_out"]),
              "pre_quant": _max_error(pre_quant, ref["pre_quant"]),
              "fhat (encode path, last scale)": _max_error(out.z_q, ref["fhat_scale5"]),
              "fhat per scale (max)": max(fhat_errors),
              "fhat_from_indices": _max_error(q.indices_to_latent(tokens), ref["fhat_from_indices"]),
              "decoded": _max_error(decoded, ref["decoded"])}
    var_error = _max_error(var_input, ref["var_input"])
    generator_error = _max_error(_generator_inputs(tok, tokens), ref["var_input"])
    print("var-vqvae", errors, "var_input", var_error, "through the VAR generator", generator_error)
    assert max(errors.values()) < LATENT_TOL, errors
    assert var_error < VAR_INPUT_TOL and generator_error < VAR_INPUT_TOL


def _generator_inputs(tok: VQTokenizer, tokens: list[torch.Tensor]) -> torch.Tensor:
    """The next-scale inputs as the VAR generator itself builds them on the attached tokenizer."""
    from tokgen.generators import build_generator

    gen = build_generator("var", tok.spec, dict(width=32, depth=1, heads=4, condition="class", num_classes=2))
    gen.attach_tokenizer(tok)
    f_hat, parts = None, []
    with torch.no_grad():
        for k in range(len(tokens) - 1):
            f_hat, nxt = gen._next_input(gen._source(), f_hat, tokens[k], k)
            parts.append(nxt)
    return torch.cat(parts, dim=1)


@needs_fixtures
def test_var_quantizer_parity_with_the_released_ten_scales(tmp_path):
    """The same checkpoint at 256 px with the released scales (the default): indices of all 10
    scales exact (phi table [0,0,1,1,1,2,2,3,3,3]), the final f_hat within 1e-4, the next-scale
    inputs within 1e-5."""
    ref = _load("var_vqvae/fixtures_quantizer_10scales.safetensors")
    convert_tokenizer("var-vqvae", FIXTURES / "var_vqvae" / "checkpoint.pth", tmp_path / "var10")
    q = VQTokenizer.from_pretrained(tmp_path / "var10").quantizer
    assert tuple(q.scales) == RELEASED_SCALES
    assert q.phi_of_scale == ref["phi_index_per_scale"].tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    with torch.no_grad():
        out = q(ref["pre_quant"])
        var_input = _next_scale_inputs(q, out.indices)
    for k, ids in enumerate(out.indices):
        assert torch.equal(ids.flatten(1), ref[f"indices_scale{k}"]), k
    fhat_error, var_error = _max_error(out.z_q, ref["fhat_final"]), _max_error(var_input, ref["var_input"])
    print("var 10 scales: fhat_final", fhat_error, "var_input", var_error)
    assert fhat_error < LATENT_TOL and var_error < VAR_INPUT_TOL


@needs_fixtures
def test_converted_folder_records_its_origin(converted):
    import hashlib

    meta = json.loads((converted["var-vqvae"] / "config.json").read_text())
    data = (FIXTURES / "var_vqvae" / "checkpoint.pth").read_bytes()
    assert meta["origin"] == {"format": "var-vqvae", "file": "checkpoint.pth",
                              "sha256": hashlib.sha256(data).hexdigest(), "image_size": 128}
    assert meta["config"]["scales"] == [1, 2, 3, 4, 6, 8] and meta["config"]["kmeans_init"] is False
    assert "checkpoint.pth" in (converted["var-vqvae"] / "README.md").read_text()
    tok = VQTokenizer.from_pretrained(converted["var-vqvae"])
    assert tok.origin == meta["origin"] and bool(tok.quantizer.vq._codebook.initted)


# ---------------------------------------------------------------------------- the full-size releases

def _manifest_state(folder: str, device: str = "meta") -> tuple[dict[str, torch.Tensor], dict]:
    manifest = json.loads((FIXTURES / folder / "manifest.json").read_text())
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    state = {e["key"]: (torch.randn(e["shape"]) if e["dtype"] == "float32" and device != "meta" else
                        torch.empty(e["shape"], dtype=dtypes[e["dtype"]], device=device))
             for e in manifest["keys"]}
    assert len(state) == manifest["num_keys"]
    return state, manifest


FULL_SIZE = {  # what each release is (the fixtures' README): fields of the config inferred from its shapes
    "llamagen-vq16": dict(base_width=128, channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
                          embed_dim=8, quant_conv_kernel=1, codebook_size=16384, use_cosine_sim=True,
                          attn_resolutions=(16,), scales=None),
    "var-vqvae": dict(base_width=160, channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=32,
                      embed_dim=32, quant_conv_kernel=3, codebook_size=4096, quantizer="msvq", phi_count=4,
                      attn_resolutions=(16,), scales=RELEASED_SCALES),
    "taming-vqgan": dict(base_width=128, channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
                         embed_dim=256, quant_conv_kernel=1, codebook_size=16384, use_cosine_sim=False,
                         attn_resolutions=(16,), scales=None),
}


@needs_fixtures
@pytest.mark.parametrize("source", list(CASES))
def test_every_key_of_the_full_size_release_maps(source):
    """The manifest of the released checkpoint (every key and shape, as meta tensors: no download,
    no memory) converts: the config read off its shapes is the release's, every key of our model is
    filled with the right shape, and the keys left out are exactly the loss / training-statistic ones."""
    state, manifest = _manifest_state(CASES[source][0])
    config, result = convert_state(source, state, image_size=256)
    for field, value in FULL_SIZE[source].items():
        assert getattr(config, field) == value, field
    assert config.norm_groups == 32 and config.mid_attention
    with torch.device("meta"):
        ours = VQTokenizer(config).state_dict()
    assert set(result.state) == set(ours)
    assert all(result.state[k].shape == ours[k].shape for k in ours)
    not_needed = {e["key"] for e in manifest["keys"] if e["category"] != "model"}
    assert set(result.skipped) == not_needed
    used = sum(e["numel"] if "numel" in e else torch.Size(e["shape"]).numel()
               for e in manifest["keys"] if e["key"] not in not_needed)
    assert used == manifest["numel_by_category"]["model"]


@needs_fixtures
@pytest.mark.slow
@pytest.mark.parametrize("source", list(CASES))
def test_full_size_release_with_random_weights_loads_and_runs(source, tmp_path):
    """The full-size configuration with random weights, saved in the released layout, converts
    through the file path into a folder that loads and encodes a 256 px image."""
    state, manifest = _manifest_state(CASES[source][0], device="cpu")
    top = json.loads((FIXTURES / CASES[source][0] / "config.json").read_text())
    wrapper = {"llamagen-vq16": "model", "taming-vqgan": "state_dict"}.get(source)
    torch.save({wrapper: state, "epoch": 0} if wrapper else state, tmp_path / "release.pt")
    assert top["checkpoint_file"]
    convert_tokenizer(source, tmp_path / "release.pt", tmp_path / "tok")
    tok = VQTokenizer.from_pretrained(tmp_path / "tok")
    tokens = tok.encode(torch.rand(1, 3, 256, 256))
    assert tokens[-1].shape == (1, 16, 16)


# ---------------------------------------------------------------------------- every command runs on it

@needs_fixtures
def test_a_converted_tokenizer_runs_through_extract_train_and_sample(converted, tmp_path):
    """VAR's converted tokenizer (multi-scale: every family runs on it, VAR included): tokens of a
    dataset, a tiny VAR generator for 2 steps, a sample grid."""
    tok = str(converted["var-vqvae"])
    tokens, run, grid = tmp_path / "tokens", tmp_path / "run", tmp_path / "grid.png"
    assert tokgen(["extract-tokens", "--tokenizer", tok, "--dataset", "shapes", "--splits", "train,val",
                   "--limit", "16", "--batch-size", "16", "--device", "cpu", "--out", str(tokens)]) == 0
    assert json.loads((tokens / "meta.json").read_text())["spec"]["scales"] == [1, 2, 3, 4, 6, 8]
    assert tokgen(["train-generator", "--tokens", str(tokens), "--tokenizer", tok, "--family", "var",
                   "--condition", "class", "--max-steps", "2", "--out-dir", str(run), "--size", "tiny",
                   "--set", "width=32", "--set", "heads=4", "--set", "depth=1", "--tensorboard", "false",
                   "--batch-size", "8", "--warmup-steps", "1", "--eval-n", "0", "--val-n", "0",
                   "--sample-every", "0"]) == 0
    assert tokgen(["sample", "--generator", str(run / "generator"), "--tokenizer", tok, "--classes", "0", "1",
                   "--num-per-prompt", "1", "--out", str(grid)]) == 0
    from PIL import Image

    with Image.open(grid) as image:
        assert image.format == "PNG" and image.width >= 2 * 128


# ---------------------------------------------------------------------------- errors

@needs_fixtures
def test_a_checkpoint_of_another_format_names_the_right_one(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tokgen(["convert-tokenizer", "--from", "var-vqvae", str(FIXTURES / "taming_vqgan" / "checkpoint.ckpt"),
                "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert "not a var-vqvae checkpoint" in err and "--from taming-vqgan" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_a_file_of_no_known_format_lists_the_keys_each_expects(tmp_path, capsys):
    torch.save({"state_dict": {"net.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(SystemExit):
        tokgen(["convert-tokenizer", "--from", "llamagen-vq16", str(tmp_path / "other.ckpt"),
                "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert "matches none of the published tokenizer formats" in err
    for fmt in FORMATS.values():
        assert fmt.name in err and fmt.signature[0] in err
    assert "Traceback" not in err


def test_a_missing_key_is_named(tmp_path):
    """A checkpoint with one tensor removed: the error names it (no silent random weight)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"the tokenizer parity fixtures are not at {FIXTURES}")
    state = torch.load(FIXTURES / "var_vqvae" / "checkpoint.pth", weights_only=True)
    del state["decoder.up.2.block.1.conv2.bias"]
    with pytest.raises(ValueError, match=r"missing: decoder\.up\.2\.block\.1\.conv2\.bias"):
        convert_state("var-vqvae", state, image_size=128, scales=(1, 2, 4, 8))


def test_python_objects_in_the_file_are_read_as_inert_stand_ins(tmp_path):
    """A LlamaGen training file carries its argparse.Namespace `args`: weights_only=True still
    reads it (the Namespace becomes a stand-in) and the weights convert."""
    import argparse

    from tokgen.tokenizers_vq.published import load_checkpoint

    torch.save({"model": {"a": torch.ones(2)}, "args": argparse.Namespace(lr=1e-4)}, tmp_path / "f.pt")
    obj, stand_ins = load_checkpoint(tmp_path / "f.pt")
    assert stand_ins == ["argparse.Namespace"] and torch.equal(obj["model"]["a"], torch.ones(2))
    assert not isinstance(obj["args"], argparse.Namespace)


@pytest.mark.parametrize("argv,needle", [
    (["--from", "vqgan", "f.pt", "--out", "x"], "invalid choice: 'vqgan'"),
    (["--from", "var-vqvae", "missing.pth", "--out", "x"], "missing.pth not found"),
    (["--from", "taming-vqgan", "f.pt", "--out", "x", "--scales", "1,2"], "--scales applies to --from var-vqvae"),
])
def test_bad_flags_are_one_error_line(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        tokgen(["convert-tokenizer", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and needle in err and "Traceback" not in err
