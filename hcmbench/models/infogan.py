"""InfoGAN: a GAN whose latent codes are made readable from the images it generates.

Chen, Duan, Houthooft, Schulman, Sutskever & Abbeel, "InfoGAN: Interpretable Representation Learning
by Information Maximizing Generative Adversarial Nets", NeurIPS 2016.

G's input is noise z, one categorical code c (n_categories values, uniform) and n_continuous codes
uniform in [−1, 1]. An auxiliary network Q, sharing D's convolutional body, predicts the codes from an
image; the variational lower bound of the mutual information I(c; G(z, c)) is maximised by minimising

    info = CE(Q's category logits, c) + MSE(Q's continuous means, c_cont)

(the MSE is the negative log-likelihood of a unit-variance Gaussian up to a factor ½ and a constant).
G and Q minimise  generator_loss + info_weight · info;  D minimises the cross-entropy GAN loss.

Training is the family's shared step (`adversarial.AdversarialModel`): D's loss takes the engine's
one-sided label smoothing and lazy R1 penalty and, optionally, LeCam regularisation (Tseng et al.
2021; `lecam_weight`); every image D and Q see is augmented (DiffAugment, Zhao et al. 2020;
`augment`), so Q reads the codes from augmented fakes; the G + Q step uses the same fakes as the D
step. `mbstd` adds a minibatch standard-deviation channel (Karras et al. 2018) to the body's features,
read by both heads. The model ignores the data labels (`conditional = False`).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.adversarial import CONV_CPU_PRESET, AdversarialModel
from hcmbench.models.layers import ConvDiscriminatorBody, ConvGenerator, dcgan_init_
from hcmbench.models.registry import register


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
class InfoGAN(AdversarialModel):
    """DCGAN generator and discriminator plus a Q head on the discriminator's body.

    `training_step` returns `d_loss`, `g_loss` (the adversarial cross-entropies alone), `info` (Q's
    code loss on the fakes, before the update), `gp` on the steps that compute R1 and `lecam` when it
    is on.

    Parameter ownership: D's optimiser holds the shared body and the real/fake head and sees only the
    adversarial loss (and its regularisers); G's optimiser holds the generator and the Q head and sees
    generator_loss + info_weight · info. The info loss thus trains Q's own layers and G, and its
    gradient passes through the body (frozen in the G step) to G without changing the body: the body
    learns only to tell real from fake.
    """

    conditional = False
    sample_options = ("category",)
    presets = {"cpu": CONV_CPU_PRESET}

    def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 62, n_categories: int = 4,
                 n_continuous: int = 2, width: int = 64, d_norm: str = "batch", info_weight: float = 1.0,
                 mbstd: bool = False, augment: str = "none", r1_every: int = 16,
                 lecam_weight: float = 0.0, gp_weight: float = 1.0,
                 label_smoothing: float = 0.1) -> None:
        super().__init__(augment=augment, r1_every=r1_every, lecam_weight=lecam_weight, mbstd=mbstd,
                         gp_weight=gp_weight, label_smoothing=label_smoothing)
        if n_categories < 2:
            raise HcmbenchError(f"n_categories must be at least 2, got {n_categories}")
        if n_continuous < 0:
            raise HcmbenchError(f"n_continuous must be non-negative, got {n_continuous}")
        if d_norm not in ("batch", "instance", "none"):
            raise HcmbenchError(f"d_norm must be 'batch', 'instance' or 'none', got {d_norm!r}")
        self.latent_dim, self.n_categories, self.n_continuous = latent_dim, n_categories, n_continuous
        self.info_weight = info_weight
        self.generator = ConvGenerator(latent_dim + n_categories + n_continuous, image_size, width)
        self.body = ConvDiscriminatorBody(image_size, width, d_norm, mbstd)
        self.d_head = nn.Conv2d(self.body.out_channels, 1, 4)
        self.q_head = QHead(self.body.out_channels, n_categories, n_continuous)
        dcgan_init_(self)

    def d_parameters(self) -> list[nn.Parameter]:
        """The shared body and the real/fake head."""
        return [*self.body.parameters(), *self.d_head.parameters()]

    def g_parameters(self) -> list[nn.Parameter]:
        """The generator and the Q head."""
        return [*self.generator.parameters(), *self.q_head.parameters()]

    def codes(self, n: int, rng: torch.Generator | None = None,
              category: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """G's input: (latent (n, latent_dim + n_categories + n_continuous), category (n,), continuous codes).

        The category is drawn last, so the same generator state gives the same z and continuous codes
        whatever `category` is fixed to.
        """
        z = torch.randn(n, self.latent_dim, generator=rng, device=self.device)
        cont = torch.rand(n, self.n_continuous, generator=rng, device=self.device) * 2 - 1
        if category is None:
            cat = torch.randint(self.n_categories, (n,), generator=rng, device=self.device)
        else:
            cat = torch.full((n,), category, dtype=torch.long, device=self.device)
        latent = torch.cat([z, F.one_hot(cat, self.n_categories).to(z.dtype), cont], dim=1)
        return latent, cat, cont

    def generate(self, n: int, labels: Tensor | None = None, rng: torch.Generator | None = None,
                 category: int | None = None, **options: Any) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """(G(z, c, c_cont), the codes (category (n,), continuous (n, n_continuous))); labels are ignored."""
        latent, cat, cont = self.codes(n, rng, category)
        return self.generator(latent), (cat, cont)

    def discriminate(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Image → (real/fake logit (B,), (Q's category logits, Q's continuous means)), all float32."""
        h = self.body(x)
        return self.d_head(h).flatten().float(), self.q_head(h)

    def info_loss(self, cat_logits: Tensor, cont_means: Tensor, cat: Tensor, cont: Tensor) -> Tensor:
        """CE of the categorical code + MSE of the continuous codes (a fixed-variance Gaussian)."""
        loss = F.cross_entropy(cat_logits, cat)
        if self.n_continuous:
            loss = loss + F.mse_loss(cont_means, cont.float())
        return loss

    def g_extra_loss(self, fake_aux: tuple[Tensor, Tensor],
                     context: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """info_weight · info, Q's loss on the codes the fakes were drawn with."""
        info = self.info_loss(*fake_aux, *context)
        return self.info_weight * info, {"info": info.item()}

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, rng: torch.Generator | None = None,
               category: int | None = None, **options: Any) -> Tensor:
        """`n` images in [-1, 1]; `category` fixes the categorical code (0..n_categories−1) for all."""
        if category is not None:
            if isinstance(category, bool) or not isinstance(category, numbers.Integral) \
                    or not 0 <= category < self.n_categories:
                raise HcmbenchError(f"category must be an integer in 0..{self.n_categories - 1}, got {category!r}")
            category = int(category)
        return super().sample(n, labels, rng, category=category, **options)
