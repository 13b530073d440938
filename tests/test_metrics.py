"""Distribution metrics (eval/metrics.py): closed forms, invariants and bad input; and the judges'
feature spaces through extract_features (eval/features.py)."""
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.utils.data import DataLoader

from tokgen.eval.features import FeatureExtractor, JudgeFeatures, extract_features, feature_extractor
from tokgen.eval.metrics import (
    _polynomial_mmd2,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)


def _gauss(n, d, seed, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(size=(n, d)) * scale + shift


# ----------------------------------------------------------------------------------- Frechet
def test_fd_of_a_set_with_itself_is_zero():
    x = _gauss(500, 16, 0)
    assert abs(frechet_distance(x, x)) < 1e-8
    assert frechet_distance(torch.from_numpy(x).float(), x.astype(np.float32)) == pytest.approx(0, abs=1e-6)


def test_fd_with_fewer_samples_than_dims_stays_finite():
    x = _gauss(30, 64, 1)  # singular covariances
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert abs(frechet_distance(x, x)) < 1e-4


def test_fd_from_stats_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    s1, s2 = rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)
    closed = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance_from_stats(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(closed, rel=1e-10)


def test_fd_from_stats_with_equal_full_covariances_is_the_mean_distance():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    fd = frechet_distance_from_stats(mu1, sigma, mu2, sigma)
    assert fd == pytest.approx(((mu1 - mu2) ** 2).sum(), abs=1e-8)


def test_sample_fd_approaches_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -1.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([0.5, 1.0, 0.5, 3.0])
    closed = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    rng = np.random.default_rng(4)
    a = mu1 + rng.normal(size=(20000, 4)) * np.sqrt(s1)
    b = mu2 + rng.normal(size=(20000, 4)) * np.sqrt(s2)
    assert frechet_distance(a, b) == pytest.approx(closed, rel=0.03)
    mu, sigma = gaussian_stats(a)
    np.testing.assert_allclose(mu, mu1, atol=0.05)
    np.testing.assert_allclose(np.diag(sigma), s1, rtol=0.05)


def test_fd_retries_with_an_offset_when_the_square_root_is_not_finite(monkeypatch):
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def flaky(a):  # the first product "fails", as a singular one can
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky)
    s = np.diag([1.0, 2.0])
    with pytest.warns(UserWarning, match="singular"):
        fd = frechet_distance_from_stats(np.zeros(2), s, np.ones(2), s, eps=1e-6)
    assert len(calls) == 2 and np.allclose(calls[1], (s + 1e-6 * np.eye(2)) @ (s + 1e-6 * np.eye(2)))
    assert fd == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize("imag, ok", [(1e-6, True), (0.1, False)])
def test_fd_drops_a_tiny_imaginary_part_and_rejects_a_large_one(monkeypatch, imag, ok):
    real_sqrtm = scipy.linalg.sqrtm
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a: real_sqrtm(a) + 1j * imag * np.eye(len(a)))
    s = np.diag([1.0, 4.0])
    if ok:
        assert frechet_distance_from_stats(np.zeros(2), s, np.zeros(2), s) == pytest.approx(0, abs=1e-9)
    else:
        with pytest.raises(ValueError, match="imaginary"):
            frechet_distance_from_stats(np.zeros(2), s, np.zeros(2), s)


@pytest.mark.parametrize("a, b, match", [
    (np.zeros((10, 3)), np.zeros((10, 4)), "different feature dimensions"),
    (np.zeros((1, 3)), np.zeros((10, 3)), "at least 2"),
    (np.full((10, 3), np.nan), np.zeros((10, 3)), "NaN"),
    (np.zeros(10), np.zeros((10, 3)), "2-D"),
])
def test_fd_rejects_bad_features(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)


def test_fd_from_stats_rejects_mismatched_stats():
    with pytest.raises(ValueError, match="one D"):
        frechet_distance_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance_from_stats(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))


# ----------------------------------------------------------------------------------- KID
def test_mmd2_matches_the_unbiased_estimator_written_out():
    x, y = _gauss(7, 3, 5), _gauss(7, 3, 6, shift=0.3)
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert _polynomial_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_is_about_zero_for_one_distribution_and_positive_for_shifted_ones():
    a, b = _gauss(1000, 16, 7), _gauss(1000, 16, 8)
    same_mean, same_std = kernel_inception_distance(a, b, subset_size=200, subsets=30)
    shift_mean, shift_std = kernel_inception_distance(a, b + 0.5, subset_size=200, subsets=30)
    assert abs(same_mean) < 2 * same_std and abs(same_mean) < 0.02 * shift_mean
    assert shift_mean > 10 * shift_std


def test_kid_is_deterministic_and_caps_the_subset_size():
    a, b = _gauss(50, 4, 9), _gauss(40, 4, 10, shift=0.2)
    first = kernel_inception_distance(a, b, subset_size=20, subsets=5, seed=1)
    assert kernel_inception_distance(torch.from_numpy(a), b, subset_size=20, subsets=5, seed=1) == first
    assert kernel_inception_distance(a, b, subset_size=20, subsets=5, seed=2) != first
    # capped at 40: every subset of b is all of b, a's subsets still vary
    mean, std = kernel_inception_distance(a, b, subset_size=1000, subsets=5)
    assert np.isfinite(mean) and std > 0


def test_kid_rejects_bad_input():
    with pytest.raises(ValueError, match="different feature dimensions"):
        kernel_inception_distance(np.zeros((10, 3)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(np.zeros((10, 3)), np.zeros((10, 3)), subset_size=1)


# ----------------------------------------------------------------------------------- precision / recall
def test_precision_and_recall_are_one_for_identical_sets():
    x = _gauss(300, 8, 11)
    assert precision_recall(x, x) == (1.0, 1.0)


def test_recall_drops_when_fake_covers_part_of_real():
    real = _gauss(600, 8, 12)
    fake = real[real[:, 0] > 0.5]  # about 30% of real, one side of it
    precision, recall = precision_recall(real, fake, k=3)
    assert precision == 1.0 and recall < 0.6


def test_mode_collapse_keeps_precision_and_loses_recall():
    real, fake = _gauss(400, 8, 13, scale=3.0), _gauss(400, 8, 14, scale=0.1)
    precision, recall = precision_recall(real, fake)
    assert precision > 0.8 and recall < 0.1


def test_precision_recall_batched_equals_unbatched():
    real, fake = _gauss(200, 5, 15), _gauss(150, 5, 16, shift=0.5)
    full = precision_recall(real, fake, k=5, batch_size=10_000)
    assert precision_recall(torch.from_numpy(real).float(), fake, k=5, batch_size=7) == pytest.approx(full)
    assert 0 < full[0] < 1 and 0 < full[1] < 1


def test_precision_recall_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 4"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 2)), k=0)
    with pytest.raises(ValueError, match="different feature dimensions"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))


# ----------------------------------------------------------------------------------- Inception Score
def test_inception_score_of_uniform_predictions_is_one():
    assert inception_score(np.zeros((100, 10))) == pytest.approx((1.0, 0.0))


def test_inception_score_of_confident_balanced_predictions_is_the_class_count():
    logits = 50.0 * np.eye(10)[np.arange(200) % 10]  # every chunk of 20 holds each class twice
    mean, std = inception_score(torch.from_numpy(logits), splits=10)
    assert mean == pytest.approx(10.0, rel=1e-9) and std == pytest.approx(0, abs=1e-9)
    # extreme logits: p underflows to exact zeros, which must not give nan
    assert inception_score(1e4 * np.eye(10)[np.arange(20) % 10], splits=2)[0] == pytest.approx(10.0)


def test_inception_score_matches_the_definition():
    logits = torch.randn(60, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = logits.softmax(1)
    kl = (p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean()
    assert inception_score(logits, splits=1)[0] == pytest.approx(kl.exp().item(), rel=1e-10)


def test_inception_score_rejects_bad_splits():
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.zeros((5, 3)), splits=10)


# ----------------------------------------------------------------------------------- judge features
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 64 samples, 59 dims: singular
def test_shapes_judge_features_serve_the_metrics():
    from tokgen.data.shapes import ShapesDataset

    extractor = feature_extractor("shapes-judge", image_size=32)
    assert isinstance(extractor, JudgeFeatures) and isinstance(extractor, FeatureExtractor)
    assert (extractor.name, extractor.dim) == ("shapes-judge", 59)
    loader = DataLoader(ShapesDataset("test", length=64), batch_size=24)  # batches of dicts
    real = extract_features(extractor, loader, batch_size=16)
    assert real.shape == (64, 59) and real.dtype == np.float32
    images = torch.stack([ShapesDataset("test", length=64)[i]["image"] for i in range(64)])
    np.testing.assert_array_equal(extract_features(extractor, images, batch_size=64), real)
    noise = extract_features(extractor, torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert abs(frechet_distance(real, real)) < 1e-6 and frechet_distance(real, noise) > 1.0


def test_extract_features_rejects_bad_input():
    extractor = feature_extractor("shapes-judge")
    with pytest.raises(ValueError, match="empty"):
        extract_features(extractor, [])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        extract_features(extractor, torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="unknown feature extractor"):
        feature_extractor("clip")
