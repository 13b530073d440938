"""Sample-quality metrics on feature arrays: Frechet distance, KID, precision/recall, Inception Score.

Every function takes numpy arrays or torch tensors of shape (N, D) (features of N images, from any
extractor in `eval.features`) and returns python floats.  The references:

- Frechet distance: Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a
  Local Nash Equilibrium" (NeurIPS 2017); numerics as pytorch-fid's `calculate_frechet_distance`.
- Kernel distance: Binkowski et al., "Demystifying MMD GANs" (ICLR 2018).
- Precision / recall: Kynkaanniemi et al., "Improved Precision and Recall Metric for Assessing
  Generative Models" (NeurIPS 2019).
- Inception Score: Salimans et al., "Improved Techniques for Training GANs" (NeurIPS 2016).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.special
import torch


def _as_float64(x, name: str, min_rows: int = 2) -> np.ndarray:
    """(N, D) float64 numpy copy of `x`, checked: 2-D, at least `min_rows` rows, all finite."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of features (N, D), got shape {x.shape}: "
                         f"flatten per-image features with x.reshape(len(x), -1)")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} has {x.shape[0]} samples; this metric needs at least {min_rows}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf: check the model or extractor that produced it")
    return x


def _check_same_dim(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names} have different feature dimensions ({a.shape[1]} vs {b.shape[1]}): "
                         f"extract both with the same feature extractor")


# ----------------------------------------------------------------------------------- Frechet
def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64 (N >= 2)."""
    x = _as_float64(feats, "feats")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017):

        ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    As pytorch-fid: when the matrix square root of the (possibly near-singular) product is not
    finite, `eps` is added to both diagonals and it is taken again; an imaginary part that
    numerical error leaves on its diagonal is dropped when below 1e-3, an error otherwise.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"expected means (D,) and covariances (D, D) of one D, got {mu1.shape}, "
                         f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise ValueError("Gaussian statistics contain NaN or inf")

    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"Frechet distance: the covariance product is singular; adding {eps} to the "
                      f"diagonals (use more samples than feature dimensions to avoid this)", stacklevel=2)
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3:
            raise ValueError(f"Frechet distance: the matrix square root has an imaginary part of "
                             f"{imag:.3g} on its diagonal; the covariances are not valid (PSD)")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Frechet distance (FID on Inception features; Heusel et al. 2017) between two feature sets
    (N, D) and (M, D), each summarised by its mean and covariance; see
    `frechet_distance_from_stats`.  Use well over D samples per set, or the estimate is biased
    upward and the covariances are singular."""
    a, b = _as_float64(feats_a, "feats_a"), _as_float64(feats_b, "feats_b")
    _check_same_dim(a, b, "feats_a and feats_b")
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b), eps=eps)


def read_fid_stats(path, dim: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The real set's Gaussian statistics from an .npz file, read offline: (mu (D,), sigma (D, D),
    activations (N, D) or None), float64.  The formats of pytorch-fid (`--save-stats`: mu, sigma)
    and of ADM's reference batches (guided-diffusion's evaluator, e.g.
    VIRTUAL_imagenet256_labeled.npz: mu, sigma, mu_s, sigma_s, and arr_0 holding the reference
    *images*).  An arr_0 of shape (N, D) is taken as the real activations (for KID, precision and
    recall); images in arr_0 are not used.  `dim`: the feature dimension the statistics must have
    (2048 for Inception pool3).  Raises FileNotFoundError / ValueError naming the file, the keys
    found and the keys wanted."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no FID statistics file {path}: give an .npz with arrays mu (D,) and sigma (D, D), "
                                "as pytorch-fid --save-stats or ADM's reference batches write")
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz file (a zip of .npy arrays): give the statistics as an .npz with "
                         "arrays mu (D,) and sigma (D, D), e.g. np.savez(path, mu=mu, sigma=sigma)")
    try:
        with np.load(path, allow_pickle=False) as f:
            found = sorted(f.files)
            if "mu" not in found or "sigma" not in found:
                raise ValueError(f"{path} holds the arrays {found}, but FID statistics need 'mu' (D,) and 'sigma' "
                                 "(D, D) (the keys pytorch-fid and ADM's evaluator write)")
            mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
            # arr_0 is read only when it holds (N, D) activations, not ADM's (N, H, W, 3) images (GBs)
            acts = f["arr_0"] if "arr_0" in found and len(_npz_shape(f, "arr_0")) == 2 else None
    except (OSError, EOFError) as e:   # not a zip / npy
        raise ValueError(f"{path} is not a numpy .npz file ({e}): give the statistics as an .npz with arrays "
                         "mu (D,) and sigma (D, D)") from None
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path} could not be read as an .npz of arrays ({e}): give the statistics as an .npz "
                         "with arrays mu (D,) and sigma (D, D)") from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: 'mu' has shape {mu.shape} and 'sigma' {sigma.shape}; wanted mu (D,) and sigma "
                         "(D, D) of one D (keys found: " + ", ".join(found) + ")")
    if dim is not None and len(mu) != dim:
        raise ValueError(f"{path} holds {len(mu)}-d statistics, but the feature extractor gives {dim}-d features "
                         f"(Inception pool3: 2048): use statistics of the same feature space")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{path}: 'mu' or 'sigma' contains NaN or inf")
    acts = acts.astype(np.float64) if acts is not None and acts.shape[1] == len(mu) else None
    return mu, sigma, acts


def _npz_shape(npz, key: str) -> tuple[int, ...]:
    """The shape of one array of an open .npz, from its header (the data is not read)."""
    with npz.zip.open(f"{key}.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        return read(f)[0]


# ----------------------------------------------------------------------------------- KID
def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two (m, D) samples under k(x, y) = (x.y / D + 1)^3."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    # within-sample terms leave out the diagonal (k(x_i, x_i)); the cross term keeps it: x_i and y_i
    # are independent draws, so it is unbiased (Binkowski et al.'s and torch-fidelity's estimator)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kernel_inception_distance(feats_a, feats_b, subset_size: int = 1000, subsets: int = 100,
                              seed: int = 0) -> tuple[float, float]:
    """Kernel (Inception) distance (Binkowski et al. 2018): the unbiased MMD^2 under the cubic
    polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over `subsets` random subsets of
    `subset_size` samples of each set (drawn without replacement; capped at the smaller set).

    Returns (mean, std) over the subsets.  Unbiased, so about 0 (slightly negative possible) for
    two samples of one distribution.  Deterministic for a seed; the subsets are drawn as
    torch-fidelity draws them (`np.random.RandomState(seed).choice`).
    """
    a, b = _as_float64(feats_a, "feats_a"), _as_float64(feats_b, "feats_b")
    _check_same_dim(a, b, "feats_a and feats_b")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    m = min(subset_size, len(a), len(b))
    rng = np.random.RandomState(seed)
    mmds = [_polynomial_mmd2(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(mmds)), float(np.std(mmds))


# ----------------------------------------------------------------------------------- precision / recall
def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n, m) squared Euclidean distances; float64 keeps |x|^2 + |y|^2 - 2 x.y accurate near 0."""
    return ((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T).clamp_min_(0)


def _knn_radii(x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """(N,) squared distance from each row of x to its k-th nearest other row."""
    # k + 1: every row is its own nearest neighbour at distance 0
    return torch.cat([_sq_dists(xb, x).kthvalue(k + 1, dim=1).values for xb in x.split(batch_size)])


def _covered(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, batch_size: int) -> float:
    """Share of query rows inside at least one ball (ref_i, radius_i)."""
    hits = [(_sq_dists(qb, ref) <= radii[None, :]).any(dim=1) for qb in query.split(batch_size)]
    return torch.cat(hits).double().mean().item()


def precision_recall(real, fake, k: int = 3, batch_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of `fake` against `real` features.

    Each set's manifold is the union of balls around its samples, of radius the distance to the
    sample's k-th nearest neighbour in its own set.  Precision: share of fake samples inside the
    real manifold; recall: share of real samples inside the fake manifold.  Distances are taken
    `batch_size` rows at a time (memory O(batch_size * N)), in float64, on the device of `real`
    when it is a tensor.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = real.device if isinstance(real, torch.Tensor) else torch.device("cpu")
    r = torch.from_numpy(_as_float64(real, "real", min_rows=k + 1)).to(device)
    f = torch.from_numpy(_as_float64(fake, "fake", min_rows=k + 1)).to(device)
    _check_same_dim(r, f, "real and fake")
    precision = _covered(f, r, _knn_radii(r, k, batch_size), batch_size)
    recall = _covered(r, f, _knn_radii(f, k, batch_size), batch_size)
    return precision, recall


# ----------------------------------------------------------------------------------- Inception Score
def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016) from (N, C) classifier logits (softmax inside):
    exp(E_x KL(p(y|x) || p(y))), computed on `splits` consecutive chunks as the original code does.

    Returns (mean, std) over the chunks.  1 when every prediction is the same; C when predictions
    are confident and the classes balanced in every chunk.  For Inception-v3 the original code
    uses the logits without the fc bias (`InceptionV3FID.features_and_logits`).
    """
    x = _as_float64(logits, "logits", min_rows=1)
    n = len(x)
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be between 1 and the number of samples ({n}), got {splits}")
    log_p = x - scipy.special.logsumexp(x, axis=1, keepdims=True)  # (N, C) log softmax
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        q = p[lo:hi].mean(axis=0)  # (C,) the chunk's marginal class distribution
        # xlogy: a class no image in the chunk predicts (q = p = 0 after underflow) adds 0, not nan
        kl = ((p[lo:hi] * log_p[lo:hi]).sum(axis=1) - scipy.special.xlogy(p[lo:hi], q).sum(axis=1)).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
