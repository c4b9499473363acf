"""Pixel-level similarity (docs/design.md, "The metrics protocol"): SSIM, Pearson CC and MSE between every
generated and every reference image, nearest-neighbour matching by SSIM, and within-set diversity.

Images are in [0, 1], shaped (n, H, W) or (n, 1, H, W). SSIM is scikit-image's
`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)`:
an 11×11 Gaussian window (σ 1.5, truncated at 3.5σ), K1 = 0.01, K2 = 0.03, the SSIM map averaged over
the pixels whose window lies inside the image. Only those pixels count, so no padding rule is involved
and the values agree with scikit-image's to float32 precision.

Speed: the Gaussian filter is separable and a "valid" filter is a product with a banded matrix. A block
of generated images meets one reference image at a time: their products x·y, laid out with the image
axis last, are filtered by a few products of small band pieces with all the block's pixel rows at once
(the shape matrix libraries run fastest on). The per-image terms (local means and variances) are
computed once per set, the buffers once per call, and the blocks are shared among worker threads.
Memory stays bounded whatever the set sizes.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from hcmbench.errors import HcmbenchError

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's default: radius int(3.5·1.5 + 0.5) = 5, an 11×11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03
# Generated images per block (each block meets one reference image at a time). At 64 px a block's
# buffers and terms take about 150 kB per image, so a block of 64 (10 MB) stays in a typical L3 cache:
# larger blocks measured slower, smaller ones pay more per-operation overhead.
BLOCK_PAIRS = 64
# Output rows per band piece: the 1-D filter keeps 11 of every row's 64 entries at 64 px, and pieces of
# ≤ 16 output rows (each multiplied only by the input rows its windows cover) skip most of the zeros,
# while staying large enough for the matrix library to run at speed.
BAND_PIECE = 16


def as_images(images: Tensor | np.ndarray, name: str = "images") -> Tensor:
    """A float32 tensor (n, H, W) of the images in `images` ((n, H, W) or (n, 1, H, W)), detached from
    any autograd graph (the metrics write into preallocated buffers, which autograd forbids).

    Raises HcmbenchError for another shape, an empty set, images smaller than the SSIM window, or
    values that are not finite.
    """
    x = torch.as_tensor(images).detach()
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




# -- the Gaussian window as banded matrices ---------------------------------------------------------


def _window_radius(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> int:
    return int(truncate * sigma + 0.5)


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> Tensor:
    """The normalised 1-D Gaussian weights of scipy.ndimage.gaussian_filter (float64)."""
    radius = _window_radius(sigma, truncate)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def _band_matrix(size: int, weights: Tensor) -> Tensor:
    """(size − 2r, size) float64: `band @ x` filters x's first axis, keeping the valid positions."""
    width = len(weights)
    band = torch.zeros(size - width + 1, size, dtype=torch.float64)
    for j in range(size - width + 1):
        band[j, j:j + width] = weights
    return band


_Product = tuple[Tensor, Tensor, Tensor]  # (band piece, source rows, target rows): target = piece @ source


def _banded_products(weights: Tensor, source: Tensor, target: Tensor) -> list[_Product]:
    """The valid filter along the first axis of `source` (size, N) into `target` (size − 2r, N), as a few
    matrix products of band pieces with the source rows their windows cover (BAND_PIECE: why pieces).
    The views are made once, so that running the products costs one call each."""
    band = _band_matrix(len(source), weights)
    valid, reach = len(band), len(weights) - 1
    pieces = -(-valid // BAND_PIECE)
    edges = [round(k * valid / pieces) for k in range(pieces + 1)]
    return [(band[a:b, a:b + reach].float().to(source.device), source[a:b + reach], target[a:b])
            for a, b in zip(edges, edges[1:])]


def _run(products: list[_Product]) -> None:
    """Run the products of `_banded_products` into their targets."""
    for piece, source, target in products:
        torch.mm(piece, source, out=target)


class _BlockFilter:
    """The separable Gaussian filter restricted to pixels whose window lies inside the image, for
    `count` images at once, from its own `input` buffer (W, H, count) into its own `output` (H', W', count).

    The image axis is last so that each 1-D pass is a product of a small band piece (left) with the
    rows of all images at once (right); between the passes the intermediate is transposed once. The
    buffers are made once: allocating MB-sized tensors per block costs more than the arithmetic.
    """

    def __init__(self, height: int, width: int, count: int, device: torch.device) -> None:
        weights = gaussian_window()
        valid_h, valid_w = height - len(weights) + 1, width - len(weights) + 1
        self.input = torch.empty(width, height, count, device=device)
        self.output = torch.empty(valid_h, valid_w, count, device=device)
        self._along_w = torch.empty(valid_w, height, count, device=device)
        self._along_w_t = torch.empty(height, valid_w, count, device=device)
        self._pass_w = _banded_products(weights, self.input.view(width, -1), self._along_w.view(valid_w, -1))
        self._pass_h = _banded_products(weights, self._along_w_t.view(height, -1), self.output.view(valid_h, -1))

    @property
    def count(self) -> int:
        return self.input.shape[-1]

    def __call__(self) -> Tensor:
        """Filter `input` into `output`, which is returned."""
        _run(self._pass_w)
        self._along_w_t.copy_(self._along_w.transpose(0, 1))
        _run(self._pass_h)
        return self.output


def _local_moments(images: Tensor, filt: _BlockFilter) -> tuple[Tensor, Tensor]:
    """Gaussian-weighted local mean and variance of each image (n, H, W), n a multiple of filt.count:
    two tensors (n, H', W')."""
    means, variances = [], []
    for block in images.split(filt.count):
        filt.input.copy_(block.permute(2, 1, 0))
        mean = filt().permute(2, 0, 1).clone()
        filt.input.mul_(filt.input)
        variances.append(filt().permute(2, 0, 1) - mean * mean)
        means.append(mean)
    return torch.cat(means), torch.cat(variances)


@dataclass
class _Terms:
    """One set's per-image SSIM terms, block-major: each field is (blocks, …, size), a block's images on
    the last axis, so that a block of generated images (size = block) broadcasts against one reference
    image (size = 1), or against a block of as many (pairwise SSIM)."""

    images: Tensor  # (blocks, W, H, size)
    mean: Tensor  # (blocks, H', W', size): μ
    mean_sq: Tensor  # μ² (+ C1 on one side)
    half_var: Tensor  # σ²/2 (+ C2/2 on one side)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, block: int) -> _Terms:
        return _Terms(self.images[block], self.mean[block], self.mean_sq[block], self.half_var[block])


def _terms(images: Tensor, filt: _BlockFilter, size: int, c1: float = 0.0, c2: float = 0.0) -> _Terms:
    """The terms of `images` (n, H, W) in blocks of `size` images, zero images filling the last block.

    The constants go into one side only, so that the sum of the two sides carries them once.
    """
    n = len(images)
    padded = torch.cat([images, images.new_zeros(-n % filt.count, *images.shape[1:])])
    mean, var = _local_moments(padded, filt)
    kept = -(-n // size) * size

    def block_major(t: Tensor) -> Tensor:
        return t[:kept].unflatten(0, (-1, size)).movedim(1, -1).contiguous()

    return _Terms(block_major(padded.transpose(1, 2)), block_major(mean), block_major(mean * mean + c1),
                  block_major((var + c2) / 2))


class _PairKernel:
    """SSIM of a block of generated images against one reference image (or a block of as many), with
    buffers of its own: one kernel per worker thread and call."""

    def __init__(self, height: int, width: int, block: int, device: torch.device, c1: float, c2: float) -> None:
        self.filter = _BlockFilter(height, width, block, device)
        shape = self.filter.output.shape
        self.pixels = shape[0] * shape[1]
        # C1 as a whole map: next to a broadcast reference term, a scalar operand would send torch's
        # elementwise kernel down its slow, unvectorised path.
        self._c1 = torch.full(shape, c1, device=device)
        self._half_c2 = c2 / 2
        self._luminance, self._denominator, self._variances = (torch.empty(shape, device=device) for _ in range(3))

    def __call__(self, gen: _Terms, ref: _Terms, out: Tensor) -> None:
        """Write the SSIM map *sums* of the pairs (gen image k, ref image) into `out` (block,).

        S = (2μxμy + C1)(σxy + C2/2) / ((μx² + μy² + C1)(σx² + σy² + C2)/2) with σxy = G(xy) − μxμy.
        The small difference G(xy) − μxμy is formed before C2/2 is added: adding the constant to
        G(xy) (about 0.25) first would shift σxy by a fixed fraction of a float32 step there, a bias
        of about 1e-6 in SSIM.
        """
        torch.mul(gen.images, ref.images, out=self.filter.input)
        cov = self.filter().addcmul_(gen.mean, ref.mean, value=-1).add_(self._half_c2)
        luminance = torch.addcmul(self._c1, gen.mean, ref.mean, value=2, out=self._luminance)
        denominator = torch.add(gen.mean_sq, ref.mean_sq, out=self._denominator)
        denominator.mul_(torch.add(gen.half_var, ref.half_var, out=self._variances))
        luminance.mul_(cov).div_(denominator)
        torch.sum(luminance.view(-1, luminance.shape[-1]), 0, out=out)


def ssim_constants(data_range: float) -> tuple[float, float]:
    """SSIM's C1 = (K1·R)² and C2 = (K2·R)² for data range R; a range that is not a positive number
    raises HcmbenchError."""
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise HcmbenchError(f"data_range must be a positive number, got {data_range!r}")
    return (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2


def _prepare(x: Tensor | np.ndarray, y: Tensor | np.ndarray, data_range: float) -> tuple[Tensor, Tensor, float, float]:
    """Both sets as (n, H, W) float32 on x's device, and the SSIM constants."""
    x, y = as_images(x, "generated"), as_images(y, "reference")
    if x.shape[1:] != y.shape[1:]:
        raise HcmbenchError(f"image sizes differ: {tuple(x.shape[1:])} and {tuple(y.shape[1:])}")
    c1, c2 = ssim_constants(data_range)
    return x, y.to(x.device), c1, c2


class _InlineExecutor(Executor):
    """Runs each submitted call at once in the calling thread: with one torch thread, a pool only costs."""

    def submit(self, fn: Callable[..., object], *args: object) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future


@contextmanager
def _workers(threads: int) -> Iterator[Executor]:
    """`threads` worker threads, each running torch on one thread, for blocks of pairs.

    Why not torch's own threads: a block makes small operations, and torch's threads meet at a barrier
    after each one; on a busy machine a descheduled thread stalls every barrier (measured on 2 shared
    cores: up to 16× slower than one thread). Workers on blocks of their own never wait for each other.
    The thread count is torch's global state (other threads of the process see it too): the workers set
    it to one, and it is restored on exit.
    """
    if threads == 1:
        yield _InlineExecutor()
        return
    try:
        with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


def _in_order(jobs: Iterator[tuple[Tensor, list[Future]]], ahead: int) -> Iterator[Tensor]:
    """Each job's tensor once its futures are done, in order, with at most `ahead` further jobs
    submitted meanwhile (so that the workers stay busy while memory stays bounded)."""
    pending: deque[tuple[Tensor, list[Future]]] = deque()
    for job in jobs:
        pending.append(job)
        if len(pending) > ahead:
            yield _result(*pending.popleft())
    while pending:
        yield _result(*pending.popleft())


def _result(value: Tensor, futures: list[Future]) -> Tensor:
    """`value` once all `futures` are done."""
    for future in futures:
        future.result()  # re-raises a worker's exception
    return value


def _split(columns: range, parts: int) -> list[range]:
    """`columns` as `parts` consecutive ranges of near-equal length (empty ones left out)."""
    edges = [round(k * len(columns) / parts) for k in range(parts + 1)]
    return [columns[a:b] for a, b in zip(edges, edges[1:]) if b > a]


def _ssim_row_blocks(x: Tensor, y: Tensor, c1: float, c2: float, block_pairs: int,
                     upper: bool = False) -> Iterator[tuple[int, Tensor]]:
    """The SSIM matrix of x against y (prepared), a block of rows at a time: (first row, (rows, len(y))).

    The blocks' pairs are shared among torch.get_num_threads() workers (`_workers`: why), in pieces of
    references when there are few blocks. With `upper` (x and y the same set), only the pairs right of
    each block's first row are computed (the rest is NaN): the matrix is symmetric, so that halves the
    work of a within-set mean.
    """
    block = max(1, min(block_pairs, len(x)))
    make_kernel = partial(_PairKernel, x.shape[1], x.shape[2], block, x.device, c1, c2)
    local = threading.local()
    local.kernel = make_kernel()
    generated = _terms(x, local.kernel.filter, block, c1, c2)
    references = list(_terms(y, local.kernel.filter, 1))
    threads = torch.get_num_threads() if x.device.type == "cpu" else 1
    parts = -(-4 * threads // len(generated)) if threads > 1 else 1

    def fill(sums: Tensor, gen: _Terms, columns: range) -> None:
        if not hasattr(local, "kernel"):
            local.kernel = make_kernel()
        for j in columns:
            local.kernel(gen, references[j], sums[j])

    def jobs(pool: Executor) -> Iterator[tuple[Tensor, list[Future]]]:
        for b in range(len(generated)):
            sums = torch.full((len(y), block), math.nan, device=x.device)
            columns = range(b * block + 1 if upper else 0, len(y))
            yield sums, [pool.submit(fill, sums, generated[b], part) for part in _split(columns, parts)]

    with _workers(threads) as pool:
        for b, sums in enumerate(_in_order(jobs(pool), ahead=threads)):
            yield b * block, (sums.T[:len(x) - b * block] / local.kernel.pixels).cpu()


def ssim(x: Tensor | np.ndarray, y: Tensor | np.ndarray, data_range: float = 1.0) -> Tensor:
    """SSIM of each pair (x[i], y[i]): a float32 tensor (n,). The two sets must be the same length."""
    x, y, c1, c2 = _prepare(x, y, data_range)
    if len(x) != len(y):
        raise HcmbenchError(f"ssim pairs images one to one: got {len(x)} and {len(y)}")
    block = min(BLOCK_PAIRS, len(x))
    kernel = _PairKernel(x.shape[1], x.shape[2], block, x.device, c1, c2)
    xs, ys = _terms(x, kernel.filter, block, c1, c2), _terms(y, kernel.filter, block)
    sums = torch.empty(len(xs), block, device=x.device)
    for b in range(len(xs)):
        kernel(xs[b], ys[b], sums[b])
    return (sums.flatten()[:len(x)] / kernel.pixels).cpu()


def ssim_matrix(x: Tensor | np.ndarray, y: Tensor | np.ndarray, data_range: float = 1.0,
                block_pairs: int = BLOCK_PAIRS) -> Tensor:
    """SSIM of every x[i] against every y[j]: a float32 tensor (len(x), len(y))."""
    x, y, c1, c2 = _prepare(x, y, data_range)
    return torch.cat([rows for _, rows in _ssim_row_blocks(x, y, c1, c2, block_pairs)])


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

    Only a few blocks of rows of the SSIM matrix exist at a time. With `exclude_self` (the two sets are
    the same images), an image is not matched to itself. CC and MSE are those of the matched pair (as in
    the study).
    """
    x, y, c1, c2 = _prepare(generated, reference, data_range)
    if exclude_self and len(x) != len(y):
        raise HcmbenchError("exclude_self needs the same set twice")
    if exclude_self and len(y) < 2:
        raise HcmbenchError("exclude_self needs at least two images")
    best = torch.empty(len(x))
    index = torch.empty(len(x), dtype=torch.long)
    for start, rows in _ssim_row_blocks(x, y, c1, c2, block_pairs):
        if exclude_self:
            rows.diagonal(start).fill_(-math.inf)
        best[start:start + len(rows)], index[start:start + len(rows)] = rows.max(dim=1)
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
    c1, c2 = ssim_constants(data_range)
    matrix = torch.cat([rows for _, rows in _ssim_row_blocks(x, x, c1, c2, BLOCK_PAIRS, upper=True)])
    upper = torch.triu(torch.ones_like(matrix, dtype=torch.bool), diagonal=1)
    return matrix[upper].double().mean().item()
