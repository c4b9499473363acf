"""`hcmbench data`: make, inspect and preview ACDC-layout datasets."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from hcmbench.cli.app import Group, main
from hcmbench.cli.display import Display, console
from hcmbench.cli.options import (check_outputs, data_option, groups_option, out_folder_option, parse_groups,
                                  size_option, skip_bad_option)


@main.group(cls=Group)
def data() -> None:
    """Make, inspect and preview ACDC-layout datasets."""


@data.command()
@out_folder_option
@click.option("--patients-per-group", default=20, show_default=True, type=click.IntRange(1, 199),
              help="Patients in each of the five groups.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same dataset.")
@click.option("--cine", is_flag=True, help="Also write each patient's full cine sequence (_4d.nii.gz).")
def synth(out: Path, patients_per_group: int, seed: int, cine: bool) -> None:
    """Write the built-in phantom: a synthetic dataset in the ACDC layout (all five groups)."""
    from hcmbench.data.phantom import PhantomConfig, write_phantom

    display = Display.current()
    with display.progress("Writing phantom patients") as progress:
        write_phantom(out, PhantomConfig(patients_per_group=patients_per_group, seed=seed, cine=cine), progress=progress)
    display.say(f"Wrote {patients_per_group * 5} phantom patients to {out}")


def _load(display: Display, data_root: Path | None, groups: tuple[str, ...], size: str, skip_bad: bool) -> tuple:
    """Resolve the root, open it and preprocess the chosen groups (every group present by default)."""
    from hcmbench.config import DataConfig
    from hcmbench.data import load_slices, open_dataset, resolve_data_root

    with display.progress("Generating the phantom") as progress:
        root = resolve_data_root(data_root, announce=display.say, progress=progress)
    dataset = open_dataset(root, skip_bad=skip_bad)
    chosen = parse_groups(groups) or dataset.groups_present
    with display.progress("Preprocessing slices") as progress:
        slices = load_slices(dataset, DataConfig(groups=chosen, size=int(size)), skip_bad=skip_bad, progress=progress)
    for reason in slices.skipped:
        display.say(f"[yellow]skipped[/] {reason}")
    return dataset, slices


@data.command()
@data_option
@groups_option(None)
@size_option
@skip_bad_option
def inspect(data_root: Path | None, groups: tuple[str, ...], size: str, skip_bad: bool) -> None:
    """Summarise a dataset: patients and slices per group, spacing, shapes, split sizes."""
    from hcmbench.data.summary import summarize

    display = Display.current()
    dataset, slices = _load(display, data_root, groups, size, skip_bad)
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
    display.say(f"Slices: frames {frames}, kept where the mask shows myocardium, {slices.config.size} px over "
         f"{slices.config.fov_mm:g} mm{' (from cache)' if slices.from_cache else ''}.")


@data.command()
@data_option
@groups_option(None)
@size_option
@skip_bad_option
@click.option("--out", required=True, type=click.Path(path_type=Path), help="PNG file to write.")
@click.option("--per-group", default=8, show_default=True, type=click.IntRange(1, 64), help="Slices in each row.")
@click.option("--seed", default=0, show_default=True, type=int, help="Which slices are drawn.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def preview(data_root: Path | None, groups: tuple[str, ...], size: str, skip_bad: bool, out: Path,
            per_group: int, seed: int, force: bool) -> None:
    """Write a PNG grid of preprocessed slices, one row per group."""
    from hcmbench.data.summary import preview_grid

    check_outputs([out], force)
    display = Display.current()
    _, slices = _load(display, data_root, groups, size, skip_bad)
    preview_grid(slices, out, per_group=per_group, seed=seed)
    display.say(f"Wrote {out}")
