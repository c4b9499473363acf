"""The adversarial losses of the GAN family and the R1 penalty (the other models' losses are their own:
the VAE's ELBO, the DDPM's weighted MSE, InfoGAN's information term)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Binary cross-entropy on logits for D, with one-sided label smoothing (real target 1 − s)."""
    real_target = torch.full_like(real_logits, 1.0 - label_smoothing)
    return (F.binary_cross_entropy_with_logits(real_logits, real_target)
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: Tensor) -> Tensor:
    """The non-saturating generator loss: −log D(G(z)), as binary cross-entropy on logits."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """R1 gradient penalty (Mescheder et al. 2018): mean squared norm of ∂D/∂x on real images.

    `real_images` must have had `requires_grad_()` before D saw them. Chosen over WGAN-GP's
    interpolate penalty because hcmbench's GANs use the cross-entropy loss, for which R1 is the
    analysed regulariser; weight it by `gp_weight / 2`.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
