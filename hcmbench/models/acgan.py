"""Auxiliary-classifier GAN (ACGAN).

Odena, Olah & Shlens, "Conditional Image Synthesis with Auxiliary Classifier GANs", ICML 2017.

The generator sees noise z and a class c; the discriminator answers two questions about an image: is
it real (the source, S) and which class is it (C). With

    Ls = E[log P(S=real | X_real)] + E[log P(S=fake | X_fake)]
    Lc = E[log P(C=c | X_real)]    + E[log P(C=c | X_fake)]

D maximises Ls + Lc and G maximises Lc − Ls. Here both are written as cross-entropies on logits:
D minimises BCE(source) + aux_weight · (CE(real classes) + CE(fake classes)) + gp_weight/2 · R1,
G minimises the non-saturating BCE(source of fakes → real) + aux_weight · CE(fake classes).

The networks are the shared DCGAN blocks of `layers.py`; the class enters G as a one-hot vector
concatenated with z, and D's body carries two 4×4 convolutional heads (source logit, class logits).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.base import Batch, GenerativeModel, register
from hcmbench.models.layers import (ConvDiscriminatorBody, ConvGenerator, dcgan_init_, discriminator_loss,
                                    generator_loss, r1_penalty, sample_distance)


class ACDiscriminator(nn.Module):
    """Image → (source logit (B,), class logits (B, num_classes)) from one shared conv body."""

    def __init__(self, image_size: int, width: int, norm: str, num_classes: int) -> None:
        super().__init__()
        self.body = ConvDiscriminatorBody(image_size, width, norm)
        self.source = nn.Conv2d(self.body.out_channels, 1, 4)
        self.classes = nn.Conv2d(self.body.out_channels, num_classes, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        # float32 logits: the losses stay exact under bf16 autocast.
        return self.source(h).flatten().float(), self.classes(h).flatten(1).float()


@register("acgan")
class ACGAN(GenerativeModel):
    """Class-conditional DCGAN with an auxiliary classifier in the discriminator.

    Fake images are drawn for the labels of the real batch, i.e. c ~ p_c as in the paper, with p_c the
    data's class distribution: the fake batch then has the real batch's class mix, so the source head
    cannot tell real from fake by class frequency, and no class without training images is asked for.
    """

    conditional = True

    def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 100, width: int = 64,
                 d_norm: str = "batch", aux_weight: float = 1.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise HcmbenchError(f"acgan needs num_classes >= 2 (its discriminator classifies), got {num_classes}")
        if d_norm not in ("batch", "instance", "none"):
            raise HcmbenchError(f"d_norm must be 'batch', 'instance' or 'none', got {d_norm!r}")
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.aux_weight = aux_weight
        # A learned class embedding concatenated with z would only be re-mixed linearly by G's first
        # (transposed) convolution, so a one-hot code is as expressive and has no extra parameters.
        self.generator = ConvGenerator(latent_dim + num_classes, image_size, width)
        self.discriminator = ACDiscriminator(image_size, width, d_norm, num_classes)
        dcgan_init_(self)

    def configure_optimizers(self, cfg) -> list[torch.optim.Optimizer]:
        """[discriminator Adam, generator Adam], both with cfg.lr and cfg.betas."""
        self.adopt_training_settings(cfg)
        adam = lambda m: torch.optim.Adam(m.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))  # noqa: E731
        return [adam(self.discriminator), adam(self.generator)]

    def generate(self, z: Tensor, labels: Tensor) -> Tensor:
        """G(z, c): noise (B, latent_dim) and integer classes (B,) → images (B, 1, S, S)."""
        return self.generator(torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1))

    def training_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
        """One discriminator update, then one generator update on the same fakes.

        Returns d_loss and g_loss (the source cross-entropies alone), aux (−Lc: D's class
        cross-entropy on reals plus on fakes) and gp (R1) when gp_weight > 0.
        """
        d_opt, g_opt = optimizers
        real, labels = (t.to(self.device) for t in batch)
        fake = self.generate(torch.randn(len(real), self.latent_dim, device=self.device), labels)

        real = real.detach().requires_grad_(self.gp_weight > 0)  # a new leaf: the caller's batch stays as it was
        real_src, real_cls = self.discriminator(real)
        fake_src, fake_cls = self.discriminator(fake.detach())
        d_adv = discriminator_loss(real_src, fake_src, self.label_smoothing)
        aux = F.cross_entropy(real_cls, labels) + F.cross_entropy(fake_cls, labels)
        d_total = d_adv + self.aux_weight * aux
        logs = {}
        if self.gp_weight > 0:
            gp = r1_penalty(real_src, real)
            d_total = d_total + self.gp_weight / 2 * gp
            logs["gp"] = gp.item()
        self.optimize(d_total, d_opt, self.discriminator.parameters())

        self.discriminator.requires_grad_(False)
        fake_src, fake_cls = self.discriminator(fake)
        g_adv = generator_loss(fake_src)
        g_total = g_adv + self.aux_weight * F.cross_entropy(fake_cls, labels)
        self.optimize(g_total, g_opt, self.generator.parameters())
        self.discriminator.requires_grad_(True)

        return {"d_loss": d_adv.item(), "g_loss": g_adv.item(), "aux": aux.item(), **logs}

    @torch.no_grad()
    def validation_score(self, val_batches: Iterable[Batch]) -> float:
        """Energy distance between 16×16-pooled samples (for the validation labels, fixed seed) and the
        validation images (`layers.sample_distance`); lower is better."""
        return sample_distance(self, val_batches)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """`n` images of the given classes (labels (n,) in 0..num_classes−1), in [-1, 1]. No options."""
        self.check_options(options)
        labels = self.check_labels(n, labels)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise HcmbenchError(f"labels must lie in 0..{self.num_classes - 1}")
        with self.evaluating():
            z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
            return self.generate(z, labels).float()
