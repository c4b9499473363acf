"""SSIM / CC / MSE matrices against scikit-image and numpy; nearest-neighbour matching; diversity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from hcmbench.config import DataConfig
from hcmbench.data.slices import load_slices
from hcmbench.errors import HcmbenchError
from hcmbench.evaluation.metrics import (
    as_images,
    cc_matrix,
    mean_pairwise_ssim,
    mse_matrix,
    nearest_by_ssim,
    ssim,
    ssim_matrix,
)


def skimage_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    return structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=data_range)


def random_images(n: int, size: int | tuple[int, int] = 32, seed: int = 0) -> np.ndarray:
    """Smoothed noise: structured enough that SSIM values spread over a range, not all near 0."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    shape = (size, size) if isinstance(size, int) else size
    x = np.stack([gaussian_filter(rng.random(shape), 1.0) for _ in range(n)])
    x = (x - x.min()) / (x.max() - x.min())
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def phantom_slices(phantom_root) -> np.ndarray:
    return load_slices(phantom_root, DataConfig(groups=("HCM", "NOR"), size=32), cache=False).images


def test_ssim_matrix_equals_scikit_image_on_random_images():
    a, b = random_images(9, seed=1), random_images(7, seed=2)
    expected = np.array([[skimage_ssim(x, y) for y in b] for x in a])
    got = ssim_matrix(a, b).numpy()
    assert got.shape == (9, 7)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert expected.std() > 0.05  # the check covers a spread of values, not one


def test_ssim_matrix_equals_scikit_image_on_phantom_slices(phantom_slices):
    a, b = phantom_slices[:6], phantom_slices[-5:]
    expected = np.array([[skimage_ssim(x, y) for y in b] for x in a])
    np.testing.assert_allclose(ssim_matrix(a, b).numpy(), expected, atol=1e-4)


def test_ssim_data_range_255_inflates_as_in_the_study():
    a, b = random_images(4, seed=3), random_images(4, seed=4)
    expected = np.array([[skimage_ssim(x, y, 255.0) for y in b] for x in a])
    got = ssim_matrix(a, b, data_range=255.0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert got.min() > 0.95 > ssim_matrix(a, b).numpy().max()


@pytest.mark.parametrize("size", [32, 64, (40, 56)])
def test_matrix_pairs_and_nearest_equal_scikit_image_at_several_sizes(size):
    """The band is cut into pieces (two at 32 px, four at 64 px, unequal along the two axes of a
    non-square image); blocks of 3 generated images leave a padded last block."""
    a, b = random_images(5, size, seed=20), random_images(4, size, seed=21)
    expected = np.array([[skimage_ssim(x, y) for y in b] for x in a])
    np.testing.assert_allclose(ssim_matrix(a, b, block_pairs=3).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(ssim(a[:4], b).numpy(), np.diag(expected), atol=1e-5)
    match = nearest_by_ssim(a, b, block_pairs=3)
    assert match.index.tolist() == expected.argmax(1).tolist()
    np.testing.assert_allclose(match.ssim.numpy(), expected.max(1), atol=1e-5)


def test_worker_threads_give_the_one_thread_results_and_restore_the_thread_count():
    """Several torch threads share the blocks (and, with few blocks, the references) among workers."""
    a, b = random_images(70, seed=22), random_images(9, seed=23)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = ssim_matrix(a, b)
        torch.set_num_threads(3)
        shared = ssim_matrix(a, b)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(shared, alone, rtol=0, atol=1e-6)


def test_inputs_that_require_grad_are_accepted():
    a = torch.from_numpy(random_images(3, seed=24)).requires_grad_()
    torch.testing.assert_close(ssim_matrix(a, a[:2]), ssim_matrix(a.detach(), a[:2].detach()), rtol=0, atol=0)


def test_ssim_of_pairs_is_the_diagonal_of_the_matrix_and_accepts_channel_axis():
    a, b = random_images(5, seed=5), random_images(5, seed=6)
    pairs = ssim(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None]).numpy()
    np.testing.assert_allclose(pairs, [skimage_ssim(x, y) for x, y in zip(a, b)], atol=1e-4)


def test_blocked_and_single_pass_results_are_equal():
    a, b = random_images(11, seed=7), random_images(13, seed=8)
    whole = ssim_matrix(a, b, block_pairs=11 * 13)
    for block in (1, 5, 13, 40):
        torch.testing.assert_close(ssim_matrix(a, b, block_pairs=block), whole, rtol=0, atol=1e-6)
        match = nearest_by_ssim(a, b, block_pairs=block)
        assert torch.equal(match.index, whole.argmax(1))
        torch.testing.assert_close(match.ssim, whole.max(1).values, rtol=0, atol=1e-6)


def test_cc_and_mse_matrices_equal_numpy():
    a, b = random_images(4, seed=9), random_images(3, seed=10)
    cc = np.array([[np.corrcoef(x.ravel(), y.ravel())[0, 1] for y in b] for x in a])
    mse = np.array([[((x.astype(np.float64) - y) ** 2).mean() for y in b] for x in a])
    np.testing.assert_allclose(cc_matrix(a, b).numpy(), cc, atol=1e-6)
    np.testing.assert_allclose(mse_matrix(a, b).numpy(), mse, atol=1e-7)


def test_constant_image_has_zero_correlation_not_nan():
    a = np.full((1, 32, 32), 0.5, dtype=np.float32)
    assert cc_matrix(a, random_images(2)).tolist() == [[0.0, 0.0]]


def test_identical_sets_give_ssim_one_cc_one_mse_zero():
    a = random_images(6, seed=11)
    summary = nearest_by_ssim(a, a).summary()
    assert summary["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert summary["cc"] == pytest.approx(1.0, abs=1e-6)
    assert summary["mse"] == pytest.approx(0.0, abs=1e-9)
    assert torch.equal(nearest_by_ssim(a, a).index, torch.arange(6))


def test_nearest_neighbour_reports_the_matched_pairs_figures():
    a, b = random_images(5, seed=12), random_images(8, seed=13)
    match = nearest_by_ssim(a, b)
    j = match.index.numpy()
    np.testing.assert_allclose(match.cc.numpy(), [np.corrcoef(a[i].ravel(), b[j[i]].ravel())[0, 1] for i in range(5)],
                               atol=1e-6)
    np.testing.assert_allclose(match.mse.numpy(), [((a[i] - b[j[i]]) ** 2).mean() for i in range(5)], atol=1e-7)


@pytest.mark.parametrize("block_pairs", [64, 4])
def test_exclude_self_finds_the_nearest_other_image(block_pairs):
    a = random_images(6, seed=14)
    a[3] = a[1] * 0.98 + 0.01  # a near-duplicate of image 1
    match = nearest_by_ssim(a, a, exclude_self=True, block_pairs=block_pairs)
    assert match.index[1].item() == 3 and match.index[3].item() == 1
    assert (match.index != torch.arange(6)).all()


def test_noise_scores_far_below_real_images(phantom_slices):
    real_a, real_b = phantom_slices[::2], phantom_slices[1::2]
    noise = torch.rand((len(real_a), 32, 32), generator=torch.Generator().manual_seed(0))
    real = nearest_by_ssim(real_a, real_b).summary()["ssim"]
    assert nearest_by_ssim(noise, real_b).summary()["ssim"] < real - 0.3


def test_diversity_of_copies_is_one_and_of_distinct_images_lower():
    a = random_images(1, seed=15)
    assert mean_pairwise_ssim(np.repeat(a, 4, axis=0)) == pytest.approx(1.0, abs=1e-5)
    many = random_images(12, seed=16)
    expected = np.mean([skimage_ssim(many[i], many[j]) for i in range(12) for j in range(i + 1, 12)])
    assert mean_pairwise_ssim(many) == pytest.approx(expected, abs=1e-4)
    assert mean_pairwise_ssim(many, max_images=5) != mean_pairwise_ssim(many)  # subsampled


def test_diversity_over_several_blocks_is_the_mean_above_the_diagonal():
    """Diversity computes only the pairs right of each block's first row; 70 images make two blocks."""
    x = random_images(70, seed=25)
    matrix = ssim_matrix(x, x).double()
    expected = matrix[torch.triu(torch.ones(70, 70, dtype=torch.bool), diagonal=1)].mean().item()
    assert mean_pairwise_ssim(x, max_images=None) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 3, 32, 32)), "expected shape"),
    (np.zeros((0, 32, 32)), "no images"),
    (np.zeros((2, 8, 8)), "smaller than"),
    (np.full((2, 32, 32), np.nan), "NaN"),
])
def test_bad_inputs_raise_one_line_errors(bad, message):
    with pytest.raises(HcmbenchError, match=message):
        as_images(bad)


def test_mismatched_sizes_and_bad_data_range_raise():
    with pytest.raises(HcmbenchError, match="differ"):
        ssim_matrix(random_images(2, 32), random_images(2, 64))
    with pytest.raises(HcmbenchError, match="data_range"):
        ssim_matrix(random_images(2), random_images(2), data_range=0)
