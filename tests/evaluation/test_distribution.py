"""Tests of the distribution-level distances (hcmbench.evaluation.distribution) on hand-built features."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from hcmbench.errors import HcmbenchError
from hcmbench.evaluation import distribution
from hcmbench.evaluation.distribution import frechet_distance, kernel_distance, prdc


def gaussian(n: int, d: int, seed: int, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, std, size=(n, d))


# -- FID ---------------------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero():
    a = gaussian(200, 16, seed=0) @ gaussian(16, 16, seed=1)  # correlated features
    assert abs(frechet_distance(a, a)) < 1e-6
    assert abs(frechet_distance(torch.from_numpy(a), a)) < 1e-6  # tensors are accepted


def test_fid_grows_with_added_noise():
    a = gaussian(500, 16, seed=0)
    noise = gaussian(500, 16, seed=1)
    fids = [frechet_distance(a, a + std * noise) for std in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert fids[0] < 1e-6
    assert all(lo < hi for lo, hi in zip(fids, fids[1:])), fids


def test_fid_matches_the_closed_form_for_diagonal_gaussians():
    # N(μa, diag σa²) vs N(μb, diag σb²): ‖μa − μb‖² + Σ (σa − σb)²
    mu_a, mu_b = np.array([0.0, 1.0, -1.0, 2.0]), np.array([1.0, 1.0, 0.5, 0.0])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 1.0, 0.5, 3.0])
    rng = np.random.default_rng(0)
    a = mu_a + sd_a * rng.standard_normal((40_000, 4))
    b = mu_b + sd_b * rng.standard_normal((40_000, 4))
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((sd_a - sd_b) ** 2)  # 9.25 + 6 = 15.25
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)


def test_fid_matches_scipy_sqrtm_for_full_covariances():
    a = gaussian(300, 6, seed=0) @ gaussian(6, 6, seed=1)
    b = gaussian(300, 6, seed=2) @ gaussian(6, 6, seed=3) + 0.5
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = (np.sum((a.mean(0) - b.mean(0)) ** 2)
                + np.trace(cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_fid_is_finite_when_there_are_fewer_samples_than_features():
    a, b = gaussian(10, 64, seed=0), gaussian(10, 64, seed=1)  # singular covariances
    fid = frechet_distance(a, b)
    assert np.isfinite(fid) and fid > 0
    assert frechet_distance(a, a) < 1e-6


def test_fid_needs_two_samples_and_matching_sizes():
    with pytest.raises(HcmbenchError, match="at least 2"):
        frechet_distance(gaussian(1, 4, 0), gaussian(5, 4, 1))
    with pytest.raises(HcmbenchError, match="different feature sizes"):
        frechet_distance(gaussian(5, 4, 0), gaussian(5, 3, 1))
    with pytest.raises(HcmbenchError, match="NaN"):
        frechet_distance(np.full((5, 4), np.nan), gaussian(5, 4, 1))


# -- KID ---------------------------------------------------------------------------------------------


def test_kid_is_about_zero_for_the_same_distribution_and_larger_when_shifted():
    a, b = gaussian(400, 8, seed=0), gaussian(400, 8, seed=1)
    shifted = gaussian(400, 8, seed=2, mean=0.5)
    self_kid, _ = kernel_distance(a, a, subsets=20, subset_size=200)
    same_kid, _ = kernel_distance(a, b, subsets=20, subset_size=200)
    shift_kid, shift_std = kernel_distance(a, shifted, subsets=20, subset_size=200)
    # unbiased: about 0, possibly slightly negative (against itself, independently drawn subsets
    # share samples, which pulls the estimate a little below 0)
    assert abs(self_kid) < 0.1 * shift_kid
    assert abs(same_kid) < 0.1 * shift_kid
    assert shift_kid > 0.5 and shift_std > 0


def test_kid_matches_a_direct_unbiased_mmd_when_the_subset_is_the_whole_set():
    a, b = gaussian(30, 5, seed=0), gaussian(40, 5, seed=1, mean=0.3)
    kid, std = kernel_distance(a, b[:30], subsets=3, subset_size=1000)  # capped at 30: every subset is all
    k = lambda x, y: (x @ y.T / 5 + 1) ** 3  # noqa: E731
    m = 30
    expected = ((k(a, a).sum() - np.trace(k(a, a))) / (m * (m - 1))
                + (k(b[:30], b[:30]).sum() - np.trace(k(b[:30], b[:30]))) / (m * (m - 1))
                - 2 * k(a, b[:30]).mean())
    assert kid == pytest.approx(expected, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_seeded():
    a, b = gaussian(300, 8, seed=0), gaussian(300, 8, seed=1, mean=0.2)
    kid = lambda seed: kernel_distance(a, b, subsets=5, subset_size=50, seed=seed)  # noqa: E731
    assert kid(3) == kid(3)
    assert kid(3) != kid(4)


# -- precision / recall / density / coverage ---------------------------------------------------------


def test_prdc_of_identical_sets():
    real = gaussian(300, 8, seed=0)
    result = prdc(real, real.copy(), k=5)
    assert result["precision"] == 1.0 and result["recall"] == 1.0 and result["coverage"] == 1.0
    assert result["density"] == pytest.approx(1.0, abs=0.02)


def test_prdc_of_a_far_away_fake_set():
    real = gaussian(200, 8, seed=0)
    fake = gaussian(200, 8, seed=1, mean=50.0)
    result = prdc(real, fake, k=5)
    assert result == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_detects_mode_collapse():
    real = gaussian(400, 4, seed=0)
    collapsed = gaussian(400, 4, seed=1, std=0.1)  # all generated samples in one tight clump at the centre
    result = prdc(real, collapsed, k=5)
    assert result["precision"] > 0.9  # every generated sample looks real...
    assert result["recall"] < 0.2  # ...but most real samples are never generated
    assert result["coverage"] < 0.3
    spread = prdc(real, gaussian(400, 4, seed=2), k=5)
    assert spread["recall"] > 0.5 and spread["coverage"] > 0.8


def test_prdc_same_result_with_small_distance_blocks(monkeypatch):
    real, fake = gaussian(120, 6, seed=0), gaussian(90, 6, seed=1, mean=0.3)
    whole = prdc(real, fake, k=3)
    monkeypatch.setattr(distribution, "_BLOCK_ENTRIES", 500)  # blocks of ~4 rows
    assert prdc(real, fake, k=3) == whole


def test_prdc_radii_exclude_the_point_itself():
    # on a line 0, 1, 3, 6: the 1st neighbour of 0 is at 1, of 6 is at 3 (not itself at 0)
    radii = distribution._knn_radii(np.array([[0.0], [1.0], [3.0], [6.0]]), k=1)
    np.testing.assert_allclose(radii, [1.0, 1.0, 2.0, 3.0])


@pytest.mark.parametrize("k", [0, 5, 10])
def test_prdc_rejects_bad_k(k):
    with pytest.raises(HcmbenchError, match="k = "):
        prdc(gaussian(5, 3, seed=0), gaussian(20, 3, seed=1), k=k)
