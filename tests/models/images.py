"""Test images shared by the model tests."""

from __future__ import annotations

import torch

SEED = 0


def disks(n: int = 16, size: int = 32, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright disks of jittered centre and radius on a dark background, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = (size / 2 + 2 * torch.randn(2, n, 1, 1, generator=g)).unbind()
    radius = size / 4 + 3 * torch.rand(n, 1, 1, generator=g)
    images = torch.where((xx - cx) ** 2 + (yy - cy) ** 2 < radius**2, 0.6, -0.8)
    images = images + 0.05 * torch.randn(images.shape, generator=g)
    return images.clamp(-1, 1)[:, None], torch.zeros(n, dtype=torch.long)
