"""InfoGAN: a GAN whose latent codes are made readable from the images it generates.

Chen, Duan, Houthooft, Schulman, Sutskever & Abbeel, "InfoGAN: Interpretable Representation Learning
by Information Maximizing Generative Adversarial Nets", NeurIPS 2016.

G's input is noise z, one categorical code c (n_categories values, uniform) and n_continuous codes
uniform in [−1, 1]. An auxiliary network Q, sharing D's convolutional body, predicts the codes from an
image; the variational lower bound of the mutual information I(c; G(z, c)) is maximised by minimising

    info = CE(Q's category logits, c) + MSE(Q's continuous means, c_cont)

(the MSE is the negative log-likelihood of a unit-variance Gaussian up to a factor ½ and a constant).
G and Q minimise  generator_loss + info_weight · info;  D minimises the cross-entropy GAN loss with
one-sided label smoothing and R1. The model ignores the data labels (`conditional = False`).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.base import Batch, GenerativeModel, register
from hcmbench.models.layers import (ConvDiscriminatorBody, ConvGenerator, dcgan_init_, discriminator_loss,
                                    generator_loss, r1_penalty, sample_distance)


class QHead(nn.Module):
    """Shared features (B, C, 4, 4) → (category logits (B, n_categories), continuous means (B, n_continuous))."""

    def __init__(self, in_channels: int, n_categories: int, n_continuous: int, hidden: int = 128) -> None:
        super().__init__()
        self.n_categories = n_categories
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 4), nn.LeakyReLU(0.2, True),
                                 nn.Conv2d(hidden, n_categories + n_continuous, 1))

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(h).flatten(1).float()
        return out[:, :self.n_categories], out[:, self.n_categories:]


@register("infogan")
class InfoGAN(GenerativeModel):
    """DCGAN generator and discriminator plus a Q head on the discriminator's body.

    Parameter ownership: D's optimiser holds the shared body and the real/fake head and sees only the
    adversarial loss (and R1); G's optimiser holds the generator and the Q head and sees generator_loss
    + info_weight · info. The info loss thus trains Q's own layers and G, and its gradient passes
    through the body to G without changing the body: the body learns only to tell real from fake.
    """

    conditional = False
    sample_options = ("category",)

    def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 62, n_categories: int = 4,
                 n_continuous: int = 2, width: int = 64, d_norm: str = "batch", info_weight: float = 1.0) -> None:
        super().__init__()
        if n_categories < 2:
            raise HcmbenchError(f"n_categories must be at least 2, got {n_categories}")
        if n_continuous < 0:
            raise HcmbenchError(f"n_continuous must be non-negative, got {n_continuous}")
        if d_norm not in ("batch", "instance", "none"):
            raise HcmbenchError(f"d_norm must be 'batch', 'instance' or 'none', got {d_norm!r}")
        self.latent_dim, self.n_categories, self.n_continuous = latent_dim, n_categories, n_continuous
        self.info_weight = info_weight
        self.generator = ConvGenerator(latent_dim + n_categories + n_continuous, image_size, width)
        self.body = ConvDiscriminatorBody(image_size, width, d_norm)
        self.d_head = nn.Conv2d(self.body.out_channels, 1, 4)
        self.q_head = QHead(self.body.out_channels, n_categories, n_continuous)
        dcgan_init_(self)

    def configure_optimizers(self, cfg) -> list[torch.optim.Optimizer]:
        """[Adam over body + real/fake head, Adam over generator + Q head], with cfg.lr and cfg.betas."""
        self.adopt_training_settings(cfg)
        adam = lambda params: torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))  # noqa: E731
        return [adam(self._d_params()), adam(self._g_params())]

    def _d_params(self) -> list[nn.Parameter]:
        return [*self.body.parameters(), *self.d_head.parameters()]

    def _g_params(self) -> list[nn.Parameter]:
        return [*self.generator.parameters(), *self.q_head.parameters()]

    def codes(self, n: int, generator: torch.Generator | None = None,
              category: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """G's input: (latent (n, latent_dim + n_categories + n_continuous), category (n,), continuous codes).

        The category is drawn last, so the same generator state gives the same z and continuous codes
        whatever `category` is fixed to.
        """
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        cont = torch.rand(n, self.n_continuous, generator=generator, device=self.device) * 2 - 1
        if category is None:
            cat = torch.randint(self.n_categories, (n,), generator=generator, device=self.device)
        else:
            cat = torch.full((n,), category, dtype=torch.long, device=self.device)
        latent = torch.cat([z, F.one_hot(cat, self.n_categories).to(z.dtype), cont], dim=1)
        return latent, cat, cont

    def discriminate(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Image → (real/fake logit (B,), Q's category logits, Q's continuous means), all float32."""
        h = self.body(x)
        return (self.d_head(h).flatten().float(), *self.q_head(h))

    def info_loss(self, cat_logits: Tensor, cont_means: Tensor, cat: Tensor, cont: Tensor) -> Tensor:
        """CE of the categorical code + MSE of the continuous codes (a fixed-variance Gaussian)."""
        loss = F.cross_entropy(cat_logits, cat)
        if self.n_continuous:
            loss = loss + F.mse_loss(cont_means, cont.float())
        return loss

    def training_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
        """One D update, then one G + Q update on the same fakes.

        Returns d_loss and g_loss (the adversarial cross-entropies alone), info (Q's code loss on the
        fakes, before the update) and gp (R1) when gp_weight > 0.
        """
        d_opt, g_opt = optimizers
        real = batch[0].to(self.device).detach().requires_grad_(self.gp_weight > 0)
        latent, cat, cont = self.codes(len(real))
        fake = self.generator(latent)

        real_logit = self.d_head(self.body(real)).flatten().float()
        fake_logit = self.d_head(self.body(fake.detach())).flatten().float()
        d_loss = discriminator_loss(real_logit, fake_logit, self.label_smoothing)
        d_total, logs = d_loss, {}
        if self.gp_weight > 0:
            gp = r1_penalty(real_logit, real)
            d_total = d_total + self.gp_weight / 2 * gp
            logs["gp"] = gp.item()
        self.optimize(d_total, d_opt, self._d_params())

        self.body.requires_grad_(False)
        self.d_head.requires_grad_(False)
        fake_logit, cat_logits, cont_means = self.discriminate(fake)
        g_loss = generator_loss(fake_logit)
        info = self.info_loss(cat_logits, cont_means, cat, cont)
        self.optimize(g_loss + self.info_weight * info, g_opt, self._g_params())
        self.body.requires_grad_(True)
        self.d_head.requires_grad_(True)

        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "info": info.item(), **logs}

    @torch.no_grad()
    def validation_score(self, val_batches: Iterable[Batch]) -> float:
        """Energy distance between 16×16-pooled samples (fixed seed, random codes) and the validation
        images (`layers.sample_distance`); lower is better."""
        return sample_distance(self, val_batches)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               category: int | None = None, **options: Any) -> Tensor:
        """`n` images in [-1, 1]; `category` fixes the categorical code (0..n_categories−1) for all."""
        self.check_options(options)
        self.check_labels(n, labels)
        if category is not None:
            if isinstance(category, bool) or not isinstance(category, numbers.Integral) \
                    or not 0 <= category < self.n_categories:
                raise HcmbenchError(f"category must be an integer in 0..{self.n_categories - 1}, got {category!r}")
            category = int(category)
        with self.evaluating():
            return self.generator(self.codes(n, generator, category)[0]).float()
