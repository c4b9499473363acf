"""The shared training engine: one loop for every model, knowing none of them by name.

The loop runs in rounds. A round is one epoch when the budget is in epochs, or a tick of
`tick_kimg` thousand images when it is in kimg (or minutes alone); the data are drawn as seeded
shuffled passes either way. Per round: call `model.training_step` on each batch (bf16 autocast on
CUDA), keep an EMA copy of the weights, score the EMA model with `validation_score`, write
`checkpoints/best.pt` when the score improves and `checkpoints/last.pt` always (both atomically),
draw a sample grid every few rounds, and stop early after `patience` rounds without improvement, when
the budget is spent or when the `minutes` run out (the round in progress is closed and validated).
Everything a run produces lands in its output folder; callbacks receive events (step and round end,
checkpoint written, samples drawn) and may raise to stop the run, which stays resumable. No MLflow
or Optuna here: tracking.py and sweep.py listen through callbacks.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hcmbench.atomic import check_writable
from hcmbench.checkpoints import (build_from_state, data_config_of, load_weights, read_checkpoint, resolve_device,
                                  save_checkpoint)
from hcmbench.config import DataConfig, TrainConfig
from hcmbench.errors import HcmbenchError
from hcmbench.models.base import GenerativeModel
from hcmbench.models.registry import build_model, check_settings
from hcmbench.plots import save_image_grid, save_loss_plot


# -- events ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepEnd:
    """After each optimisation step. `epoch` is the round (an epoch, or a tick of `tick_kimg`)."""

    epoch: int
    step: int
    steps: int  # steps in this round (an estimate when the minutes may cut it short)
    losses: dict[str, float]
    kimg: float = 0.0  # thousands of images shown so far
    done: float | None = None  # share of the whole budget spent, in [0, 1]
    seconds_left: float | None = None  # estimated from the pace so far


@dataclass(frozen=True)
class EpochEnd:
    """After each round: `epoch` of `epochs` rounds (None when only the minutes bound the run)."""

    epoch: int
    epochs: int | None
    losses: dict[str, float]
    val_score: float
    best_score: float
    improved: bool
    seconds: float
    kimg: float = 0.0
    unit: str = "epoch"  # "epoch" or "tick"


@dataclass(frozen=True)
class CheckpointWritten:
    path: Path
    epoch: int
    kind: str  # "best" or "last"


@dataclass(frozen=True)
class SamplesDrawn:
    epoch: int
    path: Path
    images: Tensor


class Callback:
    """Receives the engine's events; override what you need. Raising stops training (resumable)."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, event: StepEnd) -> None: ...
    def on_epoch_end(self, event: EpochEnd) -> None: ...
    def on_checkpoint(self, event: CheckpointWritten) -> None: ...
    def on_samples(self, event: SamplesDrawn) -> None: ...
    def on_train_end(self, result: TrainResult) -> None: ...


class TrainingDiverged(HcmbenchError):
    """A loss or the validation score became NaN or infinite."""


@dataclass
class TrainResult:
    out_dir: Path
    epochs_run: int
    best_epoch: int
    best_score: float
    stopped_early: bool
    best_checkpoint: Path
    last_checkpoint: Path
    loss_plot: Path | None
    history: list[dict] = field(default_factory=list)
    kimg: float = 0.0  # thousands of images shown, over the whole run
    unit: str = "epoch"  # what `epochs_run` and `best_epoch` count: "epoch" or "tick"
    seconds: float = 0.0  # wall-clock time of the whole run


# -- EMA ---------------------------------------------------------------------------------------

class EMA:
    """An exponential moving average of a model's weights (buffers are copied, not averaged).

    The decay warms up as min(decay, (1 + t) / (10 + t)), so that short runs are not dominated by
    the random initial weights.
    """

    def __init__(self, model: GenerativeModel, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: GenerativeModel, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for average, current in zip(self.model.parameters(), model.parameters()):
            average.lerp_(current.detach(), 1.0 - decay)
        for average, current in zip(self.model.buffers(), model.buffers()):
            average.copy_(current)


# -- the trainer -------------------------------------------------------------------------------

def _as_tensors(dataset: Any) -> tuple[Tensor, Tensor]:
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        return dataset.images, dataset.labels
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.stack(labels)


class Trainer:
    """Trains one model on in-memory image/label tensors and writes everything under `out_dir`.

    `metadata` (classes, label_by, data settings, ...) is stored in every checkpoint as is.
    """

    def __init__(self, model: GenerativeModel, train_data: Any, val_data: Any | None, config: TrainConfig,
                 out_dir: str | Path, callbacks: Sequence[Callback] = (), metadata: dict[str, Any] | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.out_dir = Path(out_dir)
        self.callbacks = list(callbacks)
        self.metadata = dict(metadata or {})
        self.unit = "tick" if config.counts_images else "epoch"
        self.epochs = None if config.counts_images else config.epochs or model.default_epochs
        self.train_images, self.train_labels = (t.to(self.device) for t in _as_tensors(train_data))
        if len(self.train_images) < 2:
            raise HcmbenchError("the training split has fewer than 2 images: select more patients or groups")
        val = _as_tensors(val_data) if val_data is not None and len(val_data) > 0 else None
        # Without a validation split, score on a fixed slice of the training split (and say so).
        self.validation_source = "val" if val is not None else "train"
        val_images, val_labels = val if val is not None else (self.train_images[:64], self.train_labels[:64])
        self.val_batches = [(val_images[i:i + config.batch_size].to(self.device), val_labels[i:i + config.batch_size].to(self.device))
                            for i in range(0, len(val_images), config.batch_size)]
        self.optimizers = model.configure_optimizers(config)
        self.ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
        self.history: list[dict] = []
        self.best_score, self.best_epoch, self.stale_epochs, self.global_step = math.inf, 0, 0, 0
        self.images_seen, self.seconds_before = 0, 0.0  # over the whole run, resumes included
        self._clock: float | None = None
        self._pass_cache: tuple[int, list[Tensor]] | None = None

    @property
    def rounds(self) -> int | None:
        """Rounds in the budget: epochs, or kimg ticks; None when only the minutes bound the run."""
        return self.epochs if self.epochs is not None else self.config.rounds_in_budget()

    @property
    def kimg(self) -> float:
        return self.images_seen / 1000

    def elapsed(self) -> float:
        """Seconds of this run so far, resumed parts included."""
        return self.seconds_before + (time.perf_counter() - self._clock if self._clock is not None else 0.0)

    def budget_done(self, rounds_done: int) -> float:
        """The share of the budget spent: the largest of the rounds', the images' and the minutes' shares."""
        shares = [self.elapsed() / (60 * self.config.minutes)] if self.config.minutes else []
        if self.config.kimg is not None:
            shares.append(self.images_seen / (1000 * self.config.kimg))
        elif self.epochs is not None:
            shares.append(rounds_done / self.epochs)
        return min(1.0, max(shares, default=0.0))

    def out_of_time(self) -> bool:
        return self.config.minutes is not None and self.elapsed() >= 60 * self.config.minutes

    def budget_left(self, rounds_done: int) -> bool:
        """Whether another round may start."""
        if self.out_of_time():
            return False
        if self.config.kimg is not None:
            return self.images_seen < 1000 * self.config.kimg
        return self.epochs is None or rounds_done < self.epochs

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def sampling_model(self) -> GenerativeModel:
        """The weights that sample and are scored: the EMA copy when there is one."""
        return self.ema.model if self.ema is not None else self.model

    def _emit(self, hook: str, event: Any) -> None:
        # Any object with some of Callback's methods will do; missing hooks are skipped.
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(event)

    # -- state ---------------------------------------------------------------------------------

    def _state(self, epoch: int, full: bool, stopped_early: bool = False) -> dict[str, Any]:
        state = {
            "model": self.model.name, "settings": dict(self.model.settings),
            "state_dict": self.model.state_dict(),
            "ema_state_dict": self.ema.model.state_dict() if self.ema is not None else None,
            "epoch": epoch, "best_score": self.best_score, "best_epoch": self.best_epoch,
            "train_config": dataclasses.asdict(self.config), "history": self.history, **self.metadata,
        }
        if full:
            rng = {"torch": torch.get_rng_state()}
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.device)
            state.update(optimizers=[o.state_dict() for o in self.optimizers], rng=rng, stopped_early=stopped_early,
                         stale_epochs=self.stale_epochs, global_step=self.global_step,
                         images_seen=self.images_seen, seconds=self.elapsed())
        return state

    def _restore(self) -> tuple[int, bool]:
        """Load last.pt into the trainer; returns its epoch and whether that run had stopped early."""
        path = self.checkpoint_dir / "last.pt"
        state = read_checkpoint(path, map_location=self.device, resumable=True)
        if state["model"] != self.model.name or state["settings"] != self.model.settings:
            raise HcmbenchError(f"{path}: holds a {state['model']} run with other settings; cannot resume it here")
        load_weights(self.model, state["state_dict"], path)
        if self.ema is not None and state.get("ema_state_dict") is not None:
            load_weights(self.ema.model, state["ema_state_dict"], path, "averaged weights")
        if len(state["optimizers"]) != len(self.optimizers):
            raise HcmbenchError(f"{path}: holds {len(state['optimizers'])} optimisers' states, the model has "
                                f"{len(self.optimizers)}; cannot resume it")
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            load_weights(optimizer, saved, path, "optimiser states", "the model's optimisers")
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.history = list(state["history"])
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.stale_epochs, self.global_step = state["stale_epochs"], state["global_step"]
        self.images_seen = state.get("images_seen", 0)
        self.seconds_before = state.get("seconds", 0.0)
        return state["epoch"], state["stopped_early"]

    # -- the loop ------------------------------------------------------------------------------

    def _pass(self, number: int) -> list[Tensor]:
        """The batches (index tensors) of pass `number` over the training split, shuffled by seed and number."""
        if self._pass_cache is None or self._pass_cache[0] != number:
            n, size = len(self.train_images), self.config.batch_size
            shuffle = torch.Generator().manual_seed(self.config.seed * 100_003 + number)
            order = torch.randperm(n, generator=shuffle).to(self.device)
            batches = [order[i:i + size] for i in range(0, n, size)]
            if len(batches) > 1 and len(batches[-1]) < 2:  # BatchNorm cannot train on a single image
                batches.pop()
            if self.config.max_steps_per_epoch:
                batches = batches[: self.config.max_steps_per_epoch]
            self._pass_cache = (number, batches)
        return self._pass_cache[1]

    def _round(self, number: int) -> tuple[int, Iterable[Tensor]]:
        """(expected steps, the batches) of round `number`: pass `number`, or the next tick of the
        stream of passes (its position is `global_step`, so a resumed run draws the same batches)."""
        if self.unit == "epoch":
            batches = self._pass(number)
            return len(batches), iter(batches)
        end = 1000 * self.config.tick_kimg * number
        if self.config.kimg is not None:
            end = min(end, 1000 * self.config.kimg)

        per_pass = len(self._pass(1))  # every pass has as many batches: counted once a round, not every step

        def stream() -> Iterable[Tensor]:
            while self.images_seen < end:
                yield self._pass(1 + self.global_step // per_pass)[self.global_step % per_pass]

        return max(1, math.ceil((end - self.images_seen) / self.config.batch_size)), stream()

    def _train_round(self, number: int) -> dict[str, float]:
        self.model.train()
        steps, batches = self._round(number)
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)  # a loss may be reported on some steps only (lazy R1)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16,
                                  enabled=self.config.mixed_precision and self.device.type == "cuda")
        for step, index in enumerate(batches, start=1):
            with autocast:
                losses = self.model.training_step((self.train_images[index], self.train_labels[index]), self.optimizers)
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                name, value = next(iter(bad.items()))
                raise TrainingDiverged(f"{self.model.name}: loss {name} became {value} at {self.unit} {number}, "
                                       f"step {step}; lower the learning rate or set grad_clip")
            self.global_step += 1
            self.images_seen += len(index)
            if self.ema is not None:
                self.ema.update(self.model, self.global_step)
            for name, value in losses.items():
                totals[name] += value
                counts[name] += 1
            share = self.budget_done(number - 1 + step / max(steps, step))
            left = self.elapsed() * (1 - share) / share if share > 0 else None
            self._emit("on_step_end", StepEnd(number, step, max(steps, step), losses, self.kimg, share, left))
            if self.out_of_time():
                break
        return {name: total / counts[name] for name, total in totals.items()}

    def validate(self) -> float:
        """The sampling model's validation score on the validation batches (lower is better)."""
        model = self.sampling_model
        model.eval()
        with torch.no_grad():
            score = float(model.validation_score(self.val_batches))
        self.model.train()
        return score

    def draw_samples(self, epoch: int) -> Path:
        """Write `samples/epoch_NNN.png` from a fixed seed (so grids of different epochs compare)."""
        model, n = self.sampling_model, self.config.grid_size
        rng = torch.Generator(device=self.device).manual_seed(self.config.seed + 2_718)
        labels = None
        if model.conditional:
            classes = max(1, model.settings.get("num_classes", 1))
            labels = (torch.arange(n, device=self.device) * classes // n).long()
        with torch.no_grad():
            images = model.sample(n, labels, rng=rng, **model.preview_options).float().cpu()
        path = save_image_grid(images, self.out_dir / "samples" / f"epoch_{epoch:03d}.png")
        self._emit("on_samples", SamplesDrawn(epoch, path, images))
        return path

    def _write_checkpoint(self, kind: str, epoch: int, stopped_early: bool = False) -> Path:
        path = save_checkpoint(self._state(epoch, full=kind == "last", stopped_early=stopped_early),
                               self.checkpoint_dir / f"{kind}.pt")
        self._emit("on_checkpoint", CheckpointWritten(path, epoch, kind))
        return path

    def fit(self, resume: bool = False) -> TrainResult:
        """Train until the budget is spent or early stopping; with `resume`, continue from last.pt.

        A resumed run that had stopped early stays stopped; one that used up its budget continues
        when the budget (`epochs`, `kimg` or `minutes`) is now larger.
        """
        last = self.checkpoint_dir / "last.pt"
        stopped_early = False
        if resume:
            if not last.exists():
                raise HcmbenchError(f"{self.out_dir}: nothing to resume (no checkpoints/last.pt)")
            done, stopped_early = self._restore()
        else:
            if last.exists():
                raise HcmbenchError(f"{self.out_dir} already holds a run: resume it or choose another output folder")
            torch.manual_seed(self.config.seed)
            done = 0
        self._clock = time.perf_counter()
        self._emit("on_train_start", self)
        finished = stopped_early or not self.budget_left(done)
        try:
            # decided once per round, before last.pt is written: a resumed run then decides as this one did
            while not finished:
                done += 1
                began = time.perf_counter()
                losses = self._train_round(done)
                score = self.validate()
                if not math.isfinite(score):
                    raise TrainingDiverged(f"{self.model.name}: validation score became {score} at {self.unit} {done}")
                improved = score < self.best_score - self.config.min_delta
                if improved:
                    self.best_score, self.best_epoch, self.stale_epochs = score, done, 0
                else:
                    self.stale_epochs += 1
                stopped_early = self.stale_epochs >= self.config.patience
                finished = stopped_early or not self.budget_left(done)
                seconds = time.perf_counter() - began
                self.history.append({"epoch": done, "kimg": self.kimg, "losses": losses, "val_score": score,
                                     "seconds": seconds})
                if improved:
                    self._write_checkpoint("best", done)
                every = self.config.sample_every
                if (every and done % every == 0) or finished:
                    self.draw_samples(done)
                self._write_checkpoint("last", done, stopped_early=stopped_early)
                self._emit("on_epoch_end", EpochEnd(done, self.rounds, losses, score, self.best_score, improved,
                                                    seconds, self.kimg, self.unit))
        finally:
            self.seconds_before, self._clock = self.elapsed(), None
            plot = save_loss_plot(self.history, self.out_dir / "plots" / "losses.png", title=self.model.name) \
                if self.history else None
        result = TrainResult(self.out_dir, len(self.history), self.best_epoch, self.best_score, stopped_early,
                             self.checkpoint_dir / "best.pt", last, plot, self.history, self.kimg, self.unit,
                             self.seconds_before)
        self._emit("on_train_end", result)
        return result


# -- one call from data to a trained model -----------------------------------------------------

def train(
    model_name: str,
    data_root: str | Path,
    out_dir: str | Path,
    data_config: DataConfig = DataConfig(),
    train_config: TrainConfig = TrainConfig(),
    model_settings: dict[str, Any] | None = None,
    callbacks: Iterable[Callback] = (),
    progress: Any = None,
) -> TrainResult:
    """Preprocess the data, build the model (seeded) and train it from scratch into `out_dir`."""
    from hcmbench.data.dataset import SliceDataset
    from hcmbench.data.slices import load_slices

    check_writable(out_dir, folder=True)  # before the data work: a run folder that cannot be made, or bad settings, fail at once
    check_settings(model_name, model_settings or {})
    slices = load_slices(data_root, data_config, progress=progress)
    train_set, val_set = SliceDataset(slices, "train"), SliceDataset(slices, "val")
    torch.manual_seed(train_config.seed)
    model = build_model(model_name, image_size=data_config.size, num_classes=len(train_set.classes),
                        **(model_settings or {}))
    metadata = {"classes": train_set.classes, "label_by": train_set.label_by,
                "data_config": dataclasses.asdict(data_config), "data_root": str(data_root), "data_key": slices.key}
    trainer = Trainer(model, train_set, val_set, train_config, out_dir, list(callbacks), metadata)
    return trainer.fit()


def resume(out_dir: str | Path, epochs: int | None = None, data_root: str | Path | None = None,
           callbacks: Iterable[Callback] = (), progress: Any = None, kimg: float | None = None,
           minutes: float | None = None) -> TrainResult:
    """Continue the run in `out_dir` with its own settings; `epochs`, `kimg` or `minutes` may raise its
    budget (totals over the whole run, in the unit the run counts in: a run in epochs takes `epochs`,
    one in images `kimg`; `minutes` either).

    The data must be what the run started on (same preprocessing cache key), else HcmbenchError.
    """
    from hcmbench.data.dataset import SliceDataset
    from hcmbench.data.slices import load_slices

    path = Path(out_dir) / "checkpoints" / "last.pt"
    state = read_checkpoint(path, resumable=True)
    data_config = data_config_of(state)
    try:
        before = TrainConfig(**state["train_config"])
    except TypeError as exc:
        raise HcmbenchError(f"{path}: not a complete hcmbench checkpoint (train_config: {exc})") from None
    if epochs is not None and before.counts_images:
        raise HcmbenchError(f"{out_dir}: the run counts its budget in images: extend it with kimg, not epochs")
    if kimg is not None and not before.counts_images:
        raise HcmbenchError(f"{out_dir}: the run counts its budget in epochs: extend it with epochs, not kimg")
    given = {k: v for k, v in (("epochs", epochs), ("kimg", kimg), ("minutes", minutes)) if v is not None}
    train_config = dataclasses.replace(before, **given)
    slices = load_slices(data_root or state["data_root"], data_config, progress=progress)
    if slices.key != state["data_key"]:
        raise HcmbenchError(f"{out_dir}: the data differ from those the run started on; cannot resume")
    train_set, val_set = SliceDataset(slices, "train"), SliceDataset(slices, "val")
    model = build_from_state(state, path)
    metadata = {k: state[k] for k in ("classes", "label_by", "data_config", "data_root", "data_key")}
    trainer = Trainer(model, train_set, val_set, train_config, out_dir, list(callbacks), metadata)
    return trainer.fit(resume=True)
