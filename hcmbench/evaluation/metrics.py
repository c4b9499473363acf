"""Pixel-level similarity (DESIGN.md, "The metrics protocol"): SSIM, Pearson CC and MSE between every
generated and every reference image, nearest-neighbour matching by SSIM, and within-set diversity.

Images are in [0, 1], shaped (n, H, W) or (n, 1, H, W). SSIM is scikit-image's
`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)`:
an 11×11 Gaussian window (σ 1.5, truncated at 3.5σ), K1 = 0.01, K2 = 0.03, the SSIM map averaged over
the pixels whose window lies inside the image. Only those pixels count, so no padding rule is involved
and the values agree with scikit-image's to float32 precision.

Speed: the Gaussian filter is separable and a "valid" filter is a product with a banded matrix, so the
filtered products x·y of a whole block of pairs are two large matrix multiplications. The per-image
terms (local means and variances) are computed once per set. Work proceeds in blocks of at most
`block_pairs` pairs, so memory stays bounded whatever the set sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hcmbench.errors import HcmbenchError

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's default: radius int(3.5·1.5 + 0.5) = 5, an 11×11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03
BLOCK_PAIRS = 64  # image pairs per block: small blocks stay in cache (64 × 64 × 64 float32 is 1 MiB)


def as_images(images: Tensor | np.ndarray, name: str = "images") -> Tensor:
    """A float32 tensor (n, H, W) of the images in `images` ((n, H, W) or (n, 1, H, W)).

    Raises HcmbenchError for another shape, an empty set, images smaller than the SSIM window, or
    values that are not finite.
    """
    x = torch.as_tensor(images)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise HcmbenchError(f"{name}: expected shape (n, H, W) or (n, 1, H, W), got {tuple(x.shape)}")
    radius = _window_radius()
    if len(x) == 0:
        raise HcmbenchError(f"{name}: no images")
    if min(x.shape[1:]) < 2 * radius + 1:
        raise HcmbenchError(f"{name}: images of {tuple(x.shape[1:])} px are smaller than the {2 * radius + 1}-px "
                            "SSIM window")
    x = x.float()
    if not torch.isfinite(x).all():
        raise HcmbenchError(f"{name}: contains NaN or infinite values")
    return x


def from_model_range(images: Tensor) -> Tensor:
    """Generator output in [−1, 1] mapped to the metrics' range [0, 1]."""
    return ((images.float() + 1) / 2).clamp(0, 1)


# -- the Gaussian window as banded matrices ---------------------------------------------------------


def _window_radius(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> int:
    return int(truncate * sigma + 0.5)


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> Tensor:
    """The normalised 1-D Gaussian weights of scipy.ndimage.gaussian_filter (float64)."""
    radius = _window_radius(sigma, truncate)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def _band_matrix(size: int, weights: Tensor, device: torch.device) -> Tensor:
    """(size, size − 2r)ᵀ-shaped operator: `x @ band` filters x's last axis, keeping valid positions."""
    width = len(weights)
    band = torch.zeros(size, size - width + 1, dtype=torch.float64)
    for j in range(size - width + 1):
        band[j:j + width, j] = weights
    return band.float().to(device)


class _ValidGaussian:
    """The separable Gaussian filter restricted to pixels whose window lies inside the image.

    `__call__` returns the filtered map *transposed* ((…, W', H') for input (…, H, W)): that saves a
    copy, and SSIM only ever averages the map, which transposition leaves alone.
    """

    def __init__(self, height: int, width: int, device: torch.device) -> None:
        weights = gaussian_window()
        self.along_w = _band_matrix(width, weights, device)
        self.along_h = _band_matrix(height, weights, device)

    def __call__(self, x: Tensor) -> Tensor:
        *lead, height, width = x.shape
        y = (x.reshape(-1, width) @ self.along_w).reshape(*lead, height, -1)
        return y.transpose(-1, -2) @ self.along_h


@dataclass
class _LocalMoments:
    """Per-image Gaussian-weighted local means and variances, computed once per set."""

    images: Tensor
    mean: Tensor
    mean_sq_c1: Tensor  # μ² + C1
    var: Tensor  # σ²


def _moments(x: Tensor, filt: _ValidGaussian, c1: float, block: int = 256) -> _LocalMoments:
    means, variances = [], []
    for start in range(0, len(x), block):
        part = x[start:start + block]
        mu = filt(part)
        means.append(mu)
        variances.append(filt(part * part) - mu * mu)
    mean = torch.cat(means)
    return _LocalMoments(x, mean, mean * mean + c1, torch.cat(variances))


def ssim_constants(data_range: float) -> tuple[float, float]:
    """SSIM's C1 = (K1·R)² and C2 = (K2·R)² for data range R; a range that is not a positive number
    raises HcmbenchError."""
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise HcmbenchError(f"data_range must be a positive number, got {data_range!r}")
    return (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2


def _ssim_block(a: _LocalMoments, rows: slice, b: _LocalMoments, cols: slice, filt: _ValidGaussian,
                c1: float, c2: float) -> Tensor:
    """SSIM of every (rows × cols) pair: (len(rows), len(cols)).

    S = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)) with σxy = G(xy) − μxμy, written as
    2σxy + C2 = 2G(xy) − (2μxμy + C1) + C1 + C2 to save passes over the (pairs, H', W') tensors.
    """
    mx, my = a.mean[rows, None], b.mean[None, cols]
    two_xy = filt(a.images[rows, None] * (2 * b.images[None, cols]))
    numerator = torch.addcmul(torch.tensor(c1, device=mx.device), mx, my, value=2.0)
    two_xy.sub_(numerator).add_(c1 + c2)
    numerator.mul_(two_xy)
    denominator = a.mean_sq_c1[rows, None] + (b.mean[None, cols] ** 2)
    denominator.mul_(a.var[rows, None] + b.var[None, cols] + c2)
    return numerator.div_(denominator).mean(dim=(-1, -2))


def _blocks(n: int, m: int, block_pairs: int) -> tuple[int, int]:
    """Rows and columns per block so that rows × cols ≤ block_pairs (at least one pair)."""
    cols = max(1, min(m, block_pairs))
    rows = max(1, min(n, block_pairs // cols))
    return rows, cols


def _prepare(x: Tensor | np.ndarray, y: Tensor | np.ndarray,
             data_range: float) -> tuple[Tensor, Tensor, float, float, _ValidGaussian]:
    """Both sets as (n, H, W) float32 on x's device, the SSIM constants, and the filter for their size."""
    x, y = as_images(x, "generated"), as_images(y, "reference")
    if x.shape[1:] != y.shape[1:]:
        raise HcmbenchError(f"image sizes differ: {tuple(x.shape[1:])} and {tuple(y.shape[1:])}")
    y = y.to(x.device)
    c1, c2 = ssim_constants(data_range)
    filt = _ValidGaussian(x.shape[1], x.shape[2], x.device)
    return x, y, c1, c2, filt


def ssim(x: Tensor | np.ndarray, y: Tensor | np.ndarray, data_range: float = 1.0) -> Tensor:
    """SSIM of each pair (x[i], y[i]): a float32 tensor (n,). The two sets must be the same length."""
    x, y, c1, c2, filt = _prepare(x, y, data_range)
    if len(x) != len(y):
        raise HcmbenchError(f"ssim pairs images one to one: got {len(x)} and {len(y)}")
    out = []
    for start in range(0, len(x), BLOCK_PAIRS):
        xs, ys = x[start:start + BLOCK_PAIRS], y[start:start + BLOCK_PAIRS]
        mx, my = filt(xs), filt(ys)
        var_x, var_y = filt(xs * xs) - mx * mx, filt(ys * ys) - my * my
        cov = filt(xs * ys) - mx * my
        s = (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (var_x + var_y + c2))
        out.append(s.mean(dim=(-1, -2)).cpu())
    return torch.cat(out)


def ssim_matrix(x: Tensor | np.ndarray, y: Tensor | np.ndarray, data_range: float = 1.0,
                block_pairs: int = BLOCK_PAIRS) -> Tensor:
    """SSIM of every x[i] against every y[j]: a float32 tensor (len(x), len(y))."""
    x, y, c1, c2, filt = _prepare(x, y, data_range)
    a, b = _moments(x, filt, c1), _moments(y, filt, c1)
    rows, cols = _blocks(len(x), len(y), block_pairs)
    out = torch.empty(len(x), len(y))
    for i in range(0, len(x), rows):
        for j in range(0, len(y), cols):
            out[i:i + rows, j:j + cols] = _ssim_block(a, slice(i, i + rows), b, slice(j, j + cols), filt, c1, c2).cpu()
    return out


# -- CC and MSE: inner products, so one matrix multiplication each ---------------------------------


def _flat64(x: Tensor) -> Tensor:
    return x.reshape(len(x), -1).double()


def _standardised(z: Tensor) -> Tensor:
    """Rows centred and scaled to unit norm, so that dot products are Pearson correlations; a constant
    row becomes zeros (its correlation is undefined and reported as 0)."""
    z = z - z.mean(1, keepdim=True)
    norm = z.norm(dim=1, keepdim=True)
    return torch.where(norm > 1e-12, z / norm.clamp(min=1e-12), torch.zeros_like(z))


def mse_matrix(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> Tensor:
    """Mean squared pixel difference of every pair: float64 (len(x), len(y))."""
    x, y = _flat64(as_images(x, "generated")), _flat64(as_images(y, "reference")).to(x.device)
    if x.shape[1] != y.shape[1]:
        raise HcmbenchError("image sizes differ")
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return (sq.clamp(min=0) / x.shape[1]).cpu()


def cc_matrix(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> Tensor:
    """Pearson correlation of the pixel values of every pair: float64 (len(x), len(y)).

    A constant image has no defined correlation; its pairs get 0 (no linear relation can be seen).
    """
    x, y = _flat64(as_images(x, "generated")), _flat64(as_images(y, "reference")).to(x.device)
    if x.shape[1] != y.shape[1]:
        raise HcmbenchError("image sizes differ")
    return (_standardised(x) @ _standardised(y).T).clamp(-1, 1).cpu()


# -- nearest neighbours and diversity ----------------------------------------------------------------


@dataclass
class NearestMatch:
    """For each generated image, the reference image of highest SSIM and the three figures of that pair."""

    index: Tensor  # (n,) int64: the matched reference image
    ssim: Tensor  # (n,)
    cc: Tensor  # (n,)
    mse: Tensor  # (n,)

    def summary(self) -> dict[str, float]:
        """Mean and standard deviation of each figure over the generated set (population std)."""
        out: dict[str, float] = {}
        for name in ("ssim", "cc", "mse"):
            values = getattr(self, name).double()
            out[name] = values.mean().item()
            out[f"{name}_std"] = values.std(unbiased=False).item()
        return out


def nearest_by_ssim(generated: Tensor | np.ndarray, reference: Tensor | np.ndarray, data_range: float = 1.0,
                    block_pairs: int = BLOCK_PAIRS, exclude_self: bool = False) -> NearestMatch:
    """Match each generated image to the reference image of highest SSIM; report SSIM, CC and MSE of the pair.

    Only a block of the SSIM matrix exists at a time. With `exclude_self` (the two sets are the same
    images), an image is not matched to itself. CC and MSE are those of the matched pair (as in the study).
    """
    x, y, c1, c2, filt = _prepare(generated, reference, data_range)
    if exclude_self and len(x) != len(y):
        raise HcmbenchError("exclude_self needs the same set twice")
    if exclude_self and len(y) < 2:
        raise HcmbenchError("exclude_self needs at least two images")
    a, b = _moments(x, filt, c1), _moments(y, filt, c1)
    rows, cols = _blocks(len(x), len(y), block_pairs)
    best = torch.full((len(x),), -math.inf)
    index = torch.zeros(len(x), dtype=torch.long)
    for i in range(0, len(x), rows):
        for j in range(0, len(y), cols):
            block = _ssim_block(a, slice(i, i + rows), b, slice(j, j + cols), filt, c1, c2).cpu()
            if exclude_self:
                r = torch.arange(i, min(i + rows, len(x)))[:, None]
                c = torch.arange(j, min(j + cols, len(y)))[None, :]
                block = block.masked_fill(r == c, -math.inf)
            value, where = block.max(dim=1)
            better = value > best[i:i + rows]
            best[i:i + rows] = torch.where(better, value, best[i:i + rows])
            index[i:i + rows] = torch.where(better, where + j, index[i:i + rows])
    matched = y[index.to(y.device)]
    x64, m64 = _flat64(x), _flat64(matched)
    mse = ((x64 - m64) ** 2).mean(1).cpu()
    cc = (_standardised(x64) * _standardised(m64)).sum(1).clamp(-1, 1).cpu()
    return NearestMatch(index, best, cc, mse)


def mean_pairwise_ssim(images: Tensor | np.ndarray, max_images: int | None = 200, seed: int = 0,
                       data_range: float = 1.0) -> float:
    """Diversity: the mean SSIM over all pairs of distinct images of a set (lower is more diverse).

    Sets larger than `max_images` are subsampled (seeded) first: the pair count grows as n².
    """
    x = as_images(images)
    if len(x) < 2:
        raise HcmbenchError("diversity needs at least two images")
    if max_images is not None and len(x) > max_images:
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_images]
        x = x[pick.sort().values.to(x.device)]
    matrix = ssim_matrix(x, x, data_range)
    upper = torch.triu(torch.ones_like(matrix, dtype=torch.bool), diagonal=1)
    return matrix[upper].double().mean().item()
