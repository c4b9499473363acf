"""Auxiliary-classifier GAN (ACGAN).

Odena, Olah & Shlens, "Conditional Image Synthesis with Auxiliary Classifier GANs", ICML 2017.

The generator sees noise z and a class c; the discriminator answers two questions about an image: is
it real (the source, S) and which class is it (C). With

    Ls = E[log P(S=real | X_real)] + E[log P(S=fake | X_fake)]
    Lc = E[log P(C=c | X_real)]    + E[log P(C=c | X_fake)]

D maximises Ls + Lc and G maximises Lc − Ls. Here both are written as cross-entropies on logits:
D minimises BCE(source) + aux_weight · (CE(real classes) + CE(fake classes)),
G minimises the non-saturating BCE(source of fakes → real) + aux_weight · CE(fake classes).

Training is the family's shared step (`adversarial.AdversarialModel`), which adds the engine's
one-sided label smoothing and lazy R1 penalty to D's loss, augments every image D sees (DiffAugment,
Zhao et al. 2020; `augment`; both heads see the augmented images), optionally adds LeCam
regularisation (Tseng et al. 2021; `lecam_weight`), and runs the G step on the same fakes as the D step.

The networks are the shared DCGAN blocks of `layers.py`; the class enters G as a one-hot vector
concatenated with z, and D's body carries two 4×4 convolutional heads (source logit, class logits).
`mbstd` adds a minibatch standard-deviation channel (Karras et al. 2018) to the features both heads read.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.adversarial import CONV_CPU_PRESET, AdversarialModel
from hcmbench.models.layers import ConvDiscriminatorBody, ConvGenerator, dcgan_init_
from hcmbench.models.registry import register


class ACDiscriminator(nn.Module):
    """Image → (source logit (B,), class logits (B, num_classes)) from one shared conv body."""

    def __init__(self, image_size: int, width: int, norm: str, num_classes: int, mbstd: bool = False) -> None:
        super().__init__()
        self.body = ConvDiscriminatorBody(image_size, width, norm, mbstd)
        self.source = nn.Conv2d(self.body.out_channels, 1, 4)
        self.classes = nn.Conv2d(self.body.out_channels, num_classes, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        # float32 logits: the losses stay exact under bf16 autocast.
        return self.source(h).flatten().float(), self.classes(h).flatten(1).float()


@register("acgan")
class ACGAN(AdversarialModel):
    """Class-conditional DCGAN with an auxiliary classifier in the discriminator.

    `training_step` returns `d_loss`, `g_loss` (the source cross-entropies alone), `aux` (−Lc: D's
    class cross-entropy on reals plus on fakes, unweighted), `gp` on the steps that compute R1 and
    `lecam` when it is on.

    Fake images are drawn for the labels of the real batch, i.e. c ~ p_c as in the paper, with p_c the
    data's class distribution: the fake batch then has the real batch's class mix, so the source head
    cannot tell real from fake by class frequency, and no class without training images is asked for.
    """

    conditional = True
    presets = {"cpu": CONV_CPU_PRESET}

    def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 100, width: int = 64,
                 d_norm: str = "batch", aux_weight: float = 1.0, mbstd: bool = False,
                 augment: str = "none", r1_every: int = 16, lecam_weight: float = 0.0, gp_weight: float = 1.0,
                 label_smoothing: float = 0.1) -> None:
        super().__init__(augment=augment, r1_every=r1_every, lecam_weight=lecam_weight, mbstd=mbstd,
                         gp_weight=gp_weight, label_smoothing=label_smoothing)
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
        self.discriminator = ACDiscriminator(image_size, width, d_norm, num_classes, mbstd)
        dcgan_init_(self)

    def generate(self, n: int, labels: Tensor | None = None, rng: torch.Generator | None = None,
                 **options: Any) -> tuple[Tensor, Tensor]:
        """(G(z, c) for z ~ N(0, I) and the classes c = `labels` (n,), those labels)."""
        z = torch.randn(n, self.latent_dim, generator=rng, device=self.device)
        return self.generator(torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)), labels

    def discriminate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(source logits (B,), class logits (B, num_classes)), both float32."""
        return self.discriminator(x)

    def d_extra_loss(self, real_aux: Tensor, fake_aux: Tensor, labels: Tensor,
                     context: Tensor) -> tuple[Tensor, dict[str, float]]:
        """aux_weight · (CE(real class logits, labels) + CE(fake class logits, the fakes' classes))."""
        aux = F.cross_entropy(real_aux, labels) + F.cross_entropy(fake_aux, context)
        return self.aux_weight * aux, {"aux": aux.item()}

    def g_extra_loss(self, fake_aux: Tensor, context: Tensor) -> tuple[Tensor, dict[str, float]]:
        """aux_weight · CE(fake class logits, the classes G was asked for)."""
        return self.aux_weight * F.cross_entropy(fake_aux, context), {}
