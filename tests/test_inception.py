"""The FID Inception-v3 (eval/features.py): random-weight behaviour, weight lookup and checks, and a
parity test against pytorch-fid / torch-fidelity that runs only where both the weights file
(${TOKGEN_INCEPTION_WEIGHTS}) and one of those packages are present."""
import hashlib
import importlib.util
import os

import pytest
import torch
from safetensors.torch import save_file

from tokgen.eval.features import (
    WEIGHTS_ENV,
    WEIGHTS_FILENAME,
    WEIGHTS_URL,
    FeatureExtractor,
    InceptionV3FID,
    InceptionWeightsError,
    InceptionWeightsMissing,
    check_state_dict,
    extract_features,
    feature_extractor,
    find_inception_weights,
    sha256_matches,
)


@pytest.fixture(scope="module")
def model():
    return InceptionV3FID(random_init=True, seed=0)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def feats(model, images):
    with torch.no_grad():
        return model.features_and_logits(images)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------------- random weights
def test_random_inception_gives_finite_2048_d_features_of_small_images(model, images, feats):
    pool, logits = feats
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    assert pool.dtype == logits.dtype == torch.float32
    assert torch.isfinite(pool).all() and pool.std() > 0
    assert isinstance(model, FeatureExtractor) and (model.name, model.dim) == ("inception", 2048)
    torch.testing.assert_close(logits, pool @ model.fc.weight.T)  # no bias: the IS convention


def test_random_inception_is_deterministic(model, images, feats):
    again = InceptionV3FID(random_init=True, seed=0)
    assert _same_weights(model, again)
    with torch.no_grad():
        assert torch.equal(again(images), feats[0])
    assert not _same_weights(model, InceptionV3FID(random_init=True, seed=1))


def test_random_init_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    InceptionV3FID(random_init=True)
    assert torch.equal(torch.get_rng_state(), state)


def test_inception_stays_frozen_in_eval_mode(model):
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_extract_features_with_inception(model, images, feats):
    out = extract_features(model, [images], batch_size=2)
    assert out.shape == (2, 2048)
    torch.testing.assert_close(torch.from_numpy(out), feats[0])


@pytest.mark.parametrize("bad, match", [
    (torch.rand(1, 1, 32, 32), "x.repeat"),
    (torch.rand(1, 3, 32, 32) * 2 - 1, r"\(x \+ 1\) / 2"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "uint8"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
])
def test_inception_rejects_bad_images(model, bad, match):
    with pytest.raises(ValueError, match=match):
        model(bad)


def test_factory_builds_inception():
    assert isinstance(feature_extractor("inception", random_init=True), InceptionV3FID)
    with pytest.raises(ValueError, match="not both"):
        InceptionV3FID("x.pth", random_init=True)


# ----------------------------------------------------------------------------------- finding the weights
@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    """No env var and an empty torch hub dir."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path


def test_missing_weights_say_what_to_get_and_where(no_weights):
    with pytest.raises(InceptionWeightsMissing) as err:
        InceptionV3FID()
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for needed in (WEIGHTS_FILENAME, WEIGHTS_URL, WEIGHTS_ENV, str(no_weights / "hub" / "checkpoints"),
                   "random_init=True"):
        assert needed in msg


def test_a_named_but_absent_file_is_an_error_not_skipped(no_weights, monkeypatch):
    with pytest.raises(InceptionWeightsMissing, match="the path you passed"):
        find_inception_weights(no_weights / "nope.pth")
    monkeypatch.setenv(WEIGHTS_ENV, str(no_weights / "typo.pth"))
    with pytest.raises(InceptionWeightsMissing, match=f"from \\${WEIGHTS_ENV}"):
        find_inception_weights()


def test_lookup_order_is_argument_env_then_hub(no_weights, monkeypatch):
    hub = no_weights / "hub" / "checkpoints" / WEIGHTS_FILENAME
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")
    assert find_inception_weights() == hub
    env = no_weights / "env.pth"
    env.write_bytes(b"x")
    monkeypatch.setenv(WEIGHTS_ENV, str(env))
    assert find_inception_weights() == env
    arg = no_weights / "arg.pth"
    arg.write_bytes(b"x")
    assert find_inception_weights(arg) == arg


# ----------------------------------------------------------------------------------- checking the file
@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    """The random model's weights as the ported file has them (no num_batches_tracked), .pth and
    .safetensors."""
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    d = tmp_path_factory.mktemp("weights")
    torch.save(sd, d / "w.pth")
    save_file(sd, str(d / "w.safetensors"))
    return d


@pytest.mark.parametrize("name", ["w.pth", "w.safetensors"])
def test_weights_load_from_a_file(model, saved, no_weights, monkeypatch, name):
    monkeypatch.setenv(WEIGHTS_ENV, str(saved / name))
    assert _same_weights(InceptionV3FID(), model)


def test_a_corrupt_file_is_reported(no_weights):
    bad = no_weights / WEIGHTS_FILENAME
    bad.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(InceptionWeightsError, match="could not read"):
        InceptionV3FID(bad)


def test_a_mismatched_state_dict_names_the_keys(model):
    sd = dict(model.state_dict())
    del sd["Mixed_5b.branch1x1.conv.weight"]
    sd["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    sd["fc.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(InceptionWeightsError) as err:
        check_state_dict(sd, model)
    msg = str(err.value)
    assert "missing: Mixed_5b.branch1x1.conv.weight" in msg
    assert "unexpected: AuxLogits.fc.weight" in msg
    assert "mis-shaped: fc.weight (1000, 2048) (model: (1008, 2048))" in msg


def test_a_wrong_file_is_reported_with_its_keys(no_weights):
    path = no_weights / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(InceptionWeightsError) as err:
        InceptionV3FID(path)
    assert "missing: Conv2d_1a_3x3.conv.weight" in str(err.value) and "(472 in all)" in str(err.value)
    assert "unexpected: encoder.weight" in str(err.value)


def test_sha256_check(saved, no_weights):
    path = no_weights / "small.bin"
    path.write_bytes(b"tokgen")
    digest = hashlib.sha256(b"tokgen").hexdigest()
    assert sha256_matches(path, digest[:8]) and not sha256_matches(path, "00000000")
    with pytest.raises(InceptionWeightsError, match="sha256"):
        InceptionV3FID(saved / "w.pth", verify_sha256=True)


# ----------------------------------------------------------------------------------- parity
def _reference_available() -> str | None:
    for pkg in ("pytorch_fid", "torch_fidelity"):
        if importlib.util.find_spec(pkg) is not None:
            return pkg
    return None


@pytest.mark.skipif(not (os.environ.get(WEIGHTS_ENV) and os.path.isfile(os.environ[WEIGHTS_ENV])
                         and _reference_available()),
                    reason=f"needs ${WEIGHTS_ENV} naming the weights file and pytorch_fid or torch_fidelity")
def test_parity_with_the_reference_implementation(monkeypatch):
    path = os.environ[WEIGHTS_ENV]
    ours = InceptionV3FID(path)
    g = torch.Generator().manual_seed(0)
    if _reference_available() == "pytorch_fid":
        import pytorch_fid.inception as ref_mod

        # pytorch-fid downloads its weights; hand it the same file instead
        monkeypatch.setattr(ref_mod, "load_state_dict_from_url",
                            lambda *a, **k: torch.load(path, map_location="cpu", weights_only=True))
        ref = ref_mod.InceptionV3([3]).eval()
        x = torch.rand(2, 3, 64, 64, generator=g)  # the same bilinear resize on both sides
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x)[0].flatten(1), rtol=1e-4, atol=1e-4)
    else:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        ref = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                          feature_extractor_weights_path=path)
        # 299 px uint8 u: torch-fidelity's TF-style resize is the identity and its (u - 128) / 128
        # equals our 2x - 1 at x = u / 256
        u = torch.randint(0, 256, (2, 3, 299, 299), generator=g, dtype=torch.uint8)
        with torch.no_grad():
            ref_pool, ref_logits = ref(u)
            pool, logits = ours.features_and_logits(u.float() / 256)
        torch.testing.assert_close(pool, ref_pool, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
