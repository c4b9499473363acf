"""Generative adversarial network (Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014).

The original fully connected pair. G is an MLP from z ~ N(0, I) through the hidden widths `hidden`
(default 256 → 512 → 1024, ReLU) to the S·S pixels with a tanh; D is an MLP from the pixels through
the same widths reversed (1024 → 512 → 256, LeakyReLU(0.2) and dropout) to one real/fake logit, so
that both nets have about the same capacity.

Training is the family's shared step (`adversarial.AdversarialModel`): one D step, then one G step
on the same fake batch (the paper's k = 1, without its second draw of z). Departures from the paper,
all standard since: the non-saturating generator loss −log D(G(z)) (which the paper itself
recommends, §3); LeakyReLU and dropout in D instead of maxout; Gaussian instead of uniform z; a tanh
output for images in [−1, 1]; the engine's one-sided label smoothing (Salimans et al. 2016) and lazy
R1 penalty on real images (Mescheder et al. 2018; Karras et al. 2020); differentiable augmentation
of D's inputs (DiffAugment, Zhao et al. 2020; `augment`), optional LeCam regularisation (Tseng et al.
2021; `lecam_weight`).

`mbstd` puts a minibatch standard-deviation layer (Karras et al. 2018) before D's output layer, on
the flattened features of its last hidden layer: one extra feature, the mean over the features of
their standard deviation within groups of 4 samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.adversarial import AdversarialModel
from hcmbench.models.base import Preset
from hcmbench.models.layers import MinibatchStd
from hcmbench.models.registry import register


def mlp_generator(latent_dim: int, hidden: Sequence[int], image_size: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip((latent_dim, *hidden), hidden):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU(True)]
    return nn.Sequential(*layers, nn.Linear(hidden[-1], image_size * image_size), nn.Tanh(),
                         nn.Unflatten(1, (1, image_size, image_size)))


def mlp_discriminator(image_size: int, hidden: Sequence[int], dropout: float, mbstd: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip((image_size * image_size, *hidden), hidden):
        layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.2, True), nn.Dropout(dropout)]
    if mbstd:
        layers.append(MinibatchStd())
    return nn.Sequential(*layers, nn.Linear(hidden[-1] + int(mbstd), 1), nn.Flatten(0))


@register("gan")
class GAN(AdversarialModel):
    """Fully connected GAN. `hidden` lists G's hidden widths (D uses them reversed); `dropout` is D's.

    `training_step` returns `d_loss`, `g_loss`, `gp` on the steps that compute R1 and `lecam` when
    it is on. Subclasses that only swap the two networks (the DCGAN) inherit the hooks: they set
    `generator`, `discriminator` and `latent_dim`.
    """

    conditional = False
    presets = {"cpu": Preset(
        "sized for 2 CPU cores: the paper's widths, 40 kimg at batch 32, validated every 2 kimg",
        train={"batch_size": 32, "kimg": 40, "tick_kimg": 2, "patience": 20})}

    def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 100,
                 hidden: tuple[int, ...] = (256, 512, 1024), dropout: float = 0.3, mbstd: bool = False,
                 augment: str = "none", r1_every: int = 16, lecam_weight: float = 0.0, gp_weight: float = 1.0,
                 label_smoothing: float = 0.1) -> None:
        super().__init__(augment=augment, r1_every=r1_every, lecam_weight=lecam_weight, mbstd=mbstd,
                         gp_weight=gp_weight, label_smoothing=label_smoothing)
        hidden = tuple(hidden)  # YAML gives lists
        if latent_dim < 1 or not hidden or min(hidden) < 1:
            raise HcmbenchError(f"latent_dim and the hidden widths must be positive, got {latent_dim} and {hidden}")
        if not 0 <= dropout < 1:
            raise HcmbenchError(f"dropout must be in [0, 1), got {dropout}")
        self.latent_dim = latent_dim
        self.generator = mlp_generator(latent_dim, hidden, image_size)
        self.discriminator = mlp_discriminator(image_size, hidden[::-1], dropout, mbstd)

    def generate(self, n: int, labels: Tensor | None = None, rng: torch.Generator | None = None,
                 **options: Any) -> tuple[Tensor, None]:
        """(G(z) for z ~ N(0, I), no context)."""
        z = torch.randn(n, self.latent_dim, generator=rng, device=self.device)
        return self.generator(z), None

    def discriminate(self, x: Tensor) -> tuple[Tensor, None]:
        """(D's logits (B,) in float32, no other outputs)."""
        return self.discriminator(x).float(), None
