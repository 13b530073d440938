"""Bad inputs through the public Python API: each raises a ValueError (or FileNotFoundError /
NotADirectoryError) whose message names the bad argument, field or file, before anything is
trained; the same checks the command line reports as `error: ...`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import tokgen
from tokgen.generators import build_generator, load_generator
from tokgen.pipeline import SampleConfig
from tokgen.tokenizers_vq import VQTokenizer, get_preset
from tokgen.train.engine import TrainConfig
from tokgen.errors import ConfigValueError, UsageError
from tokgen.train.jobs import (CompareConfig, ExtractConfig, GeneratorRunConfig, TokenizerRunConfig, compare,
                               extract_tokens, train_generator, train_tokenizer)

from test_errors_cli import TINY, _generator, _tokens


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("api-errors")
    torch.manual_seed(0)
    multi = VQTokenizer(get_preset("shapes-tiny-msvq", scales=(1, 2, 4), **TINY)).eval()
    single = VQTokenizer(get_preset("shapes-tiny", **TINY)).eval()
    multi.save_pretrained(root / "tok")
    _tokens(root / "tokens", multi.spec.to_dict())
    _tokens(root / "tokens1", single.spec.to_dict())
    _generator(root / "gen", root / "tok", multi.spec)
    for name in ("gencut", "genbadtype", "gentrunc"):
        shutil.copytree(root / "gen", root / name)
    text = (root / "gen" / "config.json").read_text()
    (root / "gencut" / "config.json").write_text(text[:40])
    meta = json.loads(text)
    meta["config"]["depth"] = 1.5
    (root / "genbadtype" / "config.json").write_text(json.dumps(meta))
    weights = (root / "gen" / "model.safetensors").read_bytes()
    (root / "gentrunc" / "model.safetensors").write_bytes(weights[:100])
    (root / "file.txt").write_text("not a folder")
    return root


@pytest.fixture(scope="module")
def pipe(root):
    return tokgen.Pipeline.from_pretrained(root / "gen", device="cpu")


@pytest.mark.parametrize("fields,name", [
    (dict(top_p=1.5), "top_p"), (dict(top_p=0.0), "top_p"), (dict(cfg_scale=-3.0), "cfg_scale"),
    (dict(temperature=-1.0), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"), (dict(steps=0), "steps"), (dict(steps=2.5), "steps"),
])
def test_sample_config_refuses_values_out_of_range(fields, name):
    with pytest.raises(ValueError, match=name) as info:
        SampleConfig(**fields)
    assert info.value.field == name


@pytest.mark.parametrize("kwargs,needle", [
    (dict(labels=[1], top_p=1.5), "top_p"), (dict(labels=[1], cfg_scale=-1.0), "cfg_scale"),
    (dict(labels=[1], batch_size=0), "batch_size"), (dict(labels=[1], num_per_prompt=0), "num_per_prompt"),
    (dict(labels=[1], output_type="jpg"), "output_type"), (dict(captions=["a caption"]), "class"),
    (dict(labels=[1], seed="x"), "seed"),
])
def test_a_pipeline_call_names_the_bad_argument(pipe, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        pipe(**kwargs)


@pytest.mark.parametrize("folder,kwargs,error,needles", [
    ("missing", {}, FileNotFoundError, ["missing"]),
    ("file.txt", {}, NotADirectoryError, ["file.txt"]),
    ("gen", dict(device="cuda"), UsageError, ["cuda"]),
    ("gen", dict(device="banana"), UsageError, ["banana"]),
    ("gen", dict(tokenizer="missing"), FileNotFoundError, ["missing"]),
    ("gencut", {}, ValueError, ["gencut", "config.json"]),
    ("genbadtype", {}, ValueError, ["genbadtype", "config.json", "depth"]),
    ("gentrunc", {}, ValueError, ["gentrunc", "model.safetensors"]),
])
def test_pipeline_from_pretrained_names_the_bad_folder(root, folder, kwargs, error, needles):
    if "tokenizer" in kwargs:
        kwargs = dict(tokenizer=root / kwargs["tokenizer"])
    with pytest.raises(error) as info:
        tokgen.Pipeline.from_pretrained(root / folder, **kwargs)
    assert all(n in str(info.value) for n in needles), str(info.value)


@pytest.mark.parametrize("folder,needles", [("gencut", ["config.json", "not valid JSON"]),
                                            ("genbadtype", ["config.json", "depth", "must be int"]),
                                            ("gentrunc", ["model.safetensors", "damaged"])])
def test_load_generator_names_the_damaged_file(root, folder, needles):
    with pytest.raises(ValueError) as info:
        load_generator(root / folder)
    assert all(n in str(info.value) for n in needles), str(info.value)


@pytest.mark.parametrize("family,config,needle", [
    ("maskgit", {"width": "wide"}, "width"), ("maskgit", {"width": 0}, "width"), ("maskgit", {"heads": 3}, "heads"),
    ("maskgit", {"dropout": 1.0}, "dropout"), ("maskgit", {"nosuch": 1}, "nosuch"), ("gan", {}, "gan"),
    ("ar", {"depth": True}, "depth"),
])
def test_build_generator_names_the_bad_field(family, config, needle):
    spec = dict(image_size=32, channels=3, codebook_size=32, scales=[1, 2, 4])
    with pytest.raises(ValueError, match=needle):
        build_generator(family, spec, config)


def test_the_jobs_check_every_setting_before_training(root, tmp_path):
    run = dict(tokens=str(root / "tokens"), tokenizer=str(root / "tok"))
    out = str(tmp_path / "run")
    with pytest.raises(ConfigValueError, match="lr") as info:
        train_generator(GeneratorRunConfig(**run, train=TrainConfig(lr=0.0, out_dir=out)))
    assert info.value.field == "lr"
    with pytest.raises(ConfigValueError, match="batch_size"):
        train_generator(GeneratorRunConfig(**run, train=TrainConfig(batch_size=0, out_dir=out)))
    with pytest.raises(UsageError, match="single scale"):
        train_generator(GeneratorRunConfig(tokens=str(root / "tokens1"), family="var",
                                           train=TrainConfig(out_dir=out)))
    with pytest.raises(FileNotFoundError, match="missing"):
        train_generator(GeneratorRunConfig(tokens=str(root / "missing"), train=TrainConfig(out_dir=out)))
    with pytest.raises(ConfigValueError, match="limit"):
        extract_tokens(ExtractConfig(tokenizer=str(root / "tok"), out=str(tmp_path / "t"), limit=-1))
    with pytest.raises(UsageError, match="cuda"):
        extract_tokens(ExtractConfig(tokenizer=str(root / "tok"), out=str(tmp_path / "t"), device="cuda"))
    with pytest.raises(ConfigValueError, match="eval_n"):
        train_tokenizer(TokenizerRunConfig(eval_n=-1))
    with pytest.raises(ConfigValueError, match="ema_decay"):
        train_tokenizer(TokenizerRunConfig(train=TrainConfig(ema_decay=1.0, out_dir=out)))
    with pytest.raises(ConfigValueError, match="n=2"):
        compare(CompareConfig(**run, n=2, out=str(tmp_path / "c")))
    with pytest.raises(UsageError, match="single scale"):
        compare(CompareConfig(tokens=str(root / "tokens1"), tokenizer=str(root / "tok"), families=("var",), n=4,
                              out=str(tmp_path / "c")))
    assert not (tmp_path / "run").exists() and not (tmp_path / "t").exists() and not (tmp_path / "c").exists()
