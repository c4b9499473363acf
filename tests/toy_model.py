"""A tiny deterministic model registered as "toy", for testing the engine without a real generator."""

from __future__ import annotations

import time

import torch
from torch import nn

from hcmbench.models.base import GenerativeModel, Preset
from hcmbench.models.registry import register


@register("toy")
class ToyModel(GenerativeModel):
    """Learns a mean image (per class when `per_class`); samples are that mean plus seeded noise.

    `nan_after` > 0 makes the loss NaN from that training step on, to test divergence handling;
    `step_seconds` > 0 makes each training step take that long, so that a test can act mid-trial.
    """

    presets = {"cpu": Preset("a quick toy", model={"noise": 0.05},
                             train={"batch_size": 8, "lr": 0.05, "kimg": 50, "tick_kimg": 0.02})}

    def __init__(self, image_size: int = 32, num_classes: int = 0, per_class: bool = False, nan_after: int = 0,
                 noise: float = 0.1, step_seconds: float = 0.0) -> None:
        super().__init__()
        self.conditional = per_class and num_classes > 1
        self.means = nn.Parameter(torch.zeros(max(1, num_classes) if self.conditional else 1, 1, image_size, image_size))
        self.norm = nn.BatchNorm2d(1)  # a buffer-carrying layer, as real models have
        self.nan_after, self.noise, self.steps, self.step_seconds = nan_after, noise, 0, step_seconds

    def _mean(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        return self.means[labels] if self.conditional else self.means.expand(n, -1, -1, -1)

    def training_step(self, batch, optimizers):
        images, labels = batch
        self.steps += 1
        if self.step_seconds:
            time.sleep(self.step_seconds)
        loss = (self.norm(images) * 0 + images - self._mean(labels, len(images))).pow(2).mean()
        self.optimize(loss, optimizers[0])
        value = loss.item()
        return {"mse": float("nan") if self.nan_after and self.steps >= self.nan_after else value}

    def validation_score(self, val_batches):
        total = [((x - self._mean(y, len(x))) ** 2).mean() for x, y in val_batches]
        return float(torch.stack(total).mean())

    def sample(self, n, labels=None, rng=None, **options):
        labels = self.check_labels(n, labels)
        noise = torch.randn(n, 1, *self.means.shape[-2:], generator=rng, device=self.device)
        return (self._mean(labels, n) + self.noise * noise).clamp(-1, 1)
