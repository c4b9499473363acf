"""The small interface every generative model implements.

A model is an `nn.Module` in its own file, registered with `@register("name")` (`models/registry.py`,
which also finds models of other packages). The engine only ever calls the methods below; it knows no
model by name.

    class MyModel(GenerativeModel):
        conditional = False

        def __init__(self, image_size: int = 64, num_classes: int = 0, latent_dim: int = 100): ...
        def training_step(self, batch, optimizers) -> dict[str, float]: ...
        def validation_score(self, val_batches) -> float: ...
        def sample(self, n, labels=None, rng=None) -> Tensor: ...

Constructor arguments are the model's settings: plain values with visible defaults, stored by
`build_model` in `model.settings` so that a checkpoint can rebuild the same model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError

Batch = tuple[Tensor, Tensor]  # images (B, 1, H, W) in [-1, 1], integer labels (B,)


@dataclass(frozen=True)
class Preset:
    """A named recipe of a model: its settings, the engine's training settings (TrainConfig fields) and
    the sample options a user gets by default, with what it is for. `hcmbench train --preset NAME` and
    `hcmbench study` use them; explicit options and `--set` still win."""

    description: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


class GenerativeModel(nn.Module):
    """Base class of hcmbench's generators. Subclasses implement the four methods marked below.

    Class attributes:
      conditional     whether `sample` takes labels (and training uses them);
      default_epochs  the study's epoch budget for this model;
      sample_options  names of extra keyword options `sample` accepts (e.g. the diffusion sampler);
      preview_options options the engine passes to `sample` for its per-epoch grids, where a cheaper
                      setting than the default gives the same picture (DDIM instead of 1000 steps).
      presets         named recipes (`Preset`): "cpu" is the one sized for a laptop's CPU, which
                      `hcmbench study` trains every model with.
    """

    conditional: ClassVar[bool] = False
    default_epochs: ClassVar[int] = 100
    sample_options: ClassVar[tuple[str, ...]] = ()
    preview_options: ClassVar[dict[str, Any]] = {}
    presets: ClassVar[dict[str, Preset]] = {}

    # Set by build_model / the engine.
    name: str = ""
    settings: dict[str, Any]
    grad_clip: float | None = None

    # -- the interface -------------------------------------------------------------------------

    def configure_optimizers(self, cfg: Any) -> list[torch.optim.Optimizer]:
        """The model's optimisers (GANs return two: discriminator first, then generator).

        `cfg` is the engine's TrainConfig: lr and betas, and grad_clip, which `optimize` applies.
        """
        self.adopt_training_settings(cfg)
        return [adam(self.parameters(), cfg)]

    def training_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
        """One optimisation step on a batch, with the model's own backward passes.

        Returns the named losses of the step as floats (`d_loss`, `g_loss`, `kl`, `recon`, ...).
        """
        raise NotImplementedError

    @torch.no_grad()
    def validation_score(self, val_batches: Iterable[Batch]) -> float:
        """A score on held-out batches; lower is better. Drives early stopping and pruning."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, rng: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """`n` images in [-1, 1], shape (n, 1, H, W). Conditional models take `labels` (n,)."""
        raise NotImplementedError

    # -- helpers for subclasses ----------------------------------------------------------------

    def adopt_training_settings(self, cfg: Any) -> None:
        """Keep the engine setting that training steps use: gradient clipping."""
        self.grad_clip = getattr(cfg, "grad_clip", None)

    def optimize(self, loss: Tensor, optimizer: torch.optim.Optimizer, parameters: Iterable[nn.Parameter] | None = None) -> None:
        """zero_grad, backward, optional gradient-norm clipping, step: one update of one optimiser."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            params = list(parameters) if parameters is not None else [
                p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        optimizer.step()

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode for the block (BatchNorm running statistics, no dropout), then the previous mode."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse `sample` options the model does not declare in `sample_options`, in one line."""
        unknown = sorted(set(options) - set(self.sample_options))
        if unknown:
            takes = ", ".join(self.sample_options) or "none"
            raise HcmbenchError(f"{self.name or type(self).__name__} does not take the sample option(s) "
                                f"{', '.join(unknown)} (it takes: {takes})")

    def check_labels(self, n: int, labels: Tensor | None) -> Tensor | None:
        """Validate `labels` for `sample`: required (n,) for conditional models, refused otherwise."""
        if not self.conditional:
            if labels is not None:
                raise HcmbenchError(f"{self.name or type(self).__name__} is unconditional: it takes no labels")
            return None
        num_classes = getattr(self, "settings", {}).get("num_classes", 0) or getattr(self, "num_classes", 0)
        if labels is None:
            raise HcmbenchError(f"{self.name} is conditional: give one label per sample")
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device).reshape(-1)
        if labels.numel() != n:
            raise HcmbenchError(f"{labels.numel()} labels for {n} samples")
        if num_classes and (labels.min() < 0 or labels.max() >= num_classes):
            raise HcmbenchError(f"labels must lie in 0..{num_classes - 1}")
        return labels


def adam(parameters: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Adam:
    """The study's optimiser for every model: Adam with the engine's `lr` and `betas`."""
    return torch.optim.Adam(parameters, lr=cfg.lr, betas=tuple(cfg.betas))
