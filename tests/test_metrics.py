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
    read_fid_stats,
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
# ----------------------------------------------------------------------------------- FID statistics files
def _features_with(mean, variances):
    """8 feature rows whose sample mean is `mean` and whose unbiased covariance is diag(`variances`)
    exactly: orthogonal +-1 columns of a Hadamard matrix (each sums to 0), scaled."""
    h = scipy.linalg.hadamard(8)[:, 1:1 + len(mean)].astype(np.float64)   # column norms^2 = 8
    return h * np.sqrt(np.asarray(variances) * 7 / 8) + np.asarray(mean)


def test_fd_against_a_statistics_file_is_the_closed_form(tmp_path):
    from tokgen.eval.compare import distribution_metrics

    m1, v1 = np.array([1.0, -2.0, 0.5]), np.array([4.0, 1.0, 0.25])
    m2, v2 = np.array([0.0, 1.0, 0.5]), np.array([1.0, 9.0, 0.25])
    fake = _features_with(m1, v1)
    mu, sigma = gaussian_stats(fake)
    assert np.allclose(mu, m1) and np.allclose(sigma, np.diag(v1))
    path = tmp_path / "stats.npz"           # as pytorch-fid --save-stats writes them
    np.savez(path, mu=m2, sigma=np.diag(v2))
    mu2, sigma2, acts = read_fid_stats(path, dim=3)
    assert acts is None and np.array_equal(mu2, m2) and np.array_equal(sigma2, np.diag(v2))
    # diagonal covariances: ||m1 - m2||^2 + sum (sqrt v1 - sqrt v2)^2
    want = ((m1 - m2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    got = distribution_metrics(fake, None, real_stats=(mu2, sigma2))
    assert got["fd"] == pytest.approx(want, rel=1e-9) and got["kid"] is got["precision"] is None
    # ADM's reference batches: extra statistics and the images in arr_0 (not read); (N, D) activations are
    np.savez(path, mu=m2, sigma=np.diag(v2), mu_s=m2[:2], sigma_s=np.eye(2), arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    assert read_fid_stats(path, dim=3)[2] is None
    real = _features_with(m2, v2)
    np.savez(path, mu=m2, sigma=np.diag(v2), arr_0=real)
    mu2, sigma2, acts = read_fid_stats(path)
    assert np.array_equal(acts, real)
    both = distribution_metrics(fake, acts, real_stats=(mu2, sigma2), kid_subset=8)
    assert both["fd"] == pytest.approx(want, rel=1e-9) and both["kid"] is not None and both["recall"] is not None


def test_bad_statistics_files_name_the_file_and_the_keys(tmp_path):
    from tokgen.eval.compare import distribution_metrics

    path = tmp_path / "stats.npz"
    with pytest.raises(FileNotFoundError, match="no FID statistics file .*stats.npz"):
        read_fid_stats(path)
    np.savez(path, mean=np.zeros(3), cov=np.eye(3))
    with pytest.raises(ValueError, match=r"stats.npz holds the arrays \['cov', 'mean'\], but FID statistics need "
                                         r"'mu' \(D,\) and 'sigma' \(D, D\)"):
        read_fid_stats(path)
    np.savez(path, mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(ValueError, match=r"stats.npz: 'mu' has shape \(3,\) and 'sigma' \(4, 4\)"):
        read_fid_stats(path)
    np.savez(path, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match="holds 3-d statistics, but the feature extractor gives 2048-d"):
        read_fid_stats(path, dim=2048)
    np.savez(path, mu=np.full(3, np.nan), sigma=np.eye(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        read_fid_stats(path)
    path.write_text("mu,sigma")
    with pytest.raises(ValueError, match="stats.npz is not an .npz file"):
        read_fid_stats(path)
    with pytest.raises(ValueError, match="features are 2-d but the real statistics are 3-d"):
        distribution_metrics(np.eye(4)[:, :2], None, real_stats=(np.zeros(3), np.eye(3)))


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
