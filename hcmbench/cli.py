"""The `hcmbench` command line: parses options, calls the library, renders with rich. No logic here."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hcmbench import __version__
from hcmbench.errors import HcmbenchError
from hcmbench.formatting import duration
from hcmbench.study import STUDY_MODELS

console = Console()
err_console = Console(stderr=True)


class _Group(click.Group):
    """A click group that turns HcmbenchError into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except HcmbenchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


def _quiet() -> bool:
    ctx = click.get_current_context()
    return bool(ctx.find_root().obj and ctx.find_root().obj.get("quiet"))


detect_seeds_option = click.option(
    "--detect-seeds", type=click.IntRange(0), default=3, show_default=True,
    help="Seeds of the detectability test (a classifier trained per seed and set, 10-30 s each at 64 px on "
         "a CPU); 0 leaves the column out.")


def detector_config(seeds: int):
    """The detectability test's settings for `--detect-seeds` (0: no detectability column)."""
    from hcmbench.evaluation.detectability import DetectabilityConfig

    return DetectabilityConfig(seeds=seeds) if seeds else None


def _say(message: str) -> None:
    if not _quiet():
        err_console.print(message, highlight=False, soft_wrap=True)


def _bar() -> Progress:
    """The one look of hcmbench's progress bars: description, bar, done/total, elapsed; on stderr, transient."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=err_console, transient=True)


@contextlib.contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar driven by a `(done, total)` callback; silent under --quiet."""
    if _quiet() or not err_console.is_terminal:  # no bar in logs and pipes: it would only add blank lines
        yield lambda done, total: None
        return
    with _bar() as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _groups_option(value: tuple[str, ...]) -> tuple[str, ...] | None:
    """`--groups HCM,NOR` and `--groups HCM --groups NOR` both work."""
    names = tuple(g for item in value for g in item.split(",") if g.strip())
    return names or None


data_option = click.option(
    "--data", "data_root", type=click.Path(path_type=Path), default=None,
    help="ACDC-layout dataset root. Default: $HCMBENCH_DATA, else the built-in phantom.",
)
groups_option = click.option(
    "--groups", multiple=True, help="ACDC groups to use, e.g. HCM or HCM,NOR. Default: every group in the data.",
)
size_option = click.option("--size", type=click.Choice(["32", "64", "128"]), default="64", show_default=True,
                           help="Side of the preprocessed slices in pixels.")
skip_bad_option = click.option("--skip-bad", is_flag=True, help="Skip unreadable patients and report them, "
                               "instead of stopping at the first.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hcmbench")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or status lines.")
@click.pass_context
def main(ctx: click.Context, quiet: bool) -> None:
    """hcmbench: synthetic cardiac MRI you can trust.

    Train, sweep, evaluate and promote generative models of hypertrophic cardiomyopathy (HCM)
    short-axis MRI from the ACDC dataset, or from the built-in phantom when no data is given.
    """
    ctx.obj = {"quiet": quiet}


@main.group(cls=_Group)
def data() -> None:
    """Make, inspect and preview ACDC-layout datasets."""


@data.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to create (must not exist or be empty).")
@click.option("--patients-per-group", default=20, show_default=True, type=click.IntRange(1, 199),
              help="Patients in each of the five groups.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same dataset.")
@click.option("--cine", is_flag=True, help="Also write each patient's full cine sequence (_4d.nii.gz).")
def synth(out: Path, patients_per_group: int, seed: int, cine: bool) -> None:
    """Write the built-in phantom: a synthetic dataset in the ACDC layout (all five groups)."""
    from hcmbench.data.phantom import PhantomConfig, write_phantom

    with _progress("Writing phantom patients") as progress:
        write_phantom(out, PhantomConfig(patients_per_group=patients_per_group, seed=seed, cine=cine), progress=progress)
    _say(f"Wrote {patients_per_group * 5} phantom patients to {out}")


def _load(data_root: Path | None, groups: tuple[str, ...], size: str, skip_bad: bool):
    """Resolve the root, open it and preprocess the chosen groups (every group present by default)."""
    from hcmbench.config import DataConfig
    from hcmbench.data import load_slices, open_dataset, resolve_data_root

    with _progress("Generating the phantom") as progress:
        root = resolve_data_root(data_root, announce=_say, progress=progress)
    dataset = open_dataset(root, skip_bad=skip_bad)
    chosen = _groups_option(groups) or dataset.groups_present
    with _progress("Preprocessing slices") as progress:
        slices = load_slices(dataset, DataConfig(groups=chosen, size=int(size)), skip_bad=skip_bad, progress=progress)
    for reason in slices.skipped:
        _say(f"[yellow]skipped[/] {reason}")
    return dataset, slices


@data.command()
@data_option
@groups_option
@size_option
@skip_bad_option
def inspect(data_root: Path | None, groups: tuple[str, ...], size: str, skip_bad: bool) -> None:
    """Summarise a dataset: patients and slices per group, spacing, shapes, split sizes."""
    from hcmbench.data.inspect import summarize

    dataset, slices = _load(data_root, groups, size, skip_bad)
    summaries = summarize(dataset, slices)
    volumes = Table(title=f"Volumes in {dataset.root} (ED frames, from headers)", title_justify="left")
    for column in ("group", "patients", "slices", "pixel mm", "slice mm", "matrix"):
        volumes.add_column(column, justify="left" if column in ("group", "matrix") else "right")
    for s in summaries:
        volumes.add_row(
            s.group, str(s.patients), f"{s.slices_per_volume[0]}–{s.slices_per_volume[1]}",
            f"{s.spacing_mm[0]:.2f}–{s.spacing_mm[1]:.2f}", ", ".join(f"{t:g}" for t in s.thickness_mm),
            f"{s.rows[0]}–{s.rows[1]} × {s.cols[0]}–{s.cols[1]}",
        )
    volumes.add_section()
    volumes.add_row("all", str(sum(s.patients for s in summaries)), "", "", "", "")
    console.print(volumes)

    split_names = ("train", "val", "test")
    kept = Table(title="Preprocessed slices and patient-level splits", title_justify="left")
    kept.add_column("group")
    kept.add_column("slices", justify="right")
    for name in split_names:
        kept.add_column(f"{name} patients / slices", justify="right")
    for s in summaries:
        kept.add_row(s.group, str(s.kept_slices),
                     *(f"{s.split_patients[k]} / {s.split_slices[k]}" for k in split_names))
    kept.add_section()
    kept.add_row("all", str(len(slices)), *(
        f"{sum(s.split_patients[k] for s in summaries)} / {sum(s.split_slices[k] for s in summaries)}"
        for k in split_names))
    console.print(kept)
    frames = ", ".join(slices.config.frames)
    _say(f"Slices: frames {frames}, kept where the mask shows myocardium, {slices.config.size} px over "
         f"{slices.config.fov_mm:g} mm{' (from cache)' if slices.from_cache else ''}.")


@data.command()
@data_option
@groups_option
@size_option
@skip_bad_option
@click.option("--out", required=True, type=click.Path(path_type=Path), help="PNG file to write.")
@click.option("--per-group", default=8, show_default=True, type=click.IntRange(1, 64), help="Slices in each row.")
@click.option("--seed", default=0, show_default=True, type=int, help="Which slices are drawn.")
def preview(data_root: Path | None, groups: tuple[str, ...], size: str, skip_bad: bool, out: Path,
            per_group: int, seed: int) -> None:
    """Write a PNG grid of preprocessed slices, one row per group."""
    from hcmbench.data.inspect import preview_grid

    _, slices = _load(data_root, groups, size, skip_bad)
    preview_grid(slices, out, per_group=per_group, seed=seed)
    _say(f"Wrote {out}")


def _parse_settings(pairs: tuple[str, ...]) -> dict:
    """`--set latent_dim=128 --set channel_mults=[1,2,2]`: values read as YAML scalars, lists as tuples."""
    import yaml

    settings = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise HcmbenchError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise HcmbenchError(f"--set {key}: cannot read value {raw!r}") from None
        settings[key.strip()] = tuple(value) if isinstance(value, list) else value
    return settings


def describe_budget(config) -> str:
    """A TrainConfig's budget as a person reads it: "100 epochs", "20 kimg (ticks of 1 kimg), at most 15 minutes"."""
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


class _TrainDisplay:
    """Engine callback (duck-typed, so that the CLI imports no torch at start) that renders a live
    progress bar (the round's steps, the images shown and the time left) and one line per round."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task = None

    def __enter__(self) -> _TrainDisplay:
        if not self.quiet and err_console.is_terminal:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[budget]}  {task.fields[losses]}"), TimeElapsedColumn(),
                                console=err_console, transient=True)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    @staticmethod
    def _fmt(losses: dict) -> str:
        return "  ".join(f"{k} {v:.4g}" for k, v in losses.items())

    def on_train_start(self, trainer) -> None:
        if not self.quiet:
            budget = describe_budget(dataclasses.replace(trainer.config, epochs=trainer.epochs))
            err_console.print(f"Training {trainer.model.name} on {len(trainer.train_images)} slices "
                              f"({trainer.device}) for {budget}; validation on the "
                              f"{trainer.validation_source} split.", highlight=False)

    def on_step_end(self, event) -> None:
        if self.bar is None:
            return
        description = f"round {event.epoch}"
        if self.task is None:
            self.task = self.bar.add_task(description, total=event.steps, losses="", budget="")
        if event.step == 1:
            self.bar.reset(self.task, total=event.steps, description=description)
        left = f" · {duration(event.seconds_left)} left" if event.seconds_left is not None else ""
        self.bar.update(self.task, completed=event.step, total=event.steps, losses=self._fmt(event.losses),
                        budget=f"{event.kimg:.1f} kimg{left}")

    def on_epoch_end(self, event) -> None:
        if self.quiet:
            return
        marker = " [green]best[/]" if event.improved else ""
        of = f"/{event.epochs}" if event.epochs else ""
        line = (f"{event.unit} {event.epoch:>3}{of}  {event.kimg:.1f} kimg  {self._fmt(event.losses)}  "
                f"val {event.val_score:.4g}{marker}  {event.seconds:.1f} s")
        (self.bar.console if self.bar is not None else err_console).print(line, highlight=False, soft_wrap=True)


@main.command()
@click.option("--model", "model_name", required=True, help="Model to train: vae, gan, dcgan, acgan, infogan or ddpm.")
@data_option
@click.option("--groups", multiple=True, default=("HCM",), show_default=True, help="ACDC groups to train on.")
@click.option("--frames", default="ED,ES", show_default=True,
              help="Frames of each patient: ED, ES, 1-based numbers, or cine (every frame of the patients' "
                   "_4d cine files, where the dataset has them; ED and ES keep their expert masks).")
@size_option
@click.option("--epochs", type=click.IntRange(1), default=None, help="Budget in passes over the data. Default: the model's "
              "(100; 115 for ddpm) unless --kimg or --minutes is given.")
@click.option("--kimg", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Budget in thousands of images shown to the model, whatever the dataset's size (not with --epochs).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-clock cap on training: alone, or with --epochs/--kimg (whichever ends first).")
@click.option("--tick-kimg", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="With --kimg or --minutes: validate, checkpoint and draw every this many kimg.")
@click.option("--batch-size", type=click.IntRange(2), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True, help="Adam learning rate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds everything: same seed, same run.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder. Default: outputs/train/<model>.")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its own settings (--epochs, --kimg or "
              "--minutes may extend it).")
@click.option("--patience", type=click.IntRange(1), default=10, show_default=True,
              help="Early-stopping patience in rounds (epochs, or ticks with --kimg/--minutes).")
@click.option("--gp-weight", type=click.FloatRange(min=0), default=1.0, show_default=True, help="GAN family: R1 gradient penalty weight.")
@click.option("--label-smoothing", type=click.FloatRange(0, 0.5, max_open=True), default=0.1, show_default=True,
              help="GAN family: one-sided label smoothing.")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.999, show_default=True,
              help="EMA of the weights used for sampling (0: off).")
@click.option("--grad-clip", type=click.FloatRange(min=0, min_open=True), default=None, help="Clip gradient norm.")
@click.option("--sample-every", type=click.IntRange(0), default=5, show_default=True,
              help="Sample grid every N rounds (and at the end).")
@click.option("--max-steps-per-epoch", type=click.IntRange(1), default=None, help="Cap on steps per epoch (quick runs).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="A model setting, e.g. --set latent_dim=128.")
@click.option("--preset", default=None, help="A model's named recipe of settings and budget, e.g. cpu (sized for a "
              "laptop's CPU; `hcmbench study` uses it). Options given here and --set still win.")
@click.pass_context
def train(ctx: click.Context, model_name: str, data_root: Path | None, groups: tuple[str, ...], frames: str, size: str,
          epochs: int | None, kimg: float | None, minutes: float | None, tick_kimg: float, batch_size: int, lr: float, seed: int, out: Path | None,
          resume: bool, patience: int, gp_weight: float, label_smoothing: float, ema_decay: float,
          grad_clip: float | None, sample_every: int, max_steps_per_epoch: int | None, device: str,
          settings: tuple[str, ...], preset: str | None) -> None:
    """Train one model on preprocessed slices, with early stopping, checkpoints and sample grids.

    Writes into the run folder: checkpoints/best.pt and last.pt, samples/epoch_NNN.png and
    plots/losses.png. The budget is --epochs, or --kimg (images shown, comparable across datasets),
    either capped by --minutes.
    """
    from hcmbench import engine
    from hcmbench.config import DataConfig, layered_train_config
    from hcmbench.data import resolve_data_root
    from hcmbench.models.base import Preset
    from hcmbench.models.registry import model_class, model_preset

    model_class(model_name)  # an unknown name fails before any data work
    recipe = model_preset(model_name, preset) if preset else Preset("")
    options = dict(epochs=epochs, kimg=kimg, minutes=minutes, tick_kimg=tick_kimg, batch_size=batch_size, lr=lr,
                   seed=seed, patience=patience, device=device, gp_weight=gp_weight, label_smoothing=label_smoothing,
                   ema_decay=ema_decay, grad_clip=grad_clip, sample_every=sample_every,
                   max_steps_per_epoch=max_steps_per_epoch)
    given = {k: v for k, v in options.items()
             if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
    train_config = layered_train_config(options, recipe.train, given)
    model_settings = {**recipe.model, **_parse_settings(settings)}
    out = out or Path("outputs") / "train" / model_name.lower()
    with _TrainDisplay(_quiet()) as display, _progress("Preprocessing slices") as progress:
        if resume:
            result = engine.resume(out, epochs=epochs, data_root=data_root, callbacks=[display], progress=progress,
                                   kimg=kimg, minutes=minutes)
        else:
            root = resolve_data_root(data_root, announce=_say)
            data_config = DataConfig(groups=_groups_option(groups) or ("HCM",), size=int(size),
                                     frames=tuple(f.strip() for f in frames.split(",") if f.strip()))
            result = engine.train(model_name, root, out, data_config, train_config, model_settings,
                                  callbacks=[display], progress=progress)
    stop = "stopped early" if result.stopped_early else "finished"
    _say(f"{stop} after {result.epochs_run} {result.unit}s ({result.kimg:.1f} kimg, {duration(result.seconds)}); "
         f"best validation score {result.best_score:.4g} at {result.unit} {result.best_epoch}.")
    _say(f"Samples: {out / 'samples'}   Loss plot: {result.loss_plot}")
    console.print(f"Checkpoint: {result.best_checkpoint}", highlight=False, soft_wrap=True)


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-n", "count", type=click.IntRange(1), default=64, show_default=True, help="Number of images.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to create (must not exist or be empty).")
@click.option("--label", default=None, help="Class for conditional models (e.g. ES or HCM). Default: all classes in equal shares.")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "dpm++"]), default=None, help="Diffusion sampler.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Diffusion sampling steps (DDIM).")
@click.option("--guidance-scale", type=float, default=None, help="Classifier-free guidance (conditional ddpm).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
def sample(checkpoint: Path, count: int, out: Path, label: str | None, sampler: str | None, steps: int | None,
           guidance_scale: float | None, seed: int, batch_size: int, device: str) -> None:
    """Draw images from a checkpoint: one PNG per image and samples.npz (images in [0, 1], labels)."""
    from hcmbench.checkpoints import load_generator, resolve_device
    from hcmbench.sampling import draw, write_samples

    generator = load_generator(checkpoint, device=resolve_device(device))
    options = {"sampler": sampler, "steps": steps, "guidance_scale": guidance_scale}
    with _progress(f"Sampling {generator.model.name}") as progress:
        images, labels = draw(generator, count, label, seed, batch_size, options, progress)
    write_samples(out, images, labels, generator.classes)
    _say(f"Wrote {count} images and samples.npz to {out}")


@contextlib.contextmanager
def _phase_progress() -> Iterator[Callable[[str, int, int], None]]:
    """One rich progress bar for work in phases, driven by `(phase, done, total)`; silent under --quiet.
    Without a terminal (logs, pipes) each phase is announced once on a line of its own instead."""
    if _quiet():
        yield lambda phase, done, total: None
        return
    if not err_console.is_terminal:
        seen: set[str] = set()

        def announce(phase: str, done: int, total: int) -> None:
            if phase not in seen:
                seen.add(phase)
                _say(f"{phase}…")

        yield announce
        return
    with _bar() as bar:
        task = bar.add_task("", total=None)
        yield lambda phase, done, total: bar.update(task, description=phase, completed=done, total=total)


@main.command()
@click.argument("source")
@click.option("-n", "count", type=click.IntRange(1), default=1000, show_default=True, help="Number of images.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to create (must not exist or be empty).")
@click.option("--format", "fmt", default="nifti", show_default=True,
              help="nifti (ACDC layout: patientNNN/ with Info.cfg and volumes), png (PNGs + samples.npz) or npz.")
@click.option("--label", default=None, help="Class for conditional models (e.g. ES or HCM). Default: all classes in equal shares.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same images.")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "dpm++"]), default=None, help="Diffusion sampler.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Diffusion sampling steps (DDIM).")
@click.option("--guidance-scale", type=float, default=None, help="Classifier-free guidance (conditional ddpm).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--slices-per-volume", type=click.IntRange(1), default=8, show_default=True,
              help="nifti: generated slices stacked into each patient's volume.")
def generate(source: str, count: int, out: Path, fmt: str, label: str | None, seed: int, sampler: str | None,
             steps: int | None, guidance_scale: float | None, batch_size: int, device: str,
             slices_per_volume: int) -> None:
    """Write a synthetic dataset: ACDC-layout NIfTI (default), PNGs or one .npz, with a README.txt.

    SOURCE is a checkpoint file, an MLflow run id, or a runs:/ or models:/ URI (e.g. models:/hcm-ddpm@champion).
    In the NIfTI form a patient's volume stacks independent generated slices: not a coherent heart.
    """
    import tempfile

    from hcmbench.synthetic import check_format, generate_dataset
    from hcmbench.tracking import resolve_checkpoint

    check_format(fmt)  # before any download
    options = {"sampler": sampler, "steps": steps, "guidance_scale": guidance_scale}
    with tempfile.TemporaryDirectory(prefix="hcmbench-") as download, _progress("Sampling images") as progress:
        checkpoint = resolve_checkpoint(source, download)
        result = generate_dataset(checkpoint, out, count, fmt, label, seed, options, batch_size, device,
                                  slices_per_volume, source=source, progress=progress)
    patients = f" in {result.patients} patient folders" if result.format == "nifti" else ""
    _say(f"Wrote {result.images} {result.model} images ({result.format}){patients} to {out}")


@main.command()
@click.argument("source")
@click.option("-n", "count", type=click.IntRange(2), default=1000, show_default=True,
              help="Number of images to generate and score.")
@click.option("--data", "data_root", type=click.Path(path_type=Path), default=None,
              help="ACDC-layout root of the training data. Default: the one the checkpoint was trained on.")
@click.option("--reference", "reference_root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="An external ACDC-layout folder to compare against. Default: the held-out test split of --data.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for table.md and table.csv. Default: eval/ beside the run's checkpoints/, else ./eval.")
@click.option("--ssim-data-range", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="SSIM data range. 255 reproduces the study's inflated figures (labelled as such).")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "dpm++"]), default=None, help="Diffusion sampler.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Diffusion sampling steps.")
@click.option("--no-calibration", is_flag=True, help="Leave out the calibration rows (not recommended).")
@click.option("--group", default=None, help="Score one ACDC group (e.g. HCM) of a model trained on several: it is "
              "asked for that group and compared with that group's real slices only.")
@detect_seeds_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def evaluate(source: str, count: int, data_root: Path | None, reference_root: Path | None, out: Path | None,
             ssim_data_range: float, sampler: str | None, steps: int | None, no_calibration: bool, group: str | None,
             detect_seeds: int, seed: int, device: str) -> None:
    """Score a generator: SSIM / CC / MSE, FID, KID, PRDC, memorisation, diversity, with calibration rows.

    SOURCE is a checkpoint file, an MLflow run id, or a runs:/ or models:/ URI (e.g. models:/hcm-dcgan@champion).
    """
    import tempfile

    from hcmbench.evaluation.report import EvaluationConfig, default_output_folder, evaluate_checkpoint, rich_tables
    from hcmbench.tracking import resolve_checkpoint

    config = EvaluationConfig(n=count, data_range=ssim_data_range, seed=seed, calibration=not no_calibration,
                              detector=detector_config(detect_seeds))
    options = {"sampler": sampler, "steps": steps}
    with tempfile.TemporaryDirectory(prefix="hcmbench-") as download, _phase_progress() as progress:
        checkpoint = resolve_checkpoint(source, download)
        table = evaluate_checkpoint(checkpoint, data_root, reference_root, config, options, device,
                                    source_name=source, progress=progress, group=group)
    for part in rich_tables(table):
        console.print(part)
    md, csv_path = table.write(out or default_output_folder(source))
    _say(f"Wrote {md} and {csv_path}")


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the PNGs (created if needed).")
@click.option("--data", "data_root", type=click.Path(path_type=Path), default=None,
              help="Where the real slice comes from. Default: the first checkpoint's training data.")
@click.option("--name", "names", multiple=True, help="Panel label per source, in order. Default: the model names.")
@click.option("--seed", type=int, default=0, show_default=True)
def figure(sources: tuple[str, ...], out: Path, data_root: Path | None, names: tuple[str, ...], seed: int) -> None:
    """The study's figures: a real slice beside one sample per model (samples.png), and each model's loss curves.

    SOURCES are checkpoint files, MLflow run ids, or runs:/ or models:/ URIs.
    """
    import tempfile

    from hcmbench.evaluation.figures import study_figures
    from hcmbench.tracking import resolve_checkpoint

    with tempfile.TemporaryDirectory(prefix="hcmbench-") as download:
        checkpoints = [resolve_checkpoint(s, Path(download) / str(i)) for i, s in enumerate(sources)]
        paths = study_figures(checkpoints, out, data_root, seed, list(names) or None)
    for path in paths:
        console.print(f"Wrote {path}", highlight=False, soft_wrap=True)


def distributed_options(command: Callable) -> Callable:
    """The options every process of a study takes: where the study and the runs live, and its heartbeats."""
    options = [
        click.option("--storage", default=None, envvar="HCMBENCH_STORAGE",
                     help="Optuna storage URL shared by the study's workers, e.g. postgresql://USER:PASS@HOST/optuna. "
                          "Default: $HCMBENCH_STORAGE, else sqlite:///mlruns/optuna.db."),
        click.option("--tracking-uri", default=None,
                     help="MLflow tracking URI, e.g. http://HOST:5000. Default: $MLFLOW_TRACKING_URI, else "
                          "sqlite:///mlruns/mlflow.db (a worker: the study's)."),
        click.option("--heartbeat-interval", type=click.IntRange(1), default=60, show_default=True,
                     help="Seconds between a running trial's heartbeats."),
        click.option("--grace-period", type=click.IntRange(2), default=180, show_default=True,
                     help="Seconds without a heartbeat after which a trial's worker counts as dead: the trial is "
                          "FAILED and queued again."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Stop starting trials after this many seconds."),
        click.option("--device", default="auto", show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _summarise(result) -> None:
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.counts.items())) or "none"
    _say(f"Study {result.study_name}: {result.trials_run} trials run here ({counts}); "
         + ("all its trials have ended." if result.finished else f"its total is {result.total} trials."))
    if result.best_number is None:
        console.print("No trial finished: nothing to compare or promote yet.")
    else:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
        console.print(f"Best: trial {result.best_number}, {result.metric} {result.best_value:.4g} ({params})",
                      highlight=False, soft_wrap=True)
    console.print(f"MLflow parent run: {result.parent_run_id}   (hcmbench ui; hcmbench promote --model {result.model})",
                  highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        click.echo("stopped: the running trial was ended and queued again; run the same command to continue",
                   err=True)
        raise SystemExit(130) from None


@main.command()
@click.option("--model", "model_name", required=True, help="Model to sweep: vae, gan, dcgan, acgan, infogan, ddpm.")
@click.option("--trials", type=click.IntRange(1), default=20, show_default=True,
              help="The study's total number of trials, over every worker; the same command continues it.")
@click.option("--study", "study_name", default=None, help="Optuna study name. Default: hcmbench-<model>.")
@click.option("--space", "space_file", type=click.Path(path_type=Path), default=None,
              help="Search-space YAML. Default: the one hcmbench ships for the model (--print-space shows it).")
@click.option("--print-space", is_flag=True,
              help="Print the search space (the shipped one, or --space) as YAML and exit: "
                   "`--print-space > sweeps/mine.yaml`, edit it, then `--space sweeps/mine.yaml`.")
@data_option
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Budget per trial in epochs, replacing the search space's.")
@click.option("--kimg", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Budget per trial in thousands of images shown, replacing the search space's.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-clock budget per trial (alone, or capping --epochs/--kimg).")
@click.option("--seed", type=int, default=0, show_default=True)
@distributed_options
def sweep(model_name: str, trials: int, study_name: str | None, space_file: Path | None, print_space: bool,
          data_root: Path | None,
          epochs: int | None, kimg: float | None, minutes: float | None, seed: int, storage: str | None, tracking_uri: str | None, heartbeat_interval: int,
          grace_period: int, timeout: float | None, device: str) -> None:
    """Tune a model with an Optuna study; every trial is an MLflow run (browse them with `hcmbench ui`).

    `hcmbench worker` processes, here or on other machines, can join the study and share its trials.
    """
    from hcmbench.data import resolve_data_root
    from hcmbench.models.registry import model_class
    from hcmbench.sweep import Heartbeat, load_space, run_sweep, space_text

    model_class(model_name)  # an unknown model fails here, before any store is touched
    space = load_space(model_name, space_file)
    if print_space:
        click.echo(space_text(model_name, space_file), nl=False)
        return
    heartbeat = Heartbeat(heartbeat_interval, grace_period)
    data_root = resolve_data_root(data_root, announce=_say)
    with _sweep_display(trials) as display, _interruptible():
        result = run_sweep(model_name, trials, space, study_name, storage, timeout, data_root, epochs, seed,
                           device, display=display, heartbeat=heartbeat, tracking_uri=tracking_uri, kimg=kimg,
                           minutes=minutes)
    _summarise(result)


@main.command()
@click.option("--study", "study_name", required=True, help="The study to join (made by `hcmbench sweep`).")
@click.option("--data", "data_root", type=click.Path(path_type=Path), default=None,
              help="This machine's copy of the study's data. Default: the study's data root, or the built-in "
                   "phantom if the study uses it.")
@click.option("--wait", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Seconds to wait for the study to appear (workers may start before `hcmbench sweep`).")
@distributed_options
def worker(study_name: str, data_root: Path | None, wait: float, storage: str | None, tracking_uri: str | None,
           heartbeat_interval: int, grace_period: int, timeout: float | None, device: str) -> None:
    """Join a sweep's study and run its trials until it has its total; start as many as you like, anywhere.

    A worker then waits for trials running elsewhere and takes over any whose worker dies.
    """
    from hcmbench.sweep import Heartbeat, default_storage, run_worker

    heartbeat = Heartbeat(heartbeat_interval, grace_period)
    with _sweep_display(None) as display, _interruptible():
        result = run_worker(study_name, storage or default_storage(), data_root, device, timeout, wait,
                            display=display, heartbeat=heartbeat, tracking_uri=tracking_uri)
    _summarise(result)


@main.command()
@click.option("--model", "model_name", required=True, help="Model whose best finished run to register.")
@click.option("--metric", default="fid", show_default=True,
              help="What 'best' means: an evaluation figure (fid, kid, ssim, precision, ...) or val_score.")
@click.option("--alias", default="champion", show_default=True, help="Registry alias to point at the new version.")
def promote(model_name: str, metric: str, alias: str) -> None:
    """Register the best run of a model as hcm-<model> in the MLflow registry and point the alias at it.

    The run's checkpoint is loaded and sampled first; one that fails is refused and nothing is registered.
    The registry is the runs' store (sqlite:///mlruns/mlflow.db unless $MLFLOW_TRACKING_URI says otherwise),
    so `hcmbench generate models:/hcm-<model>@champion` works from this folder. From Python, point MLflow at
    it first: mlflow.set_tracking_uri("sqlite:///<this folder>/mlruns/mlflow.db"), then
    mlflow.pyfunc.load_model("models:/hcm-<model>@champion").
    """
    from hcmbench.tracking import promote as promote_run

    with _status(f"Registering the best {model_name} run"):
        result = promote_run(model_name, metric, alias)
    console.print(f"Registered {result.name} version {result.version} (run {result.run_id}, {result.metric} "
                  f"{result.value:.4g}) as models:/{result.name}@{result.alias}", highlight=False, soft_wrap=True)


@main.command()
@click.option("--models", "model_names", default=None,
              help="Comma-separated models to compare. Default: every model with a finished sweep run.")
@click.option("--metric", default="fid", show_default=True, help="What picks each model's best run.")
@click.option("-n", "count", type=click.IntRange(2), default=1000, show_default=True, help="Images generated per model.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("compare"), show_default=True,
              help="Folder for table.md and table.csv.")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "dpm++"]), default="ddim", show_default=True,
              help="Diffusion sampler (other models ignore it).")
@click.option("--steps", type=click.IntRange(1), default=50, show_default=True, help="Diffusion sampling steps.")
@detect_seeds_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def compare(model_names: str | None, metric: str, count: int, out: Path, sampler: str, steps: int,
            detect_seeds: int, seed: int, device: str) -> None:
    """The study's Table 1: the best run of each model against held-out patients, with calibration rows."""
    import tempfile

    from hcmbench.evaluation.report import EvaluationConfig, evaluate_checkpoints, rich_tables
    from hcmbench.tracking import best_runs, download_checkpoints, log_comparison, utility_gains

    names = [m.strip() for m in model_names.split(",") if m.strip()] if model_names else None
    runs = best_runs(names, metric)
    with tempfile.TemporaryDirectory(prefix="hcmbench-") as tmp, _phase_progress() as progress:
        checkpoints = download_checkpoints(runs, Path(tmp))
        table = evaluate_checkpoints(checkpoints, config=EvaluationConfig(n=count, seed=seed,
                                                                          detector=detector_config(detect_seeds)),
                                     sample_options={"sampler": sampler, "steps": steps}, device=device,
                                     progress=progress)
    table = table.with_utility(utility_gains({name: run.info.run_id for name, run in runs.items()}))
    for part in rich_tables(table):
        console.print(part)
    md, csv_path = table.write(out)
    run_id = log_comparison(table, {name: run.info.run_id for name, run in runs.items()})
    _say(f"Wrote {md} and {csv_path}; logged as MLflow run {run_id} (experiment hcmbench-compare)")


@main.command()
@data_option
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Wall-clock training budget of each model.")
@click.option("--models", "model_names", default=",".join(STUDY_MODELS),
              show_default=True, help="Comma-separated models to train and compare.")
@click.option("--preset", default="cpu", show_default=True, help="Each model's recipe (see `train --preset`).")
@click.option("-n", "count", type=click.IntRange(2), default=1000, show_default=True,
              help="Images generated per model for the table.")
@click.option("--detect-seeds", type=click.IntRange(0), default=3, show_default=True,
              help="Seeds of the detectability test; 0 leaves the column out.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs") / "study", show_default=True,
              help="Folder for the runs, table.md, table.csv and figures/. The same command resumes a study.")
@click.option("--results", "results_md", type=click.Path(path_type=Path), default=None,
              help="A Markdown file (e.g. docs/results.md) whose study section gets the table, command, machine "
                   "and times; Figure 4 is copied into figures/ beside it.")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "dpm++"]), default="dpm++", show_default=True,
              help="How the DDPM is sampled for the table and the figure (other models ignore it).")
@click.option("--steps", type=click.IntRange(1), default=20, show_default=True, help="The sampler's steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def study(data_root: Path | None, minutes: float, model_names: str, preset: str, count: int, detect_seeds: int,
          out: Path, results_md: Path | None, sampler: str, steps: int, seed: int, device: str) -> None:
    """The published study's Table 1, measured: train every model at the same budget, then score them.

    Each model's preset trains for --minutes into OUT/<model> (an MLflow run in hcmbench-study; an
    interrupted study resumes where it stopped). Then one calibrated table against the held-out test
    patients, Figure 4 (a real slice beside a sample of each model) and the loss curves.
    """
    import shlex

    from hcmbench.data import resolve_data_root
    from hcmbench.evaluation.report import rich_tables
    from hcmbench.study import StudyConfig, results_section, run_study, write_results_section

    config = StudyConfig(models=tuple(m.strip().lower() for m in model_names.split(",") if m.strip()),
                         minutes=minutes, preset=preset, n=count, detect_seeds=detect_seeds, seed=seed, device=device,
                         sampler=sampler, steps=steps)
    root = resolve_data_root(data_root, announce=_say)
    with _phase_progress() as progress:
        result = run_study(root, out, config, display=_say, progress=progress)
    for part in rich_tables(result.table):
        console.print(part)
    _say(f"Wrote {out / 'table.md'}, {out / 'table.csv'} and {out / 'figures'}; MLflow experiment hcmbench-study")
    if results_md is not None:
        figure = results_md.parent / "figures" / "study_samples.png"
        spelled = ["study", "--data", str(root), "--minutes", f"{minutes:g}", "--models", ",".join(config.models),
                   "--preset", preset, "-n", str(count), "--detect-seeds", str(detect_seeds), "--out", str(out),
                   "--results", str(results_md), "--sampler", sampler, "--steps", str(steps),
                   "--seed", str(seed)]  # every setting, so that it reruns as it ran
        command = "hcmbench " + " ".join(shlex.quote(arg) for arg in spelled)
        section = results_section(result, command, config, figure.relative_to(results_md.parent).as_posix())
        write_results_section(results_md, section, result.figures[0], figure)
        _say(f"Updated the study section of {results_md} and {figure}")


def _number_list(kind: type, allow_all: bool = False) -> Callable:
    """A Click callback parsing "2,5,all" / "0.5,1,2" into a tuple (None for "all")."""
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple:
        items = []
        for part in (p.strip() for p in value.split(",") if p.strip()):
            if allow_all and part.lower() == "all":
                items.append(None)
                continue
            try:
                items.append(kind(part))
            except ValueError:
                raise click.BadParameter(f"{part!r} is not {'an integer' if kind is int else 'a number'}"
                                         + (" or 'all'" if allow_all else "")) from None
        if not items:
            raise click.BadParameter("give at least one value")
        return tuple(items)
    return parse


@main.command()
@click.option("--model-uri", "sources", multiple=True, required=True,
              help="A generator: models:/hcm-dcgan@champion, runs:/ID, a run id or a checkpoint file. Repeat for several.")
@data_option
@click.option("--patients-per-group", "patients", default="2,5,all", show_default=True,
              callback=_number_list(int, allow_all=True), help="Real training patients per group (scarcity levels).")
@click.option("--synthetic-ratio", "ratios", default="0.5,1,2", show_default=True, callback=_number_list(float),
              help="Synthetic HCM slices added, as multiples of the real HCM slices.")
@click.option("--seeds", type=click.IntRange(1), default=3, show_default=True, help="Repeats (patients, images, init).")
@click.option("--tasks", default="hcm,5class", show_default=True, help="hcm (HCM vs the rest) and/or 5class.")
@click.option("--size", type=click.Choice(["32", "64", "128"]), default="64", show_default=True,
              help="Slice size; the generators must have been trained at it.")
@click.option("--epochs", type=click.IntRange(1), default=15, show_default=True, help="Classifier epochs.")
@click.option("--no-augmentation", is_flag=True, help="Leave out the classic-augmentation baseline.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("utility"), show_default=True,
              help="Folder for utility.md, utility.csv and utility.png.")
@click.option("--device", default="auto", show_default=True)
def utility(sources: tuple[str, ...], data_root: Path | None, patients: tuple, ratios: tuple, seeds: int, tasks: str,
            size: str, epochs: int, no_augmentation: bool, out: Path, device: str) -> None:
    """Does synthetic data help? HCM classifiers on scarce real data, with and without each generator's images.

    Scored on held-out real patients (balanced accuracy, ROC AUC, per slice and per patient), against classic
    augmentation as the baseline to beat; logged to MLflow (experiment hcmbench-utility).
    """
    import tempfile

    from hcmbench.checkpoints import load_generator, resolve_device
    from hcmbench.data import resolve_data_root
    from hcmbench.evaluation.utility import UtilityConfig, generator_names, rich_table, run_utility
    from hcmbench.tracking import log_utility, resolve_checkpoint

    config = UtilityConfig(tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()), patients_per_group=patients,
                           synthetic_ratios=ratios, seeds=seeds, size=int(size), epochs=epochs,
                           augmentation=not no_augmentation, device=device)
    data_root = resolve_data_root(data_root, announce=_say)
    with tempfile.TemporaryDirectory(prefix="hcmbench-") as download:
        generators = [load_generator(resolve_checkpoint(s, Path(download) / str(i)), device=resolve_device(device))
                      for i, s in enumerate(sources)]
    names = generator_names(generators)
    with _progress("training classifiers") as progress:
        result = run_utility(data_root, dict(zip(names, generators)), config, progress=progress)
    console.print(rich_table(result))
    paths = result.write(out)
    run_id = log_utility(result, dict(zip(names, sources)), paths)
    _say(f"Wrote {', '.join(str(p) for p in paths)}; logged as MLflow run {run_id} (experiment hcmbench-utility)")


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (local only by default).")
def ui(port: int, host: str) -> None:
    """Start `mlflow ui` on this project's store (Ctrl-C stops it)."""
    import subprocess

    from hcmbench.tracking import ui_command

    command = ui_command(host, port)
    _say(f"MLflow UI on http://{host}:{port} (store {command[command.index('--backend-store-uri') + 1]})")
    try:
        raise SystemExit(subprocess.call(command))
    except KeyboardInterrupt:
        raise SystemExit(0) from None


@contextlib.contextmanager
def _status(message: str) -> Iterator[None]:
    """A spinner with a message on a terminal; silent otherwise and under --quiet."""
    if _quiet() or not err_console.is_terminal:
        yield
        return
    with err_console.status(message):
        yield


@contextlib.contextmanager
def _sweep_display(trials: int | None) -> Iterator[Callable[[object], None]]:
    """A live line (trial, epoch, study-wide progress, best so far) on a terminal, else one line per event
    worth logging (trials ended, waiting for other workers)."""
    from hcmbench.sweep import Joined, Preparing, TrialEnded, TrialEpoch, TrialStarted, Waiting

    def line(event: object) -> str | None:
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

    if _quiet():
        yield lambda event: None
        return
    if not err_console.is_terminal:
        last = {"text": ""}

        def log(event: object) -> None:
            text = line(event)
            if text and text != last["text"]:  # a worker that waits says so once, not every poll
                _say(text)
                last["text"] = text

        yield log
        return
    with _bar() as bar:
        task = bar.add_task("sweep", total=trials)
        state = {"best": ""}

        def update(event: object) -> None:
            if isinstance(event, Preparing):
                bar.update(task, description="preparing the data and the feature space")
            elif isinstance(event, Joined):
                bar.update(task, total=event.total, completed=event.done)
            elif isinstance(event, Waiting):
                bar.update(task, description=f"waiting for trial(s) {', '.join(map(str, event.running))} "
                                             f"on other workers{state['best']}")
            elif isinstance(event, TrialStarted):
                bar.update(task, description=f"trial {event.number}{state['best']}")
            elif isinstance(event, TrialEpoch):
                of = f"/{event.epochs}" if event.epochs else ""
                bar.update(task, description=f"trial {event.number} {event.unit} {event.epoch}{of} "
                                             f"({event.kimg:.1f} kimg) val {event.val_score:.4g}{state['best']}")
            elif isinstance(event, TrialEnded):
                if event.best_value is not None:
                    state["best"] = f"  best {event.best_value:.4g} (trial {event.best_number})"
                bar.console.print(line(event), highlight=False)
                bar.update(task, completed=event.done)

        yield update


if __name__ == "__main__":  # pragma: no cover
    main()
