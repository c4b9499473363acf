"""Blocks and losses shared by several models: DCGAN-style conv nets, GAN losses, a sample distance."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError


def dcgan_init_(module: nn.Module, std: float = 0.02) -> None:
    """Radford et al.'s initialisation: conv weights N(0, 0.02); norm scales N(1, 0.02), shifts 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def _num_doublings(image_size: int) -> int:
    levels = math.log2(image_size / 4)
    if levels != int(levels) or levels < 1:
        raise ValueError(f"image_size must be 4·2^k (32, 64, 128), got {image_size}")
    return int(levels)


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', got {kind!r}")


class ConvGenerator(nn.Module):
    """DCGAN generator: a vector (B, in_dim) → image (B, 1, S, S) in [-1, 1].

    Fractional-strided convolutions from 4×4 up to S, BatchNorm and ReLU between them, tanh at the
    end; no pooling and no fully connected hidden layer. Channels halve at each doubling and end at
    `width` before the output layer. `tanh=False` leaves the output linear (the VAE's Gaussian mean,
    where a saturated tanh pixel would get no gradient and stay stuck).
    """

    def __init__(self, in_dim: int, image_size: int = 64, width: int = 64, tanh: bool = True) -> None:
        super().__init__()
        ups = _num_doublings(image_size)
        channels = width * 2 ** (ups - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, channels, 4, 1, 0, bias=False), nn.BatchNorm2d(channels), nn.ReLU(True)]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(channels // 2), nn.ReLU(True)]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, 1, 4, 2, 1)] + ([nn.Tanh()] if tanh else [])
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (Karras et al., "Progressive Growing of GANs", ICLR 2018, §3).

    Splits the batch into groups of `group_size` samples, takes the standard deviation of every
    feature over each group, averages it over the features, and appends that one number per group as
    an extra channel (a constant map for (B, C, H, W), one feature for (B, C)). D can then see the
    diversity of a batch, which penalises a generator that collapses onto few modes. Like BatchNorm it
    makes a logit depend on other samples of the batch, the R1 penalty included.

    The group size is the largest divisor of the batch size not above `group_size` (4: the whole batch
    when smaller, groups of 3 for a batch of 6), or the whole batch where that divisor is 1 (a batch of
    5 or 7, as the last batch of an epoch may be). The variance is the unbiased one, so that the
    statistic does not shrink with the group size; a batch of one image gets 0.
    """

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        g = max(d for d in range(1, min(self.group_size, b) + 1) if b % d == 0)
        g = b if g == 1 else g
        grouped = x.float().reshape(g, b // g, *x.shape[1:])  # sample i is in group i mod (b / g)
        std = (grouped.var(dim=0, unbiased=g > 1) + 1e-8).sqrt().flatten(1).mean(1)  # (b / g,)
        feature = std.repeat(g).to(x.dtype).view(b, 1, *[1] * (x.dim() - 2))
        return torch.cat([x, feature.expand(b, 1, *x.shape[2:])], dim=1)


class ConvDiscriminatorBody(nn.Module):
    """DCGAN discriminator without its output layer: image (B, 1, S, S) → features (B, C, 4, 4).

    Strided convolutions, LeakyReLU(0.2), normalisation on all but the first layer; with `mbstd`, a
    `MinibatchStd` layer at the end adds one channel. `out_channels` is C (that channel included),
    for the heads that models put on top (real/fake logit, class logits, latent codes).
    """

    def __init__(self, image_size: int = 64, width: int = 64, norm: str = "batch", mbstd: bool = False) -> None:
        super().__init__()
        downs = _num_doublings(image_size)
        layers: list[nn.Module] = [nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        channels = width
        for _ in range(downs - 1):
            layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=norm == "none"),
                       _norm2d(norm, channels * 2), nn.LeakyReLU(0.2, True)]
            channels *= 2
        if mbstd:  # no parameters: the state_dict keys stay those of the plain body
            layers.append(MinibatchStd())
            channels += 1
        self.net = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    """Energy distance between two samples of vectors: 2E|x−y| − E|x−x'| − E|y−y'| (≥ 0, 0 iff equal)."""
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return 2 * xy - xx - yy


@torch.no_grad()
def sample_distance(model, val_batches: Iterable[tuple[Tensor, Tensor]], seed: int = 0, pooled_size: int = 16) -> float:
    """Energy distance between as many samples as validation images and those images.

    Images are average-pooled to `pooled_size`² pixels first, so that the distance reflects layout and
    contrast rather than pixel noise. Sampling uses a fixed seed (and the validation labels for
    conditional models), so the score changes only when the model does. Lower is better.
    """
    batches = list(val_batches)
    if not batches or sum(len(images) for images, _ in batches) == 0:
        raise HcmbenchError("the validation split is empty: a sample-based validation score needs real images")
    images, labels = zip(*batches)
    real = torch.cat(images).to(model.device).float()
    label = torch.cat(labels).to(model.device) if model.conditional else None
    rng = torch.Generator(device=model.device).manual_seed(seed)
    fake = model.sample(len(real), label, rng=rng).float()
    pool = real.shape[-1] // pooled_size
    flat = lambda t: F.avg_pool2d(t, pool).flatten(1) if pool > 1 else t.flatten(1)  # noqa: E731
    return float(energy_distance(flat(real), flat(fake)))
