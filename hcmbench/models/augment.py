"""Differentiable augmentation of the discriminator's inputs, for GANs trained on few images.

Zhao, Liu, Lin, Zhu & Han, "Differentiable Augmentation for Data-Efficient GAN Training" (DiffAugment),
NeurIPS 2020; Karras, Aittala, Hellsten, Laine, Lehtinen & Aila, "Training Generative Adversarial
Networks with Limited Data" (ADA), NeurIPS 2020.

With a few hundred training slices, D memorises them and its gradient stops guiding G. Both papers
augment every image D sees, real and fake, in the D step and in the G step, with transforms that are
differentiable so that G's gradient flows back through them. D can then no longer memorise exact
pixels; and since G is only ever judged through the same random transforms, they do not "leak" into
its samples, as long as the augmented distribution still determines the original one (ADA's
condition; it rules out e.g. random 90° rotations or flips applied half of the time). Each call draws
fresh parameters for each image: real and fake batches never share them, as in DiffAugment. The
transforms are always applied (DiffAugment's p = 1); ADA's adaptive probability is not implemented.

A policy is a comma-separated string of op names, applied in its order; "" or "none" (or None,
what `--set augment=` reads as) is no augmentation. The ops, for (B, C, H, W) images in [-1, 1]
(DiffAugment's ranges for that scale):

  color        brightness: add b ~ U(−0.5, 0.5); then contrast: scale about the image's mean by
               c ~ U(0.5, 1.5). No saturation: the images are grey. Values are not clipped (a clip
               would cut the gradient), so D may see values slightly outside [-1, 1].
  translation  an integer shift of up to S/8 pixels along each axis (uniform in [−S/8, S/8]); the
               pixels shifted in are −1, black, the background of an MR image.
  cutout       a square of side S/2 at a uniformly random centre (it may reach past the border) set
               to 0, mid-grey, as DiffAugment's mask does on [-1, 1] images. Mid-grey rather than
               black because black is what background, air and lungs look like in MRI: a black square
               could pass for anatomy, a flat grey one cannot.

Flips are deliberately not offered: the orientation of a short-axis slice (RV left of the LV) is part
of what G must learn, and a random flip of the reals would leak into the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hcmbench.errors import HcmbenchError

TRANSLATION_RATIO = 1 / 8  # largest shift, as a fraction of the image side
TRANSLATION_FILL = -1.0  # black
CUTOUT_RATIO = 1 / 2  # side of the square, as a fraction of the image side
CUTOUT_FILL = 0.0  # mid-grey


def _draw(x: Tensor, rng: torch.Generator | None) -> Tensor:
    """One U(0, 1) number per image, shaped (B, 1, 1, 1) to broadcast, in x's dtype and on x's device."""
    device = rng.device if rng is not None else x.device
    return torch.rand(len(x), 1, 1, 1, generator=rng, device=device).to(x.device, x.dtype)


def _draw_int(x: Tensor, low: int, high: int, rng: torch.Generator | None) -> Tensor:
    """One integer in [low, high) per image, shaped (B, 1, 1), on x's device."""
    device = rng.device if rng is not None else x.device
    return torch.randint(low, high, (len(x), 1, 1), generator=rng, device=device).to(x.device)


def color(x: Tensor, rng: torch.Generator | None = None) -> Tensor:
    """Brightness shift in [−0.5, 0.5), then contrast scale in [0.5, 1.5) about each image's mean."""
    x = x + (_draw(x, rng) - 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_draw(x, rng) + 0.5) + mean


def translation(x: Tensor, rng: torch.Generator | None = None) -> Tensor:
    """Shift each image by whole pixels, up to S/8 along each axis, filling with black (−1)."""
    b, _, h, w = x.shape
    pad_h, pad_w = int(h * TRANSLATION_RATIO), int(w * TRANSLATION_RATIO)
    dy = _draw_int(x, -pad_h, pad_h + 1, rng)
    dx = _draw_int(x, -pad_w, pad_w + 1, rng)
    # out[i, j] = x[i − dy, j − dx], read from a copy padded with the fill value on every side.
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy + pad_h  # (B, H, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx + pad_w  # (B, 1, W)
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h), value=TRANSLATION_FILL)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # indexing puts C last


def cutout(x: Tensor, rng: torch.Generator | None = None) -> Tensor:
    """Set a square of side S/2, centred anywhere in the image, to mid-grey (0)."""
    _, _, h, w = x.shape
    side_h, side_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    top = _draw_int(x, 0, h, rng) - side_h // 2  # (B, 1, 1)
    left = _draw_int(x, 0, w, rng) - side_w // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + side_h) & (xs >= left) & (xs < left + side_w)  # (B, H, W)
    return torch.where(inside[:, None], torch.full_like(x, CUTOUT_FILL), x)


OPS: dict[str, Callable[[Tensor, torch.Generator | None], Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout}


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """The op names of a policy string, in order; "", "none" and None (YAML's empty value) give ().
    Unknown names raise HcmbenchError."""
    if policy is None:
        return ()
    if not isinstance(policy, str):
        raise HcmbenchError(f"an augmentation policy is a comma-separated string such as 'translation,cutout', "
                            f"got {policy!r}")
    names = tuple(name.strip().lower() for name in policy.split(",") if name.strip())
    if names == ("none",):
        return ()
    unknown = [name for name in names if name not in OPS]
    if unknown:
        raise HcmbenchError(f"unknown augmentation {unknown[0]!r} in policy {policy!r}: "
                            f"choose from {', '.join(OPS)} (comma-separated), or none")
    return names


def augment(x: Tensor, policy: str | Sequence[str] | None, rng: torch.Generator | None = None) -> Tensor:
    """Apply the policy's ops in order, each with fresh random parameters per image; differentiable in x.

    `policy` is a policy string or the tuple `parse_policy` made of one. An empty policy returns x itself.
    """
    for name in parse_policy(policy) if policy is None or isinstance(policy, str) else policy:
        x = OPS[name](x, rng)
    return x
