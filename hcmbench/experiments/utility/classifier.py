"""The downstream model: a small CNN that classifies single slices, its augmentation, and its own short
training loop (a classifier, not a generator: the engine is not used)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.experiments.utility.design import UtilityConfig

# Classic augmentation: each flip with probability 1/2, rotation, gain and offset drawn uniformly.
ROTATION_DEG = 10.0
GAIN = (0.9, 1.1)
OFFSET = 0.05


class SliceClassifier(nn.Module):
    """Three conv blocks (3×3 conv, BatchNorm, ReLU, 2×2 max-pool), global average pool, linear.

    Small on purpose: the question is whether added data helps a model that scarce data limits.
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # a plain mean, not AdaptiveAvgPool2d, whose CUDA backward is not deterministic
        return self.head(self.features(x).mean(dim=(2, 3)))


def augment(x: Tensor, rng: torch.Generator) -> Tensor:
    """Classic augmentation of a batch (B, 1, S, S) in [0, 1]: random horizontal and vertical flips,
    a rotation of up to ±10° (bilinear, zero outside), gain 0.9–1.1 and offset ±0.05, clamped to [0, 1].
    The random draws come from the CPU `generator`, so a seed fixes them on any device."""
    n = len(x)
    flips = torch.randint(0, 2, (2, n), generator=rng).float() * -2 + 1  # ±1 per axis
    angle = torch.deg2rad((torch.rand(n, generator=rng) * 2 - 1) * ROTATION_DEG)
    gain = GAIN[0] + (GAIN[1] - GAIN[0]) * torch.rand(n, generator=rng)
    offset = (torch.rand(n, generator=rng) * 2 - 1) * OFFSET
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros(n)
    # output → input coordinates: rotation after a flip of each axis (x: columns, y: rows)
    theta = torch.stack([torch.stack([cos * flips[0], -sin * flips[1], zero], 1),
                         torch.stack([sin * flips[0], cos * flips[1], zero], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out * gain.to(x)[:, None, None, None] + offset.to(x)[:, None, None, None]).clamp(0.0, 1.0)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse class frequency, scaled so that a balanced set has weight 1 (0 for absent classes)."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, config: UtilityConfig,
                     seed: int, augmentation: bool = False, device: torch.device | str = "cpu") -> SliceClassifier:
    """Fit a SliceClassifier on images (N, S, S) in [0, 1] with integer labels: Adam, class-weighted
    cross-entropy, `config.epochs` epochs of seeded shuffles (and augmentation). The same seed gives the
    same weights on the same machine; the caller's global RNG state is left alone.

    BatchNorm statistics are recomputed over the (unaugmented) training set at the end, so that few
    training steps do not leave the evaluation-mode statistics stale.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SliceClassifier(num_classes)
    model.to(device).train()
    order_rng, augment_rng = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1).to(device)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    weight = torch.tensor(class_weights(np.asarray(labels), num_classes), dtype=torch.float32, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    cudnn = torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True)
    with cudnn:
        for _ in range(config.epochs):
            order = torch.randperm(len(x), generator=order_rng).to(device)
            for start in range(0, len(order), config.batch_size):
                idx = order[start:start + config.batch_size]
                batch = augment(x[idx], augment_rng) if augmentation else x[idx]
                loss = F.cross_entropy(model(batch), y[idx], weight=weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        _recompute_batchnorm(model, x, config.batch_size)
    return model.eval()


@torch.no_grad()
def _recompute_batchnorm(model: nn.Module, x: Tensor, batch_size: int) -> None:
    """Replace BatchNorm running statistics with their exact average over `x` (one pass, train mode)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for start in range(0, len(x), batch_size):
        model(x[start:start + batch_size])


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, device: torch.device | str = "cpu",
            batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, C) of images (N, S, S) in [0, 1]."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    out = [F.softmax(model(x[i:i + batch_size].to(device)), dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy()
