import numpy as np
import pytest
import torch

from tokgen.eval.reconstruction import codebook_stats, psnr, ssim


def test_psnr_closed_form():
    x = torch.zeros(2, 3, 8, 8)
    y = x + 0.1  # MSE 0.01 -> 20 dB
    assert torch.allclose(psnr(x, y), torch.full((2,), 20.0), atol=1e-4)
    assert torch.isinf(psnr(x, x)).all()


def test_ssim_identity_and_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-5)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s = ssim(x, noisy)
    assert (s < 0.95).all() and (s > -1).all()


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    x = rng.random((32, 32, 3))
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    ref = metrics.structural_similarity(x, y, channel_axis=2, data_range=1.0, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=True)
    ours = ssim(torch.tensor(x).permute(2, 0, 1)[None].float(), torch.tensor(y).permute(2, 0, 1)[None].float())
    # scikit-image crops (win-1)/2 px at each border for the mean; our valid conv does the same
    assert ours.item() == pytest.approx(ref, abs=2e-3)


def test_codebook_stats():
    uniform = torch.arange(16).repeat(4)
    stats = codebook_stats(uniform, 32)
    assert stats["usage"] == 0.5 and stats["perplexity"] == pytest.approx(16.0)
    one = codebook_stats(torch.zeros(10, dtype=torch.long), 8)
    assert one["perplexity"] == pytest.approx(1.0) and one["usage"] == 1 / 8
    with pytest.raises(ValueError, match="token ids"):
        codebook_stats(torch.tensor([0, 8]), 8)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
