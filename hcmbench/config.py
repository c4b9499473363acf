"""Settings as dataclasses, where the cache lives, and YAML overrides."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hcmbench.errors import HcmbenchError

T = TypeVar("T")


SIZES = (32, 64, 128)  # the slice sizes in pixels that the data, every model and the feature space support


def check_size(size: int, what: str = "size") -> None:
    """Refuse a slice size hcmbench does not support, in one line."""
    if size not in SIZES:
        raise HcmbenchError(f"{what} {size} is not supported: use {', '.join(map(str, SIZES))}")


@dataclass(frozen=True)
class DataConfig:
    """What slices to take from an ACDC-layout dataset and how to preprocess them (docs/design.md).

    Every field enters the preprocessing cache key, so changing any of them re-preprocesses.
    """

    groups: tuple[str, ...] = ("HCM",)
    frames: tuple[str, ...] = ("ED", "ES")
    size: int = 64
    fov_mm: float = 160.0
    clip_percentiles: tuple[float, float] = (1.0, 99.5)
    # Without a mask, keep this central share of a volume's slices.
    middle_fraction: float = 0.6
    # Train / validation / test shares of patients (per group), and the seed of the split.
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_size(self.size)
        if self.fov_mm <= 0:
            raise HcmbenchError(f"fov_mm must be positive, got {self.fov_mm}")
        low, high = self.clip_percentiles
        if not 0 <= low < high <= 100:
            raise HcmbenchError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {self.clip_percentiles}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6 or self.split[0] == 0:
            raise HcmbenchError(f"split must be three non-negative shares summing to 1 with train > 0, got {self.split}")
        if not 0 < self.middle_fraction <= 1:
            raise HcmbenchError(f"middle_fraction must be in (0, 1], got {self.middle_fraction}")
        if not self.frames:
            raise HcmbenchError("frames must name at least one frame (ED, ES, a 1-based number or cine)")
        for frame in self.frames:
            text = str(frame).strip()
            if text.upper() not in ("ED", "ES", "CINE") and not (text.isdigit() and int(text) >= 1):
                raise HcmbenchError(f"unknown frame {frame!r}: use ED, ES, a 1-based frame number or cine "
                                    "(every frame of the _4d cine files)")


def setting(default: Any, help: str, cli: bool = True) -> Any:
    """A settings field declared once: its default and what it means, which `hcmbench train --help`
    shows (`cli=False` keeps it off the command line)."""
    return field(default=default, metadata={"help": help, "cli": cli})


@dataclass(frozen=True)
class TrainConfig:
    """How the engine trains any model. Defaults are the study's: Adam, lr 2e-4, betas (0.5, 0.999),
    batch 32, up to 100 epochs (the model's own budget when no budget is given: 115 for diffusion),
    early stopping on the validation score.

    The budget is `epochs` (passes over the training split) or `kimg` (thousands of images shown to the
    model, whatever the dataset's size), not both; `minutes` caps the run's wall-clock time, alone or
    with either. Counted in images (`kimg`, or `minutes` alone), the model is validated, checkpointed,
    drawn and reported every `tick_kimg` thousand images: the same ticks on 358 slices as on 1,800, so
    that runs and sweep trials compare across datasets. Counted in epochs, that happens every epoch.
    """

    epochs: int | None = setting(None, "Budget in passes over the training slices. Default: the model's (100; 115 "
                                          "for ddpm) unless kimg or minutes is given.")
    kimg: float | None = setting(None, "Budget in thousands of images shown to the model, whatever the dataset's "
                                       "size (not with epochs).")
    minutes: float | None = setting(None, "Wall-clock cap on training: alone, or with epochs/kimg (whichever ends "
                                          "first).")
    tick_kimg: float = setting(1.0, "Counted in images: validate, checkpoint and draw every this many kimg.")
    batch_size: int = setting(32, "Images per optimisation step.")
    lr: float = setting(2e-4, "Adam learning rate.")
    betas: tuple[float, float] = setting((0.5, 0.999), "Adam's betas.", cli=False)
    patience: int = setting(10, "Early stopping: rounds (epochs, or ticks) without the validation score improving "
                                "by min_delta.")
    min_delta: float = setting(0.0, "Early stopping: the least improvement that counts.")
    seed: int = setting(0, "Seeds everything: same seed, same run.")
    device: str = setting("auto", "auto, cpu, cuda[:N] or mps.")
    mixed_precision: bool = setting(True, "bf16 autocast on CUDA (no loss scaling needed); ignored on CPU and MPS.")
    grad_clip: float | None = setting(None, "Clip the gradient norm to this (default: no clipping).")
    ema_decay: float = setting(0.999, "Exponential moving average of the weights, used for sampling and "
                                      "validation (0: off).")
    sample_every: int = setting(5, "Write a sample grid every N rounds (and after the last); 0: only at the end.")
    grid_size: int = setting(64, "Images in each sample grid.")
    max_steps_per_epoch: int | None = setting(None, "Cap on optimisation steps per epoch (quick runs and tests).")

    @property
    def counts_images(self) -> bool:
        """Whether the budget and the validation ticks are counted in images (kimg, or minutes alone)."""
        return self.kimg is not None or (self.minutes is not None and self.epochs is None)

    def rounds_in_budget(self) -> int | None:
        """Rounds (epochs, or ticks of tick_kimg) the budget allows; None when only the minutes (or, with
        no budget at all, the model's default epochs) bound the run."""
        if self.kimg is not None:
            return math.ceil(self.kimg / self.tick_kimg - 1e-9)
        return None if self.counts_images else self.epochs

    def __post_init__(self) -> None:
        checks = [
            (self.epochs is None or self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.epochs is None or self.kimg is None, "give a budget in epochs or in kimg, not both"),
            (self.kimg is None or self.kimg > 0, f"kimg must be positive, got {self.kimg}"),
            (self.minutes is None or self.minutes > 0, f"minutes must be positive, got {self.minutes}"),
            (self.tick_kimg > 0, f"tick_kimg must be positive, got {self.tick_kimg}"),
            (self.batch_size >= 2, f"batch_size must be at least 2 (batch norm needs two images), got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (all(0 <= b < 1 for b in self.betas) and len(self.betas) == 2, f"betas must be two values in [0, 1), got {self.betas}"),
            (self.patience >= 1, f"patience must be at least 1, got {self.patience}"),
            (self.min_delta >= 0, f"min_delta must be non-negative, got {self.min_delta}"),
            (self.sample_every >= 0, f"sample_every must be non-negative, got {self.sample_every}"),
            (self.grid_size >= 1, f"grid_size must be at least 1, got {self.grid_size}"),
            (self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
             f"max_steps_per_epoch must be at least 1, got {self.max_steps_per_epoch}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be positive, got {self.grad_clip}"),
            (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
             f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise HcmbenchError(message)


BUDGET = ("epochs", "kimg", "minutes")
# TrainConfig fields that became settings of the GAN family's models (checkpoints and studies made
# before carry them among the training settings; `engine.resume` hands them to the model).
MOVED_TO_MODELS = ("gp_weight", "label_smoothing")


def tuples(values: dict[str, Any]) -> dict[str, Any]:
    """A mapping's list values as tuples: settings read from YAML or JSON then compare and hash like the
    dataclass defaults (which are tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def layered_train_config(defaults: dict[str, Any], preset: dict[str, Any], explicit: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from three layers: `explicit` settings win over a preset's, which win over `defaults`.

    A budget is one thing: an explicit epochs, kimg or minutes replaces the preset's whole budget, so
    that `--epochs 5` on a preset counted in kimg trains 5 epochs rather than failing on two budgets.
    """
    if explicit.keys() & set(BUDGET):
        preset = {k: v for k, v in preset.items() if k not in BUDGET}
        defaults = {k: v for k, v in defaults.items() if k not in BUDGET or k in explicit}
    values = {**defaults, **preset, **explicit}
    return TrainConfig(**tuples(values))


def cache_dir() -> Path:
    """Where hcmbench keeps generated and preprocessed data: $HCMBENCH_CACHE, else the user cache.

    A path that cannot be a folder (it, or a folder it would be in, is a file) raises HcmbenchError naming
    the variable that chose it; one that is not writable fails, in one line, when something is written."""
    given = os.environ.get("HCMBENCH_CACHE")
    if given:
        path = Path(given).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base).expanduser() / "hcmbench"
    existing = path
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        if given:
            where = "a file" if existing == path else f"but {existing} is a file"
            raise HcmbenchError(f"HCMBENCH_CACHE is {path}, {where}, not a folder: point it at a folder hcmbench may "
                                "write")
        raise HcmbenchError(f"the cache folder {path} cannot be made: {existing} is a file (set HCMBENCH_CACHE to "
                            "another folder)")
    return path


def with_overrides(config: T, overrides: dict[str, Any]) -> T:
    """A copy of a settings dataclass with fields replaced; unknown fields raise HcmbenchError.

    Lists become tuples so that settings read from YAML compare and hash like the defaults.
    """
    names = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise HcmbenchError(f"unknown setting(s) {', '.join(unknown)} for {type(config).__name__}")
    return dataclasses.replace(config, **tuples(overrides))  # type: ignore[type-var]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or anything but a mapping raises HcmbenchError."""
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise HcmbenchError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise HcmbenchError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise HcmbenchError(f"{path}: expected a mapping of settings, found {type(loaded).__name__}")
    return loaded
