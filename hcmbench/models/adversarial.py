"""The adversarial training step shared by the GAN family (GAN, DCGAN, ACGAN, InfoGAN).

One step per batch:

  1. G draws ONE fake batch, with its graph (conditional models: for the real batch's labels).
  2. D step: D sees augment(real) and augment(fake.detach()) and minimises the cross-entropy loss
     with one-sided label smoothing (Salimans et al. 2016), plus the model's extra D loss (ACGAN's
     class loss), plus, every `r1_every` steps, the R1 penalty (lazy regularisation, below), plus the
     LeCam penalty when `lecam_weight` > 0.
  3. G step, on the same fake batch through the updated D, with D's parameters frozen: the
     non-saturating loss on D(augment(fake)), plus the model's extra G loss (ACGAN's class loss,
     InfoGAN's information loss). Reusing the fake, as pytorch/examples' DCGAN does, saves the second
     generator forward of Goodfellow et al.'s algorithm (which draws a fresh z for the G step).

The regularisers:

  augmentation  DiffAugment (Zhao et al. 2020) and ADA (Karras et al. 2020): every image D sees is
                augmented with fresh random parameters (`augment.py`); G's gradient passes through
                the transforms. Only in training: `sample` and `validation_score` never augment.
  lazy R1       Mescheder et al. 2018's penalty ‖∇ₓD(x)‖² on the (augmented) reals, computed only on
                every `r1_every`-th step and then weighted gp_weight/2 · r1_every, so that its average
                weight is unchanged (StyleGAN2, Karras et al. 2020, §B). The gradient is taken with
                respect to the augmented image, the input D actually sees. The step counter is a
                buffer, kept by checkpoints, so a resumed run penalises on the same steps.
  LeCam         Tseng, Jiang, Liu, Yang & Yang, "Regularizing Generative Adversarial Networks under
                Limited Data", CVPR 2021: with EMAs (decay 0.99) of D's mean real and fake logits,
                lecam_weight · (E[relu(D(real) − ema_fake)²] + E[relu(ema_real − D(fake))²]) keeps D's
                outputs near each other's running means, so that D cannot drive them apart without bound.

`gp_weight` (R1's weight) and `label_smoothing` are model settings, like the rest.

A model provides the hooks below; `generate`, `discriminate` and, when it has no `generator` and
`discriminator` modules, `d_parameters` / `g_parameters`. `sample`, `validation_score` and the two
Adam optimisers (D's first) are shared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.augment import augment, parse_policy
from hcmbench.models.base import Batch, GenerativeModel, Preset, adam
from hcmbench.models.layers import sample_distance
from hcmbench.models.losses import discriminator_loss, generator_loss, r1_penalty

LECAM_DECAY = 0.99

# The "cpu" preset of the convolutional members (DCGAN, ACGAN, InfoGAN): their defaults at width 32.
CONV_CPU_PRESET = Preset(
    "sized for 2 CPU cores: width 32, 40 kimg at batch 32 (about 4 minutes), validated every 2 kimg",
    model={"width": 32}, train={"batch_size": 32, "kimg": 40, "tick_kimg": 2, "patience": 20})


@contextlib.contextmanager
def frozen(parameters: Iterable[nn.Parameter]) -> Iterator[None]:
    """No gradients for `parameters` inside the block (they still take part in the forward pass)."""
    parameters = [p for p in parameters if p.requires_grad]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in parameters:
            p.requires_grad_(True)


class AdversarialModel(GenerativeModel):
    """A generator and a discriminator trained by `training_step` (see the module docstring).

    Settings shared by the family, validated here: `augment` (an `augment.py` policy string),
    `r1_every` (lazy R1 interval, ≥ 1), `lecam_weight` (≥ 0; 0 is off), `mbstd` (whether D has a
    minibatch standard-deviation layer; the subclass builds it into D), `gp_weight` (R1's weight γ,
    ≥ 0; 0 is off) and `label_smoothing` (D's real target 1 − s, s in [0, 0.5)).
    """

    def __init__(self, augment: str, r1_every: int, lecam_weight: float, mbstd: bool, gp_weight: float = 1.0,
                 label_smoothing: float = 0.1) -> None:
        super().__init__()
        if isinstance(gp_weight, bool) or not isinstance(gp_weight, (int, float)) or not gp_weight >= 0:
            raise HcmbenchError(f"gp_weight must be a non-negative number, got {gp_weight!r}")
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 0.5:
            raise HcmbenchError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
        self.gp_weight, self.label_smoothing = float(gp_weight), float(label_smoothing)
        self.augment_ops = parse_policy(augment)
        if isinstance(r1_every, bool) or not isinstance(r1_every, int) or r1_every < 1:
            raise HcmbenchError(f"r1_every must be a positive integer, got {r1_every!r}")
        if isinstance(lecam_weight, bool) or not isinstance(lecam_weight, (int, float)) or not lecam_weight >= 0:
            raise HcmbenchError(f"lecam_weight must be a non-negative number, got {lecam_weight!r}")
        if not isinstance(mbstd, bool):
            raise HcmbenchError(f"mbstd must be true or false, got {mbstd!r}")
        self.r1_every, self.lecam_weight, self.mbstd = r1_every, float(lecam_weight), mbstd
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema_real_logit", torch.zeros(()))
        self.register_buffer("ema_fake_logit", torch.zeros(()))

    # -- hooks ---------------------------------------------------------------------------------

    def generate(self, n: int, labels: Tensor | None = None, rng: torch.Generator | None = None,
                 **options: Any) -> tuple[Tensor, Any]:
        """(n fake images (n, 1, S, S), their context: the labels or latent codes the extra losses need)."""
        raise NotImplementedError

    def discriminate(self, x: Tensor) -> tuple[Tensor, Any]:
        """(real/fake logits (B,) in float32, D's other outputs for the extra losses, or None)."""
        raise NotImplementedError

    def d_extra_loss(self, real_aux: Any, fake_aux: Any, labels: Tensor,
                     context: Any) -> tuple[Tensor | None, dict[str, float]]:
        """D's loss besides the adversarial one (already weighted), and its logs. None: there is none."""
        return None, {}

    def g_extra_loss(self, fake_aux: Any, context: Any) -> tuple[Tensor | None, dict[str, float]]:
        """G's loss besides the adversarial one (already weighted), and its logs. None: there is none."""
        return None, {}

    def d_parameters(self) -> list[nn.Parameter]:
        """What D's optimiser updates and the G step freezes."""
        return list(self.discriminator.parameters())

    def g_parameters(self) -> list[nn.Parameter]:
        """What G's optimiser updates (InfoGAN adds its Q head)."""
        return list(self.generator.parameters())

    # -- the shared step -----------------------------------------------------------------------

    def configure_optimizers(self, cfg: Any) -> list[torch.optim.Optimizer]:
        """Adam over `d_parameters`, then Adam over `g_parameters`, both with `cfg.lr` and `cfg.betas`."""
        self.adopt_training_settings(cfg)
        return [adam(params, cfg) for params in (self.d_parameters(), self.g_parameters())]

    def training_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
        """One D update, then one G update on the same fakes.

        Returns d_loss and g_loss (the adversarial cross-entropies alone), gp (R1, unweighted) on the
        steps that compute it, lecam (unweighted) when it is on, and the model's extra logs.
        """
        d_opt, g_opt = optimizers
        real, labels = (t.to(self.device) for t in batch)
        step = int(self.step_count)
        self.step_count += 1
        fake, context = self.generate(len(real), labels if self.conditional else None)

        # D step. The augmented reals are a new leaf: R1 differentiates D at them, the batch stays as it was.
        with_r1 = self.gp_weight > 0 and step % self.r1_every == 0
        real = augment(real, self.augment_ops).detach().requires_grad_(with_r1)
        real_logit, real_aux = self.discriminate(real)
        fake_logit, fake_aux = self.discriminate(augment(fake.detach(), self.augment_ops))
        d_loss = discriminator_loss(real_logit, fake_logit, self.label_smoothing)
        extra, logs = self.d_extra_loss(real_aux, fake_aux, labels, context)
        d_total = d_loss if extra is None else d_loss + extra
        if with_r1:
            gp = r1_penalty(real_logit, real)
            d_total = d_total + self.gp_weight / 2 * self.r1_every * gp
            logs["gp"] = gp.item()
        if self.lecam_weight > 0:
            lecam = self.lecam_penalty(real_logit, fake_logit, first=step == 0)
            d_total = d_total + self.lecam_weight * lecam
            logs["lecam"] = lecam.item()
        self.optimize(d_total, d_opt, self.d_parameters())

        # G step: the same fakes, freshly augmented, through the updated D, whose parameters stay as they are.
        with frozen(self.d_parameters()):
            fake_logit, fake_aux = self.discriminate(augment(fake, self.augment_ops))
            g_loss = generator_loss(fake_logit)
            extra, g_logs = self.g_extra_loss(fake_aux, context)
            self.optimize(g_loss if extra is None else g_loss + extra, g_opt, self.g_parameters())
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), **logs, **g_logs}

    def lecam_penalty(self, real_logit: Tensor, fake_logit: Tensor, first: bool = False) -> Tensor:
        """Update the EMAs of D's mean logits (`first`: start them at this batch's), then Tseng et al.'s
        E[relu(real − ema_fake)²] + E[relu(ema_real − fake)²], unweighted."""
        with torch.no_grad():
            decay = 0.0 if first else LECAM_DECAY
            self.ema_real_logit.lerp_(real_logit.mean().float(), 1 - decay)
            self.ema_fake_logit.lerp_(fake_logit.mean().float(), 1 - decay)
        ema_real, ema_fake = self.ema_real_logit.clone(), self.ema_fake_logit.clone()
        return F.relu(real_logit - ema_fake).pow(2).mean() + F.relu(ema_real - fake_logit).pow(2).mean()

    # -- evaluation: never augmented -------------------------------------------------------------

    @torch.no_grad()
    def validation_score(self, val_batches: Iterable[Batch]) -> float:
        """Energy distance between 16×16-pooled samples (fixed seed; the validation labels for
        conditional models) and the validation images (`layers.sample_distance`); lower is better."""
        return sample_distance(self, val_batches)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, rng: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """`generate` in eval mode: (n, 1, S, S) in [-1, 1]; conditional models take labels (n,)."""
        self.check_options(options)
        labels = self.check_labels(n, labels)
        with self.evaluating():
            return self.generate(n, labels, rng, **options)[0].float()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints from before the shared step lack its counters: those start afresh.
        for name, buffer in self._buffers.items():
            state_dict.setdefault(prefix + name, buffer.detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args)
