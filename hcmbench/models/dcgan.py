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


from torch import nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.base import GenerativeModel, register
from hcmbench.models.gan import GAN
from hcmbench.models.layers import ConvDiscriminatorBody, ConvGenerator, dcgan_init_

D_NORMS = ("batch", "instance", "none")


@register("dcgan")
class DCGAN(GAN):
    """DCGAN; `training_step` returns `d_loss`, `g_loss` and, when the R1 weight is positive, `gp`.

    Only the networks differ from the GAN's: optimisers (Adam for D, then G), the adversarial step,
    the validation score (`layers.sample_distance`) and sampling (G(z) in eval mode) are inherited.
    """

    conditional = False

    def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 100, width: int = 64,
                 d_norm: str = "batch") -> None:
        GenerativeModel.__init__(self)  # not GAN.__init__: the networks are built here
        if latent_dim < 1 or width < 1:
            raise HcmbenchError(f"latent_dim and width must be positive, got {latent_dim} and {width}")
        if d_norm not in D_NORMS:
            raise HcmbenchError(f"d_norm must be one of {', '.join(D_NORMS)}, got {d_norm!r}")
        self.latent_dim = latent_dim
        self.generator = ConvGenerator(latent_dim, image_size, width)
        body = ConvDiscriminatorBody(image_size, width, norm=d_norm)
        self.discriminator = nn.Sequential(body, nn.Conv2d(body.out_channels, 1, 4, 1, 0), nn.Flatten(0))
        dcgan_init_(self)
