"""Deep convolutional GAN (Radford et al., "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks", ICLR 2016).

G: z ~ N(0, I) through fractional-strided convolutions from 4×4 up to S×S, BatchNorm and ReLU, tanh
output. D: strided convolutions with LeakyReLU(0.2), normalisation on all but the first layer, and a
final 4×4 convolution to one logit. No pooling, no fully connected hidden layers, weights drawn from
N(0, 0.02) (`layers.ConvGenerator`, `layers.ConvDiscriminatorBody`, `layers.dcgan_init_`). `width`
is the channel count of G's last and D's first hidden layer; it doubles at each step towards 4×4.

Training is the GAN's (`gan.adversarial_step`): one D step, then one G step on a fresh z, the
non-saturating loss, one-sided label smoothing and the R1 penalty from the engine's settings.

`d_norm` is D's normalisation: "batch" as in the paper, "instance" or "none". With a gradient
penalty (the engine's `gp_weight` > 0), "instance" or "none" is the principled choice: BatchNorm makes
each logit depend on the whole batch, so the R1 penalty no longer measures the gradient of D(x) with
respect to its own x alone but mixes in the other samples' (Gulrajani et al. 2017 drop BatchNorm in
the critic for this reason).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.base import Batch, GenerativeModel, register
from hcmbench.models.gan import adversarial_step
from hcmbench.models.layers import ConvDiscriminatorBody, ConvGenerator, dcgan_init_, sample_distance

D_NORMS = ("batch", "instance", "none")


@register("dcgan")
class DCGAN(GenerativeModel):
    """DCGAN; `training_step` returns `d_loss`, `g_loss` and, when the R1 weight is positive, `gp`."""

    conditional = False

    def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 100, width: int = 64,
                 d_norm: str = "batch") -> None:
        super().__init__()
        if latent_dim < 1 or width < 1:
            raise HcmbenchError(f"latent_dim and width must be positive, got {latent_dim} and {width}")
        if d_norm not in D_NORMS:
            raise HcmbenchError(f"d_norm must be one of {', '.join(D_NORMS)}, got {d_norm!r}")
        self.latent_dim = latent_dim
        self.generator = ConvGenerator(latent_dim, image_size, width)
        body = ConvDiscriminatorBody(image_size, width, norm=d_norm)
        self.discriminator = nn.Sequential(body, nn.Conv2d(body.out_channels, 1, 4, 1, 0), nn.Flatten(0))
        dcgan_init_(self)

    def configure_optimizers(self, cfg: Any) -> list[torch.optim.Optimizer]:
        """Adam for D, then Adam for G, both with `cfg.lr` and `cfg.betas` (the paper's 2e-4, β1 = 0.5)."""
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
        """G(z) for z ~ N(0, I) in eval mode (BatchNorm running statistics): (n, 1, S, S) in [-1, 1]."""
        self.check_labels(n, labels)
        if options:
            raise HcmbenchError(f"the DCGAN takes no sample options, got {', '.join(sorted(options))}")
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        was_training = self.training
        self.eval()
        try:
            return self.generator(z).float()
        finally:
            self.train(was_training)
