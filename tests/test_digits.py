"""Digits dataset (sklearn's 8x8 digits, upscaled) and the digits judge."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tokgen.eval.judges.digits import DigitsJudge, DigitsJudgeConfig, train_digits_classifier
from tokgen.data.digits import SPLITS, DigitsDataset, load_digit_arrays


@pytest.mark.parametrize("size", [8, 16, 32])
def test_items_shape_dtype_range_and_caption(size):
    ds = DigitsDataset("val", image_size=size)
    item = ds[3]
    assert set(item) == {"image", "label", "caption"}
    assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
    assert ds.images.min() >= 0 and ds.images.max() <= 1
    assert torch.equal(item["image"][0], item["image"][1]) and torch.equal(item["image"][0], item["image"][2])
    assert isinstance(item["label"], int) and item["caption"] == f"the digit {item['label']}"


def test_splits_partition_the_source_disjointly_and_stratified():
    sets = {s: set(DigitsDataset(s, image_size=8).source_indices.tolist()) for s in SPLITS}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert set.union(*sets.values()) == set(range(1797))
    assert [len(sets[s]) for s in SPLITS] == [1259, 269, 269]  # 70/15/15, rounded per class
    _, labels = load_digit_arrays()
    per_class = np.bincount(labels, minlength=10)
    for s, frac in zip(SPLITS, (0.70, 0.15, 0.15)):
        counts = np.bincount(labels[sorted(sets[s])], minlength=10)
        assert np.abs(counts - frac * per_class).max() <= 1  # stratified: each class in proportion


def test_split_is_deterministic_and_seeded():
    a, b = DigitsDataset("test", 16, seed=0), DigitsDataset("test", 16, seed=0)
    assert np.array_equal(a.source_indices, b.source_indices) and torch.equal(a.images, b.images)
    assert not np.array_equal(a.source_indices, DigitsDataset("test", 16, seed=1).source_indices)


def test_labels_and_pixels_match_sklearn():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds8, ds32 = DigitsDataset("train", 8), DigitsDataset("train", 32)
    assert torch.equal(ds8.labels, torch.from_numpy(bunch.target[ds8.source_indices]))
    src = torch.from_numpy(bunch.images[ds8.source_indices] / 16.0).float()
    assert torch.allclose(ds8.images[:, 0], src)
    # the 32 px version area-averages back to a slightly blurred source (bicubic, clipped)
    back = F.adaptive_avg_pool2d(ds32.images[:, :1], 8)[:, 0]
    assert (back - src).abs().mean() < 0.06
    corr = torch.corrcoef(torch.stack([back.flatten(), src.flatten()]))[0, 1]
    assert corr > 0.97


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        DigitsDataset("train", image_size=64)
    with pytest.raises(ValueError, match="split"):
        DigitsDataset("validation")


# ---- judge ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def judges():
    return {s: DigitsJudge(image_size=s) for s in (16, 32)}  # one cached training for both


@pytest.mark.parametrize("size", [16, 32])
def test_judge_test_accuracy(judges, size):
    test = DigitsDataset("test", image_size=size)
    acc = judges[size].score(test.images, test.labels)["accuracy"]
    assert acc >= 0.95, acc
    pred = judges[size].predict(test.images[:10])
    assert pred.dtype == torch.long and pred.shape == (10,)


def test_judge_is_fooled_by_wrong_labels(judges):
    test = DigitsDataset("test", image_size=32)
    assert judges[32].score(test.images, (test.labels + 1) % 10)["accuracy"] < 0.1


def test_judge_features_deterministic(judges):
    x = DigitsDataset("val", image_size=32).images[:64]
    f1, f2 = judges[32].features(x), judges[32].features(x.clone())
    assert f1.shape == (64, judges[32].feature_dim) and f1.dtype == torch.float32
    assert torch.equal(f1, f2)
    assert torch.allclose(f1[:5], judges[32].features(x[:5]), atol=1e-5)  # per image, whatever the batch
    assert f1.std(dim=0).min() > 0  # no dead feature dimensions


def test_training_is_deterministic_and_leaves_global_rng_alone():
    cfg = DigitsJudgeConfig(steps=5, batch_size=16)
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    a, b = train_digits_classifier(cfg), train_digits_classifier(cfg)
    assert torch.equal(state, torch.random.get_rng_state()) and torch.get_num_threads() == threads
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_judge_rejects_bad_input(judges):
    j = judges[32]
    good = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="repeat"):
        j.features(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        j.features(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="clamp"):
        j.predict(good * 2)
    with pytest.raises(ValueError, match="dtype"):
        j.predict((good * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="labels"):
        j.score(good, [1, 2, 3])
    with pytest.raises(ValueError, match="0..9"):
        j.score(good, [1, 10])
    with pytest.raises(ValueError, match="torch.Tensor"):
        j.features(good.numpy())
    with pytest.raises(ValueError, match="image_size"):
        DigitsJudge(image_size=28)
