"""Deep convolutional GAN (Radford et al., "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks", ICLR 2016).

G: z ~ N(0, I) through fractional-strided convolutions from 4×4 up to S×S, BatchNorm and ReLU, tanh
output. D: strided convolutions with LeakyReLU(0.2), normalisation on all but the first layer, and a
final 4×4 convolution to one logit. No pooling, no fully connected hidden layers, weights drawn from
N(0, 0.02) (`layers.ConvGenerator`, `layers.ConvDiscriminatorBody`, `layers.dcgan_init_`). `width`
is the channel count of G's last and D's first hidden layer; it doubles at each step towards 4×4.

Training is the family's shared step (`adversarial.AdversarialModel`): one D step, then one G step
on the same fake batch, the non-saturating loss, the engine's one-sided label smoothing and lazy R1
penalty, differentiable augmentation of D's inputs (DiffAugment, Zhao et al. 2020; `augment`) and
optional LeCam regularisation (Tseng et al. 2021; `lecam_weight`). `mbstd` adds a minibatch
standard-deviation channel (Karras et al. 2018) to D's 4×4 features before the logit.

`d_norm` is D's normalisation: "batch" as in the paper, "instance" or "none". With a gradient
penalty (the engine's `gp_weight` > 0), "instance" or "none" is the principled choice: BatchNorm makes
each logit depend on the whole batch, so the R1 penalty no longer measures the gradient of D(x) with
respect to its own x alone but mixes in the other samples' (Gulrajani et al. 2017 drop BatchNorm in
the critic for this reason; `mbstd` does the same, to a lesser degree).
"""

from __future__ import annotations

from torch import nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.adversarial import CONV_CPU_PRESET, AdversarialModel
from hcmbench.models.gan import GAN
from hcmbench.models.layers import ConvDiscriminatorBody, ConvGenerator, dcgan_init_
from hcmbench.models.registry import register

D_NORMS = ("batch", "instance", "none")


@register("dcgan")
class DCGAN(GAN):
    """DCGAN; `training_step` returns `d_loss`, `g_loss`, `gp` on the steps that compute R1 and
    `lecam` when it is on.

    Only the networks differ from the GAN's: the hooks (`generate`, `discriminate`), the optimisers
    (Adam for D, then G), the validation score and sampling are inherited.
    """

    conditional = False
    presets = {"cpu": CONV_CPU_PRESET}

    def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 100, width: int = 64,
                 d_norm: str = "batch", mbstd: bool = False, augment: str = "none",
                 r1_every: int = 16, lecam_weight: float = 0.0, gp_weight: float = 1.0,
                 label_smoothing: float = 0.1) -> None:
        # Not GAN.__init__: the networks are built here.
        AdversarialModel.__init__(self, augment=augment, r1_every=r1_every, lecam_weight=lecam_weight, mbstd=mbstd,
                         gp_weight=gp_weight, label_smoothing=label_smoothing)
        if latent_dim < 1 or width < 1:
            raise HcmbenchError(f"latent_dim and width must be positive, got {latent_dim} and {width}")
        if d_norm not in D_NORMS:
            raise HcmbenchError(f"d_norm must be one of {', '.join(D_NORMS)}, got {d_norm!r}")
        self.latent_dim = latent_dim
        self.generator = ConvGenerator(latent_dim, image_size, width)
        body = ConvDiscriminatorBody(image_size, width, norm=d_norm, mbstd=mbstd)
        self.discriminator = nn.Sequential(body, nn.Conv2d(body.out_channels, 1, 4, 1, 0), nn.Flatten(0))
        dcgan_init_(self)
