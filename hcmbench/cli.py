"""The `hcmbench` command line: parses options, calls the library, renders with rich. No logic here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hcmbench import __version__
from hcmbench.errors import HcmbenchError

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


def _say(message: str) -> None:
    if not _quiet():
        err_console.print(message, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar driven by a `(done, total)` callback; silent under --quiet."""
    if _quiet() or not err_console.is_terminal:  # no bar in logs and pipes: it would only add blank lines
        yield lambda done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
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


if __name__ == "__main__":  # pragma: no cover
    main()
