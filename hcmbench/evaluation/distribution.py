"""Distribution-level distances between two sets of feature vectors (float64, NumPy).

Feature sets are arrays or tensors (n, d), one row per image, in the space of `features.py`. None
of these figures compares an image with its nearest neighbour; they compare the two *sets*:

- FID, Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
  Equilibrium", NeurIPS 2017: the Fréchet distance between Gaussians fitted to the two sets.
- KID, Bińkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018: the unbiased
  squared MMD with a cubic polynomial kernel; unbiased, so small sets do not inflate it.
- Precision, recall, density and coverage, Naeem, Oh, Uh, Choi & Yoo, "Reliable Fidelity and
  Diversity Metrics for Generative Models", ICML 2020 (precision and recall after Kynkäänniemi et
  al., NeurIPS 2019): k-nearest-neighbour balls around samples tell fidelity (generated images lie
  where real ones do) apart from diversity (generated images cover where real ones lie).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hcmbench.errors import HcmbenchError

# Pairwise distances are computed in blocks of at most this many entries (8 bytes each: 32 MiB).
_BLOCK_ENTRIES = 1 << 22


def _as_features(x: Any, name: str, min_rows: int = 1) -> np.ndarray:
    """A 2-D float64 array of finite values with at least `min_rows` rows (tensors accepted)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise HcmbenchError(f"{name} must be a (samples, features) array, got shape {x.shape}")
    if len(x) < min_rows:
        raise HcmbenchError(f"{name} needs at least {min_rows} samples, got {len(x)}")
    if not np.isfinite(x).all():
        raise HcmbenchError(f"{name} contains NaN or infinite values")
    return x


def _pair(a: Any, b: Any, names: tuple[str, str], min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_features(a, names[0], min_rows), _as_features(b, names[1], min_rows)
    if a.shape[1] != b.shape[1]:
        raise HcmbenchError(f"{names[0]} and {names[1]} have different feature sizes ({a.shape[1]} and {b.shape[1]})")
    return a, b


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues → 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """FID (Heusel et al. 2017): ‖μa − μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½) of the two sets' Gaussians.

    Σ are the unbiased sample covariances. Tr((ΣaΣb)^½) is taken as the sum of the square roots of the
    eigenvalues of √Σa·Σb·√Σa, which has the same eigenvalues as ΣaΣb but is symmetric, so it needs no
    complex arithmetic and stays stable for singular Σ (fewer samples than features). Each set needs
    at least 2 samples; the figure is biased upwards for small sets, so compare FIDs at equal set sizes.
    """
    a, b = _pair(feats_a, feats_b, ("feats_a", "feats_b"), 2)
    mean_term = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
    cov_a, cov_b = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    cov_a, cov_b = np.atleast_2d(cov_a), np.atleast_2d(cov_b)
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    return max(0.0, mean_term + float(np.trace(cov_a) + np.trace(cov_b)) - 2.0 * trace_root)


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    k = x @ y.T
    k /= x.shape[1]
    k += 1.0
    return k * k * k  # a float power (`** 3`) took most of KID's time


def kernel_distance(feats_a: Any, feats_b: Any, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): the unbiased MMD² with k(x, y) = (x·y / d + 1)³, as (mean, std).

    Computed on `subsets` pairs of random subsets (drawn without replacement, independently from each
    set, seeded) of `subset_size` samples, capped at the smaller set's size; mean and standard deviation
    over the subsets. Being unbiased, it is about 0 for two samples of one distribution and may be
    slightly negative.
    """
    a, b = _pair(feats_a, feats_b, ("feats_a", "feats_b"), 2)
    if subsets < 1 or subset_size < 2:
        raise HcmbenchError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    estimates = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates[i] = within - 2.0 * k_xy.mean()
    return float(estimates.mean()), float(estimates.std())


def _distance_blocks(x: np.ndarray, y: np.ndarray):
    """Yield (start, D) with D the Euclidean distances of rows x[start:start+B] to every row of y."""
    y_sq = np.einsum("ij,ij->i", y, y)
    block = max(1, _BLOCK_ENTRIES // max(1, len(y)))
    for start in range(0, len(x), block):
        chunk = x[start:start + block]
        sq = np.einsum("ij,ij->i", chunk, chunk)[:, None] + y_sq[None, :] - 2.0 * chunk @ y.T
        yield start, np.sqrt(np.clip(sq, 0.0, None))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest neighbour in x, itself excluded."""
    radii = np.empty(len(x))
    for start, d in _distance_blocks(x, x):
        # Column k of the sorted distances: column 0 is the point itself (distance 0).
        radii[start:start + len(d)] = np.partition(d, k, axis=1)[:, k]
    return radii


def prdc(real_feats: Any, fake_feats: Any, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) of generated against real features.

    Around each sample a ball reaches to its k-th nearest neighbour in its own set (itself excluded).
    precision: share of generated samples inside some real ball (fidelity);
    recall: share of real samples inside some generated ball (diversity);
    density: generated samples' mean count of real balls containing them, / k (≈ 1 when the sets
    match; above 1 where generated samples crowd the dense real regions);
    coverage: share of real samples whose ball holds at least one generated sample (robust to outliers).
    k must be at least 1 and smaller than both set sizes. Distances are computed in blocks, so memory
    stays bounded for large sets.
    """
    real, fake = _pair(real_feats, fake_feats, ("real_feats", "fake_feats"), 1)
    if not 1 <= k < min(len(real), len(fake)):
        raise HcmbenchError(f"k = {k} needs 1 <= k < number of samples, but there are {len(real)} real and "
                            f"{len(fake)} generated")
    real_radii = _knn_radii(real, k)
    fake_radii = _knn_radii(fake, k)
    in_real_ball = np.zeros(len(fake), dtype=bool)
    real_ball_counts = np.zeros(len(fake))
    real_recalled = np.zeros(len(real), dtype=bool)
    nearest_fake = np.full(len(real), np.inf)
    for start, d in _distance_blocks(real, fake):  # d[i, j]: real start+i to fake j
        rows = slice(start, start + len(d))
        inside = d < real_radii[rows, None]
        in_real_ball |= inside.any(axis=0)
        real_ball_counts += inside.sum(axis=0)
        real_recalled[rows] = (d < fake_radii[None, :]).any(axis=1)
        nearest_fake[rows] = d.min(axis=1)
    return dict(
        precision=float(in_real_ball.mean()),
        recall=float(real_recalled.mean()),
        density=float(real_ball_counts.mean() / k),
        coverage=float((nearest_fake < real_radii).mean()),
    )
