"""Model folders the Hugging Face way (tokgen/hub.py): the model card every save writes, push_to_hub
and hub ids in from_pretrained.  Nothing here reaches the network: the hub's functions are replaced
by fakes (monkeypatch), and a fake that is not expected to run fails the test if it does."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

from tokgen.generators import FAMILIES, build_generator, load_generator
from tokgen.hub import CARD_NAME, is_hub_id
from tokgen.tokenizers_vq import PRESETS, TokenizerConfig, VQTokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Belt and braces: should a call slip past the fakes, the hub library refuses the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # k-means init on a small batch warns; expected
        yield


def tiny_tokenizer(kind: str = "msvq") -> VQTokenizer:
    torch.manual_seed(0)
    config = TokenizerConfig(image_size=16, base_width=8, channel_mults=(1, 2), z_channels=8, quantizer=kind,
                             codebook_size=32, scales=(1, 2, 4, 8) if kind == "msvq" else None, lfq_bits=5,
                             fsq_levels=(5, 5, 3))
    model = VQTokenizer(config)
    with torch.no_grad():
        model(torch.rand(8, 3, 16, 16))     # k-means init, so the codebook is not all zeros
    return model.eval()


def tiny_generator(family: str = "maskgit"):
    torch.manual_seed(0)
    spec = {"codebook_size": 32, "scales": [4], "image_size": 16, "channels": 3}
    return build_generator(family, spec, dict(width=32, depth=1, heads=4, condition="class", num_classes=3))


def card_parts(folder: Path) -> tuple[dict, str]:
    """(front matter, body) of a folder's README.md."""
    text = (folder / CARD_NAME).read_text()
    assert text.startswith("---\n"), "the card must open with YAML front matter"
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def run_load_snippet(body: str, cwd: Path):
    """Run the card's Python block as a user would paste it; returns its `model`."""
    code = body.split("```python\n", 1)[1].split("```", 1)[0]
    assert len([line for line in code.splitlines() if line.strip()]) <= 3, code
    before = os.getcwd()
    os.chdir(cwd)
    try:
        scope: dict = {}
        exec(code, scope)
        return scope["model"]
    finally:
        os.chdir(before)


def same_tokens(a: VQTokenizer, b: VQTokenizer) -> bool:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return all(torch.equal(p, q) for p, q in zip(a.encode(x), b.encode(x)))


# ----------------------------------------------------------------------------- the model card

@pytest.mark.parametrize("kind", ["vq", "msvq", "fsq", "lfq"])
def test_tokenizer_card_names_the_model_and_how_to_load_it(kind, tmp_path):
    model = tiny_tokenizer(kind)
    model.save_pretrained(tmp_path / "tok", training={"steps": 1200, "images_seen": 38400, "dataset": "shapes"},
                          license="apache-2.0")
    front, body = card_parts(tmp_path / "tok")
    assert front["library_name"] == "tokgen" and front["license"] == "apache-2.0"
    assert {"tokgen", "image-tokenizer", kind} <= set(front["tags"])
    spec = model.spec
    assert f"| quantizer | {kind} |" in body
    assert f"| codebook size | {spec.codebook_size:,} |" in body
    assert f"| scales | {', '.join(map(str, spec.scales))} |" in body
    assert "| preset | custom |" in body            # not a registered preset's config
    assert "| steps | 1,200 |" in body and "| images seen | 38,400 |" in body and "| dataset | shapes |" in body
    # the three lines of Python in the card load this very folder
    assert same_tokens(run_load_snippet(body, tmp_path), model)


def test_preset_tokenizer_card_names_its_preset(tmp_path):
    VQTokenizer(PRESETS["shapes-tiny-fsq"]).save_pretrained(tmp_path / "tok")
    front, body = card_parts(tmp_path / "tok")
    assert "| preset | shapes-tiny-fsq |" in body and "| codebook size | 1,000 |" in body  # 8*5*5*5, not config's 256
    assert "fsq" in front["tags"] and "license" not in front                             # no license unless given
    assert "Not recorded" in body                                                         # no training facts given


def test_card_is_rewritten_with_every_save_and_the_folder_still_loads(tmp_path):
    model, path = tiny_tokenizer("vq"), tmp_path / "tok"
    model.save_pretrained(path, training={"steps": 10})
    model.save_pretrained(path, training={"steps": 20})
    _, body = card_parts(path)
    assert "| steps | 20 |" in body and "| steps | 10 |" not in body
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert same_tokens(VQTokenizer.from_pretrained(path), model)


def test_card_is_inside_the_atomic_write(tmp_path, monkeypatch):
    """A save that fails while writing the card leaves the previous folder whole and no temp dirs."""
    model, path = tiny_tokenizer("vq"), tmp_path / "tok"
    model.save_pretrained(path, training={"steps": 10})
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(VQTokenizer, "model_card", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]


def test_folders_without_a_card_still_load(tmp_path):
    """Checkpoints written before cards existed: config.json + model.safetensors only."""
    model, path = tiny_tokenizer("lfq"), tmp_path / "tok"
    model.save_pretrained(path)
    (path / CARD_NAME).unlink()
    assert same_tokens(VQTokenizer.from_pretrained(path), model)
    gen = tiny_generator()
    gen.save_pretrained(tmp_path / "gen")
    (tmp_path / "gen" / CARD_NAME).unlink()
    assert type(load_generator(tmp_path / "gen")) is type(gen)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generator_card_names_family_condition_size_and_spec(family, tmp_path):
    gen = tiny_generator(family)
    gen.save_pretrained(tmp_path / "gen", training={"steps": 300})
    front, body = card_parts(tmp_path / "gen")
    assert front["library_name"] == "tokgen" and {"tokgen", "image-generation", family} <= set(front["tags"])
    for row in (f"| family | {family} |", "| condition | class |", "| width | 32 |", "| depth | 1 |",
                "| heads | 4 |", "| codebook size | 32 |", "| scales | 4 |", "| steps | 300 |"):
        assert row in body, row
    loaded = run_load_snippet(body, tmp_path)
    assert type(loaded) is type(gen)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), gen.state_dict().values()))


# ----------------------------------------------------------------------------- push_to_hub

class FakeHfApi:
    """Records what push_to_hub asks of the hub; upload_folder looks at the folder while it exists."""
    calls: list = []
    uploaded: dict = {}

    def __init__(self, token=None, library_name=None, **kwargs):
        FakeHfApi.calls.append(("init", {"token": token, "library_name": library_name}))

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        FakeHfApi.calls.append(("create_repo", {"repo_id": repo_id, "private": private, "exist_ok": exist_ok}))
        return types.SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, *, branch, exist_ok=False, **kwargs):
        FakeHfApi.calls.append(("create_branch", {"repo_id": repo_id, "branch": branch, "exist_ok": exist_ok}))

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, revision=None,
                      create_pr=None, **kwargs):
        folder = Path(folder_path)
        FakeHfApi.calls.append(("upload_folder", {"repo_id": repo_id, "repo_type": repo_type, "revision": revision,
                                                  "commit_message": commit_message, "create_pr": create_pr}))
        FakeHfApi.uploaded = {"folder": folder, "files": sorted(p.name for p in folder.iterdir()),
                              "card": (folder / CARD_NAME).read_text(), "model": load_any(folder)}
        return "https://huggingface.co/fake/commit/0"


def load_any(folder: Path):
    from tokgen.tokenizers_vq.tokenizer import FORMAT
    import json
    fmt = json.loads((folder / "config.json").read_text())["format"]
    return VQTokenizer.from_pretrained(folder) if fmt == FORMAT else load_generator(folder)


@pytest.fixture
def fake_api(monkeypatch):
    FakeHfApi.calls, FakeHfApi.uploaded = [], {}
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    return FakeHfApi


@pytest.mark.parametrize("kind", ["tokenizer", "generator"])
def test_push_to_hub_uploads_the_saved_folder_with_its_card(kind, fake_api):
    model = tiny_tokenizer("msvq") if kind == "tokenizer" else tiny_generator("var")
    result = model.push_to_hub("someone/my-model", private=True, token="hf_fake", commit_message="first",
                               training={"steps": 5})
    assert result == "https://huggingface.co/fake/commit/0"
    names = [name for name, _ in fake_api.calls]
    assert names == ["init", "create_repo", "upload_folder"]         # no branch asked for: none created
    calls = dict(fake_api.calls)
    assert calls["init"]["token"] == "hf_fake"
    assert calls["create_repo"] == {"repo_id": "someone/my-model", "private": True, "exist_ok": True}
    assert calls["upload_folder"]["repo_id"] == "someone/my-model" and calls["upload_folder"]["repo_type"] == "model"
    assert calls["upload_folder"]["commit_message"] == "first"
    up = fake_api.uploaded
    assert {"config.json", "model.safetensors", "README.md"} <= set(up["files"])
    assert "from_pretrained('someone/my-model')" in up["card"] or "load_generator('someone/my-model')" in up["card"]
    assert "| steps | 5 |" in up["card"] and str(up["folder"]) not in up["card"]
    assert all(torch.equal(a, b) for a, b in zip(up["model"].state_dict().values(), model.state_dict().values()))
    assert not up["folder"].exists()                                  # the temporary folder is gone


def test_push_to_a_branch_creates_it(fake_api):
    tiny_tokenizer("vq").push_to_hub("someone/tok", revision="v1")
    calls = dict(fake_api.calls)
    assert calls["create_branch"] == {"repo_id": "someone/tok", "branch": "v1", "exist_ok": True}
    assert calls["upload_folder"]["revision"] == "v1"
    assert calls["upload_folder"]["commit_message"] == "Upload VQTokenizer with tokgen"


def test_saving_never_calls_the_hub(tmp_path, fake_api):
    tiny_tokenizer("vq").save_pretrained(tmp_path / "tok")
    tiny_generator().save_pretrained(tmp_path / "gen")
    assert fake_api.calls == []


# ----------------------------------------------------------------------------- hub ids in from_pretrained

def test_is_hub_id():
    assert is_hub_id("owner/name") and is_hub_id("my-org/tok_v1.2")
    for local in ("name", "./owner/name", "/abs/path", "a/b/c", "owner/", "/name", "owner/..", "../x",
                  Path("owner/name")):
        assert not is_hub_id(local), local


@pytest.fixture
def saved(tmp_path):
    tok, gen = tiny_tokenizer("vq"), tiny_generator("ar")
    tok.save_pretrained(tmp_path / "cache" / "tok")
    gen.save_pretrained(tmp_path / "cache" / "gen")
    return tok, gen, tmp_path / "cache"


def test_hub_id_downloads_with_snapshot_download(saved, tmp_path, monkeypatch):
    tok, gen, cache = saved
    seen = []

    def fake_snapshot_download(repo_id, **kwargs):
        seen.append((repo_id, kwargs))
        return str(cache / ("tok" if repo_id == "someone/tok" else "gen"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.chdir(tmp_path)                  # no local someone/tok here
    loaded = VQTokenizer.from_pretrained("someone/tok", revision="v1", cache_dir=str(tmp_path / "hf"),
                                         token="hf_fake", local_files_only=True)
    assert same_tokens(loaded, tok)
    repo_id, kwargs = seen[0]
    assert repo_id == "someone/tok"
    assert (kwargs["revision"], kwargs["cache_dir"], kwargs["token"], kwargs["local_files_only"]) == \
        ("v1", str(tmp_path / "hf"), "hf_fake", True)
    generator = load_generator("someone/gen", device="cpu")
    assert type(generator) is type(gen) and seen[1][0] == "someone/gen"


def test_a_local_folder_wins_over_a_hub_id(saved, tmp_path, monkeypatch):
    tok, _, cache = saved
    def must_not_run(*args, **kwargs):
        raise AssertionError("snapshot_download was called for an existing local folder")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", must_not_run)
    monkeypatch.chdir(cache.parent)
    os.makedirs("someone", exist_ok=True)
    tok.save_pretrained("someone/tok")          # a relative folder spelled like a hub id
    assert same_tokens(VQTokenizer.from_pretrained("someone/tok"), tok)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):   # a Path is never a hub id
        VQTokenizer.from_pretrained(Path("someone/missing"))


def test_hub_id_offline_without_cache_says_to_pass_a_local_folder(tmp_path, monkeypatch):
    def offline(repo_id, **kwargs):
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                      "has been disabled.")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.chdir(tmp_path)
    for load in (VQTokenizer.from_pretrained, load_generator):
        with pytest.raises(FileNotFoundError) as err:
            load("someone/not-cached")
        message = str(err.value)
        assert "'someone/not-cached'" in message and "no network" in message
        assert "Pass a local folder written by save_pretrained" in message
        assert isinstance(err.value.__cause__, LocalEntryNotFoundError)


def test_unknown_hub_id_is_named(tmp_path, monkeypatch):
    def missing(repo_id, **kwargs):
        raise RepositoryNotFoundError("404", response=types.SimpleNamespace(headers={}, request=None))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no local folder 'someone/typo'.*does not exist.*token="):
        VQTokenizer.from_pretrained("someone/typo")


def test_import_save_and_local_load_never_import_huggingface_hub(tmp_path):
    code = (
        "import sys, torch\n"
        "from tokgen.tokenizers_vq import VQTokenizer, get_preset\n"
        "import tokgen.generators, tokgen.hub\n"
        f"path = {str(tmp_path / 'tok')!r}\n"
        "VQTokenizer(get_preset('shapes-tiny', base_width=8, z_channels=8)).save_pretrained(path)\n"
        "VQTokenizer.from_pretrained(path)\n"
        "assert 'huggingface_hub' not in sys.modules, 'huggingface_hub was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
