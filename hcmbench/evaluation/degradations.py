"""Known degradations of real slices, at known strengths: what generators get wrong, made on purpose.

Two uses, one definition:
- the *ladder* (`LADDER`) that validates the metrics: held-out real slices degraded at increasing
  strength must score increasing FID and KID, kind by kind (`bench/metric_validity.py`, the tests);
- the *realism task* of the feature network (`features.py`), which learns to tell real slices from
  degraded ones at random kinds and severities, so that its space has directions for these artefacts.

Every kind maps a severity u in [0, 1] to a parameter, from barely visible (u near 0) to blatant
(u = 1); the ladder's strengths lie inside those ranges. Images are float tensors (n, 1, S, S) in
[0, 1], and every function returns images in [0, 1] of the same shape.

Kinds (what a generator does that makes them relevant):
    noise         additive Gaussian noise, σ up to 0.1            (grainy samples, an unfinished diffusion)
    blur          Gaussian blur, σ up to 3 px                      (VAE and upsampling blur)
    gamma-bright  x ** γ, γ from 1 down to 0.6                     (a wrong intensity curve)
    gamma-dark    x ** γ, γ from 1 up to 1.6
    tconv         2× down, then up through a 3 × 3 stride-2        (the checkerboard of transposed
                  transposed convolution, mixed in at u              convolutions, Odena et al. 2016)
    nearest       2× down, nearest-neighbour up, mixed in at u     (blocky upsampling)
    shuffle       a share u of the 8 × 8 grid's patches swapped    (anatomy in the wrong place)
    replace       the image mixed with uniform noise at u         (a generator that has not learnt yet)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hcmbench.errors import HcmbenchError

# The ladder of the issue that made the metrics see realism: kind → increasing parameters.
LADDER: dict[str, tuple[float, ...]] = {
    "noise": (0.01, 0.02, 0.05),
    "blur": (0.5, 1.0, 2.0),
    "gamma-bright": (0.9, 0.8, 0.67),
    "gamma-dark": (1.1, 1.25, 1.5),
    "tconv": (0.25, 0.5, 1.0),
    "nearest": (0.25, 0.5, 1.0),
    "shuffle": (0.125, 0.25, 0.5),
}
SHUFFLE_GRID = 8


def _gaussian_kernel(sigma: float) -> Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def add_noise(x: Tensor, sigma: float | Tensor, rng: torch.Generator | None = None) -> Tensor:
    return (x + sigma * torch.randn(x.shape, generator=rng)).clamp(0, 1)


def blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of `sigma` px with reflected borders (the kernel is capped at the image)."""
    if sigma <= 0:
        return x.clone()
    w = _gaussian_kernel(sigma)
    radius = min(len(w) // 2, x.shape[-1] - 1)
    w = w[len(w) // 2 - radius: len(w) // 2 + radius + 1]
    w = w / w.sum()
    y = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, w.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, w.view(1, 1, -1, 1)).clamp(0, 1)


def gamma(x: Tensor, value: float | Tensor) -> Tensor:
    return x.clamp(0, 1) ** value


def _down(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 2)


def tconv_up(x: Tensor) -> Tensor:
    """2× down, then up through a 3 × 3 stride-2 transposed convolution of ones, normalised by its mean
    overlap: output pixels receive 1, 2 or 4 contributions, the checkerboard of uneven overlap."""
    low = _down(x)
    up = F.conv_transpose2d(low, torch.ones(1, 1, 3, 3), stride=2, padding=1, output_padding=1)
    return (up / 2.25).clamp(0, 1)


def nearest_up(x: Tensor) -> Tensor:
    return F.interpolate(_down(x), scale_factor=2, mode="nearest")


def shuffle_patches(x: Tensor, share: float, rng: torch.Generator | None = None) -> Tensor:
    """Swap a `share` of the SHUFFLE_GRID × SHUFFLE_GRID patches of each image among themselves."""
    n, _, size, _ = x.shape
    g, p = SHUFFLE_GRID, size // SHUFFLE_GRID
    tiles = x[:, :, :g * p, :g * p].unfold(2, p, p).unfold(3, p, p).reshape(n, g * g, p, p).clone()
    moved = max(2, int(round(share * g * g)))
    for i in range(n):
        chosen = torch.randperm(g * g, generator=rng)[:moved]
        tiles[i, chosen] = tiles[i, chosen[torch.roll(torch.arange(moved), 1)]]  # a cycle: every one moves
    out = x.clone()
    out[:, :, :g * p, :g * p] = tiles.reshape(n, g, g, p, p).permute(0, 1, 3, 2, 4).reshape(n, 1, g * p, g * p)
    return out


def _mix(x: Tensor, y: Tensor, t: float | Tensor) -> Tensor:
    return (1 - t) * x + t * y


# kind → (apply(x, parameter, generator), severity u in [0, 1] → parameter)
KINDS: dict[str, tuple[Callable[[Tensor, float, torch.Generator | None], Tensor], Callable[[float], float]]] = {
    "noise": (lambda x, v, g: add_noise(x, v, g), lambda u: 0.1 * u),
    "blur": (lambda x, v, g: blur(x, v), lambda u: 3.0 * u),
    "gamma-bright": (lambda x, v, g: gamma(x, v), lambda u: 1.0 - 0.4 * u),
    "gamma-dark": (lambda x, v, g: gamma(x, v), lambda u: 1.0 + 0.6 * u),
    "tconv": (lambda x, v, g: _mix(x, tconv_up(x), v), lambda u: u),
    "nearest": (lambda x, v, g: _mix(x, nearest_up(x), v), lambda u: u),
    "shuffle": (lambda x, v, g: shuffle_patches(x, v, g), lambda u: 0.5 * u),
    "replace": (lambda x, v, g: _mix(x, torch.rand(x.shape, generator=g), v), lambda u: u),
}


def degrade(images: Tensor, kind: str, parameter: float, rng: torch.Generator | None = None) -> Tensor:
    """`images` ((n, S, S) or (n, 1, S, S), in [0, 1]) under degradation `kind` at `parameter`, same shape."""
    if kind not in KINDS:
        raise HcmbenchError(f"unknown degradation {kind!r}: choose from {', '.join(KINDS)}")
    x = images.float()
    flat = x.ndim == 3
    x = x.unsqueeze(1) if flat else x
    out = KINDS[kind][0](x, float(parameter), rng).clamp(0, 1)
    return out[:, 0] if flat else out


SCALAR_ONLY = ("blur", "shuffle")  # kinds whose parameter must be one number (a kernel size, a patch count)


def _apply_each(images: Tensor, name: str, parameters: Tensor, rng: torch.Generator) -> Tensor:
    """Kind `name` applied to each image at its own parameter: in one call with the parameters as a per-image
    tensor, which the other kinds' arithmetic broadcasts, image by image for `SCALAR_ONLY` kinds."""
    apply = KINDS[name][0]
    if name in SCALAR_ONLY:
        return torch.cat([apply(images[i:i + 1], float(parameters[i]), rng) for i in range(len(images))])
    return apply(images, parameters.view(-1, 1, 1, 1), rng)


def random_degradations(images: Tensor, rng: torch.Generator,
                        low: float = 0.15) -> tuple[Tensor, Tensor, Tensor]:
    """Each image (n, 1, S, S) under a random kind at a random severity u in [low, 1]: (degraded, kind index
    into KINDS, severity). Below `low` most kinds are invisible, and calling them unreal would be noise."""
    names = list(KINDS)
    kinds = torch.randint(len(names), (len(images),), generator=rng)
    severity = low + (1 - low) * torch.rand(len(images), generator=rng)
    out = torch.empty_like(images)
    for k, name in enumerate(names):
        chosen = (kinds == k).nonzero().flatten()
        if len(chosen):
            to_parameter = KINDS[name][1]
            parameters = torch.tensor([to_parameter(float(u)) for u in severity[chosen]])
            out[chosen] = _apply_each(images[chosen], name, parameters, rng).clamp(0, 1)
    return out, kinds, severity
