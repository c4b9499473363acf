"""Everything the command line shows while it works, in one place: status lines, progress bars, a
training run's live bar and per-round lines, a sweep's live line, spinners.

`Display` decides once how to show things: nothing under `--quiet`; on a terminal, transient rich
bars on stderr; in logs and pipes (no terminal), plain lines, each said once. Results (tables, the
checkpoint path) go to stdout with `console`; everything else goes to stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hcmbench.formatting import duration

console = Console()
err_console = Console(stderr=True)


def _losses(losses: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in losses.items())


def describe_budget(config: Any) -> str:
    """A TrainConfig's budget as a person reads it: "100 epochs", "20 kimg (validated every 1 kimg), at most 15 minutes"."""
    parts = []
    if config.kimg is not None:
        parts.append(f"{config.kimg:g} kimg")
    elif config.epochs is not None:
        parts.append(f"{config.epochs} epochs")
    if config.minutes is not None:
        parts.append(f"{'at most ' if parts else ''}{config.minutes:g} minutes")
    if config.counts_images:
        parts[0] += f" (validated every {config.tick_kimg:g} kimg)"
    return ", ".join(parts)


def sweep_event_line(event: object) -> str | None:
    """A sweep event as one line of a log, or None for events a log does not need."""
    from hcmbench.sweep import Joined, Preparing, TrialEnded, Waiting

    if isinstance(event, Preparing):
        return event.message + " …"
    if isinstance(event, Joined):
        return f"Study {event.study}: {event.done} of {event.total} trials ended; working as {event.worker}"
    if isinstance(event, Waiting):
        running = ", ".join(map(str, event.running))
        return (f"waiting for trial(s) {running} running on other workers (a worker silent for "
                f"{event.grace} s is taken for dead and its trial run again)")
    if isinstance(event, TrialEnded):
        value = "" if event.value is None else f" value {event.value:.4g}"
        best = "" if event.best_value is None else f"; best {event.best_value:.4g} (trial {event.best_number})"
        why = f" — {event.reason}" if event.reason and event.state != "COMPLETE" else ""
        return f"trial {event.number:3d} {event.state.lower()}{value}{best}{why}"
    return None


class Display:
    """How this command shows its progress: quiet, live (a terminal) or plain lines (logs, pipes)."""

    def __init__(self, quiet: bool = False, stream: Console = err_console) -> None:
        self.quiet, self.stream = quiet, stream
        self.live = not quiet and stream.is_terminal
        self.bar: Progress | None = None  # the bar on screen, whose console prints above it
        self._said: set[str] = set()

    @classmethod
    def current(cls) -> Display:
        """The display of the running command (`hcmbench --quiet` makes it quiet)."""
        root = click.get_current_context().find_root()
        return cls(quiet=bool(root.obj and root.obj.get("quiet")))

    # -- lines ---------------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """A status line on stderr (above the bar when one is live); nothing under --quiet."""
        if not self.quiet:
            (self.bar.console if self.bar is not None else self.stream).print(message, highlight=False,
                                                                              soft_wrap=True)

    def say_once(self, message: str) -> None:
        """`say`, but a message already said is not repeated (a log gets each phase once)."""
        if message not in self._said:
            self._said.add(message)
            self.say(message)

    # -- bars ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _bar(self, *extra: TextColumn) -> Iterator[Progress]:
        """The one look of hcmbench's bars: description, bar, done/total, [extra], elapsed; transient."""
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra, TimeElapsedColumn())
        with Progress(*columns, console=self.stream, transient=True) as bar:
            self.bar = bar
            try:
                yield bar
            finally:
                self.bar = None

    @contextlib.contextmanager
    def progress(self, description: str) -> Iterator[Callable[[int, int], None]]:
        """A bar driven by a `(done, total)` callback; nothing without a terminal (a log gains nothing
        from a bar's redraws)."""
        if not self.live:
            yield lambda done, total: None
            return
        with self._bar() as bar:
            task = bar.add_task(description, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)

    @contextlib.contextmanager
    def phases(self) -> Iterator[Callable[[str, int, int], None]]:
        """A bar for work in phases, driven by `(phase, done, total)`; without a terminal each phase is
        announced once on a line of its own."""
        if self.quiet:
            yield lambda phase, done, total: None
            return
        if not self.live:
            yield lambda phase, done, total: self.say_once(f"{phase}…")
            return
        with self._bar() as bar:
            task = bar.add_task("", total=None)
            yield lambda phase, done, total: bar.update(task, description=phase, completed=done, total=total)

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A spinner with a message on a terminal; nothing otherwise."""
        if not self.live:
            yield
            return
        with self.stream.status(message):
            yield

    # -- a training run (the engine's callbacks) ----------------------------------------------------

    @contextlib.contextmanager
    def training(self) -> Iterator[TrainingView]:
        """Engine callbacks that show a run: a live bar of the round's steps (kimg shown, time left,
        losses) on a terminal, and one line per round (also in logs)."""
        if not self.live:
            yield TrainingView(self, None)
            return
        with self._bar(TextColumn("{task.fields[budget]}  {task.fields[losses]}")) as bar:
            yield TrainingView(self, bar)

    # -- a sweep (its events) ------------------------------------------------------------------------

    @contextlib.contextmanager
    def sweep(self, trials: int | None) -> Iterator[Callable[[object], None]]:
        """A live line (trial, round, study-wide progress, best so far) on a terminal, else one line per
        event worth logging (trials ended, waiting for other workers), each change said once."""
        if self.quiet:
            yield lambda event: None
            return
        if not self.live:
            last = {"text": ""}

            def log(event: object) -> None:
                text = sweep_event_line(event)
                if text and text != last["text"]:  # a worker that waits says so once, not every poll
                    self.say(text)
                    last["text"] = text

            yield log
            return
        with self._bar() as bar:
            yield SweepView(bar, bar.add_task("sweep", total=trials))


class TrainingView:
    """The engine callbacks of `Display.training` (duck-typed, so that the CLI imports no torch at start)."""

    def __init__(self, display: Display, bar: Progress | None) -> None:
        self.display, self.bar, self.task, self.preparing = display, bar, None, None

    def progress(self, done: int, total: int) -> None:
        """The data's preprocessing, as a `(done, total)` callback, on the run's bar."""
        if self.bar is None or self.preparing is False:
            return
        if self.preparing is None:
            self.preparing = self.bar.add_task("Preprocessing slices", total=total, losses="", budget="")
        self.bar.update(self.preparing, completed=done, total=total)
        if total and done >= total:
            self.bar.remove_task(self.preparing)
            self.preparing = False

    def on_train_start(self, trainer: Any) -> None:
        budget = describe_budget(dataclasses.replace(trainer.config, epochs=trainer.epochs))
        self.display.say(f"Training {trainer.model.name} on {len(trainer.train_images)} slices ({trainer.device}) "
                         f"for {budget}; validation on the {trainer.validation_source} split.")

    def on_step_end(self, event: Any) -> None:
        if self.bar is None:
            return
        description = f"round {event.epoch}"
        if self.task is None:
            self.task = self.bar.add_task(description, total=event.steps, losses="", budget="")
        if event.step == 1:
            self.bar.reset(self.task, total=event.steps, description=description)
        left = f" · {duration(event.seconds_left)} left" if event.seconds_left is not None else ""
        self.bar.update(self.task, completed=event.step, total=event.steps, losses=_losses(event.losses),
                        budget=f"{event.kimg:.1f} kimg{left}")

    def on_epoch_end(self, event: Any) -> None:
        marker = " [green]best[/]" if event.improved else ""
        of = f"/{event.epochs}" if event.epochs else ""
        self.display.say(f"{event.unit} {event.epoch:>3}{of}  {event.kimg:.1f} kimg  {_losses(event.losses)}  "
                         f"val {event.val_score:.4g}{marker}  {event.seconds:.1f} s")


class SweepView:
    """A sweep's live line: the study's trials as the bar, the running trial and the best so far."""

    def __init__(self, bar: Progress, task: Any) -> None:
        self.bar, self.task, self.best = bar, task, ""

    def __call__(self, event: object) -> None:
        from hcmbench.sweep import Joined, Preparing, TrialEnded, TrialEpoch, TrialStarted, Waiting

        if isinstance(event, Preparing):
            self.bar.update(self.task, description="preparing the data and the feature space")
        elif isinstance(event, Joined):
            self.bar.update(self.task, total=event.total, completed=event.done)
        elif isinstance(event, Waiting):
            self.bar.update(self.task, description=f"waiting for trial(s) {', '.join(map(str, event.running))} "
                                                   f"on other workers{self.best}")
        elif isinstance(event, TrialStarted):
            self.bar.update(self.task, description=f"trial {event.number}{self.best}")
        elif isinstance(event, TrialEpoch):
            of = f"/{event.epochs}" if event.epochs else ""
            self.bar.update(self.task, description=f"trial {event.number} {event.unit} {event.epoch}{of} "
                                                   f"({event.kimg:.1f} kimg) val {event.val_score:.4g}{self.best}")
        elif isinstance(event, TrialEnded):
            if event.best_value is not None:
                self.best = f"  best {event.best_value:.4g} (trial {event.best_number})"
            self.bar.console.print(sweep_event_line(event), highlight=False)
            self.bar.update(self.task, completed=event.done)
