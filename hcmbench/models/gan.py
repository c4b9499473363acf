"""Generative adversarial network (Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014).

The original fully connected pair. G is an MLP from z ~ N(0, I) through the hidden widths `hidden`
(default 256 → 512 → 1024, ReLU) to the S·S pixels with a tanh; D is an MLP from the pixels through
the same widths reversed (1024 → 512 → 256, LeakyReLU(0.2) and dropout) to one real/fake logit, so
that both nets have about the same capacity. One discriminator step, then one generator step on a
fresh z, per batch (the paper's k = 1).

Departures from the paper, all standard since: the non-saturating generator loss −log D(G(z)) (which
the paper itself recommends, §3); LeakyReLU and dropout in D instead of maxout; Gaussian instead of
uniform z; a tanh output for images in [−1, 1]; and the engine's GAN settings — one-sided label
smoothing (Salimans et al. 2016) and the R1 penalty on real images (Mescheder et al. 2018).

`adversarial_step` is that update for any generator/discriminator pair; the DCGAN reuses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.base import Batch, GenerativeModel, register
from hcmbench.models.layers import discriminator_loss, generator_loss, r1_penalty, sample_distance


def adversarial_step(model: GenerativeModel, generator: nn.Module, discriminator: nn.Module, real: Tensor,
                     optimizers: list[torch.optim.Optimizer], latent_dim: int) -> dict[str, float]:
    """One D step (cross-entropy with `model.label_smoothing`, plus `model.gp_weight / 2` · R1 when the
    weight is positive), then one G step with the non-saturating loss on a fresh z.

    `d_loss` is reported without the penalty, which is reported on its own as `gp`.
    """
    d_optimizer, g_optimizer = optimizers
    z = torch.randn(len(real), latent_dim, device=real.device)
    with torch.no_grad():
        fake = generator(z)
    real = real.detach().requires_grad_(model.gp_weight > 0)
    real_logits = discriminator(real)
    d_loss = discriminator_loss(real_logits.float(), discriminator(fake).float(), model.label_smoothing)
    logs = {"d_loss": d_loss.item()}
    if model.gp_weight > 0:
        gp = r1_penalty(real_logits.float(), real)
        d_loss = d_loss + model.gp_weight / 2 * gp
        logs["gp"] = gp.item()
    model.optimize(d_loss, d_optimizer, discriminator.parameters())

    z = torch.randn(len(real), latent_dim, device=real.device)
    g_loss = generator_loss(discriminator(generator(z)).float())
    model.optimize(g_loss, g_optimizer, generator.parameters())
    logs["g_loss"] = g_loss.item()
    return logs


def mlp_generator(latent_dim: int, hidden: Sequence[int], image_size: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip((latent_dim, *hidden), hidden):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU(True)]
    return nn.Sequential(*layers, nn.Linear(hidden[-1], image_size * image_size), nn.Tanh(),
                         nn.Unflatten(1, (1, image_size, image_size)))


def mlp_discriminator(image_size: int, hidden: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip((image_size * image_size, *hidden), hidden):
        layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.2, True), nn.Dropout(dropout)]
    return nn.Sequential(*layers, nn.Linear(hidden[-1], 1), nn.Flatten(0))


@register("gan")
class GAN(GenerativeModel):
    """Fully connected GAN. `hidden` lists G's hidden widths (D uses them reversed); `dropout` is D's.

    Subclasses that only swap the two networks (the DCGAN) inherit the optimisers, the adversarial
    step, the validation score and sampling: they set `generator`, `discriminator` and `latent_dim`.
    """

    conditional = False

    def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 100,
                 hidden: tuple[int, ...] = (256, 512, 1024), dropout: float = 0.3) -> None:
        super().__init__()
        hidden = tuple(hidden)  # YAML gives lists
        if latent_dim < 1 or not hidden or min(hidden) < 1:
            raise HcmbenchError(f"latent_dim and the hidden widths must be positive, got {latent_dim} and {hidden}")
        if not 0 <= dropout < 1:
            raise HcmbenchError(f"dropout must be in [0, 1), got {dropout}")
        self.latent_dim = latent_dim
        self.generator = mlp_generator(latent_dim, hidden, image_size)
        self.discriminator = mlp_discriminator(image_size, hidden[::-1], dropout)

    def configure_optimizers(self, cfg: Any) -> list[torch.optim.Optimizer]:
        """Adam for D, then Adam for G, both with `cfg.lr` and `cfg.betas`."""
        self.adopt_training_settings(cfg)
        return [torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
                for net in (self.discriminator, self.generator)]

    def training_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
        return adversarial_step(self, self.generator, self.discriminator, batch[0].to(self.device),
                                optimizers, self.latent_dim)

    @torch.no_grad()
    def validation_score(self, val_batches: Iterable[Batch]) -> float:
        """Energy distance between as many samples (seed 0) as validation images and those images,
        both average-pooled to 16×16 pixels (`layers.sample_distance`). Lower is better."""
        return sample_distance(self, val_batches)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """G(z) for z ~ N(0, I), in eval mode: (n, 1, S, S) in [-1, 1]."""
        self.check_labels(n, labels)
        self.check_options(options)
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        with self.evaluating():
            return self.generator(z).float()
