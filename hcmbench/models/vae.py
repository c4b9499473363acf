"""Variational autoencoder (Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014).

An encoder q(z|x) = N(μ(x), diag σ²(x)) of strided convolutions and a decoder of fractional-strided
convolutions with a linear output (the likelihood's mean; samples are clipped to [−1, 1]), trained on the evidence lower bound (ELBO) with the
reparameterisation trick z = μ + σ·ε, ε ~ N(0, I). The KL term carries a weight β (Higgins et al.
2017's β-VAE); β = 1 is the plain ELBO. Samples decode z ~ N(0, I).

The likelihood p(x|z) is a Gaussian with mean decoder(z) and a fixed variance σ² = 1/2 on every
pixel, so its negative log-likelihood is, up to the constant (D/2)·log π over D pixels, the summed
squared error `recon` = Σ (x − x̂)². A fixed σ and β are one knob (dividing the squared error by 2σ²
is the same as multiplying the KL by 2σ²), so σ is fixed at the value that makes `recon` the
plain summed squared error — the usual convolutional VAE — and β is the setting that trades
sharpness (small β) for a smoother latent space (large β).

The encoder and decoder are the shared DCGAN-style blocks of layers.py (BatchNorm, LeakyReLU in the
encoder, ReLU in the decoder), with a linear layer from the encoder's 4×4 features to (μ, log σ²).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.base import Batch, GenerativeModel, Preset
from hcmbench.models.layers import ConvDiscriminatorBody, ConvGenerator
from hcmbench.models.registry import register


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per sample, summed over latent dimensions, in float32: (B,)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def squared_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """Σ over pixels of (x − x̂)², in float32: the Gaussian NLL with σ² = 1/2 up to a constant. (B,)"""
    return (x.float() - x_hat.float()).pow(2).flatten(1).sum(1)


@register("vae")
class VAE(GenerativeModel):
    """Convolutional VAE; `training_step` returns `recon`, `kl` (batch means) and `loss` = recon + β·kl."""

    conditional = False
    presets = {"cpu": Preset(
        "sized for 2 CPU cores: width 32, 40 kimg at batch 32, validated every 2 kimg",
        model={"width": 32}, train={"batch_size": 32, "kimg": 40, "tick_kimg": 2, "patience": 20})}

    def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 128, width: int = 32,
                 beta: float = 1.0) -> None:
        super().__init__()
        if latent_dim < 1 or width < 1:
            raise HcmbenchError(f"latent_dim and width must be positive, got {latent_dim} and {width}")
        if beta < 0:
            raise HcmbenchError(f"beta must be non-negative, got {beta}")
        self.latent_dim, self.beta = latent_dim, float(beta)
        self.encoder = ConvDiscriminatorBody(image_size, width, norm="batch")
        self.to_posterior = nn.Linear(self.encoder.out_channels * 4 * 4, 2 * latent_dim)
        self.decoder = ConvGenerator(latent_dim, image_size, width, tanh=False)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's mean and log-variance, each (B, latent_dim), in float32."""
        mu, logvar = self.to_posterior(self.encoder(x).flatten(1)).float().chunk(2, dim=1)
        return mu, logvar

    def elbo_terms(self, x: Tensor, rng: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Per-image reconstruction term and KL, each (B,), from one reparameterised posterior sample."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=rng, device=mu.device)
        x_hat = self.decoder(mu + (0.5 * logvar).exp() * eps)
        return squared_error(x, x_hat), gaussian_kl(mu, logvar)

    def training_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
        recon, kl = self.elbo_terms(batch[0].to(self.device))
        recon, kl = recon.mean(), kl.mean()
        loss = recon + self.beta * kl
        self.optimize(loss, optimizers[0])
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

    @torch.no_grad()
    def validation_score(self, val_batches: Iterable[Batch], seed: int = 0) -> float:
        """Negative ELBO with β = 1 per validation image: mean of `recon` + `kl` (nats, without the
        likelihood's constant (D/2)·log π), in eval mode.

        Each image's ELBO is estimated from one posterior sample drawn with a generator seeded by
        `seed`: an unbiased estimate of the ELBO (the posterior mean alone would not be one), and
        deterministic, so the score changes only when the model does.
        """
        rng = torch.Generator(device=self.device).manual_seed(seed)
        total, count = 0.0, 0
        with self.evaluating():
            for images, _ in val_batches:
                recon, kl = self.elbo_terms(images.to(self.device), rng)
                total += float((recon + kl).sum())
                count += len(images)
        if count == 0:
            raise HcmbenchError("the validation split is empty: the VAE's score needs at least one image")
        return total / count

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, rng: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Decode z ~ N(0, I) in eval mode (BatchNorm running statistics), clipped: (n, 1, S, S) in [-1, 1]."""
        self.check_labels(n, labels)
        self.check_options(options)
        z = torch.randn(n, self.latent_dim, generator=rng, device=self.device)
        with self.evaluating():
            return self.decoder(z).float().clamp(-1, 1)
