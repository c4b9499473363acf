"""`hcmbench sample` and `hcmbench generate`: images from a trained generator."""

from __future__ import annotations

from pathlib import Path

import click

from hcmbench.cli.app import main
from hcmbench.cli.display import Display
from hcmbench.cli.options import device_option, out_folder_option, sample_options, sampling_options, seed_option

label_option = click.option("--label", default=None, help="Class for conditional models (e.g. ES or HCM). Default: "
                            "all classes in equal shares.")
batch_option = click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True,
                            help="Images drawn at once.")


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-n", "count", type=click.IntRange(1), default=64, show_default=True, help="Number of images.")
@out_folder_option
@label_option
@sampling_options()
@seed_option
@batch_option
@device_option
def sample(checkpoint: Path, count: int, out: Path, label: str | None, sampler: str | None, steps: int | None,
           precision: str | None, guidance_scale: float | None, seed: int, batch_size: int, device: str) -> None:
    """Draw images from a checkpoint: one PNG per image and samples.npz (images in [0, 1], labels)."""
    from hcmbench.atomic import check_new_folder
    from hcmbench.checkpoints import load_generator, resolve_device
    from hcmbench.sampling import draw, write_samples

    display = Display.current()
    check_new_folder(out)  # before sampling, not after
    generator = load_generator(checkpoint, device=resolve_device(device))
    options = sample_options(sampler, steps, precision, guidance_scale)
    with display.progress(f"Sampling {generator.model.name}") as progress:
        images, labels = draw(generator, count, label, seed, batch_size, options, progress)
    write_samples(out, images, labels, generator.classes)
    display.say(f"Wrote {count} images and samples.npz to {out}")


@main.command()
@click.argument("source")
@click.option("-n", "count", type=click.IntRange(1), default=1000, show_default=True, help="Number of images.")
@out_folder_option
@click.option("--format", "fmt", default="nifti", show_default=True,
              help="nifti (ACDC layout: patientNNN/ with Info.cfg and volumes), png (PNGs + samples.npz) or npz.")
@label_option
@seed_option
@sampling_options()
@batch_option
@device_option
@click.option("--slices-per-volume", type=click.IntRange(1), default=8, show_default=True,
              help="nifti: generated slices stacked into each patient's volume.")
def generate(source: str, count: int, out: Path, fmt: str, label: str | None, seed: int, sampler: str | None,
             steps: int | None, precision: str | None, guidance_scale: float | None, batch_size: int, device: str,
             slices_per_volume: int) -> None:
    """Write a synthetic dataset: ACDC-layout NIfTI (default), PNGs or one .npz, with a README.txt.

    SOURCE is a checkpoint file, an MLflow run id, or a runs:/ or models:/ URI (e.g. models:/hcm-ddpm@champion).
    In the NIfTI form a patient's volume stacks independent generated slices: not a coherent heart.
    """
    import tempfile

    from hcmbench.synthetic import check_format, generate_dataset
    from hcmbench.tracking import resolve_checkpoint

    from hcmbench.atomic import check_new_folder

    display = Display.current()
    check_format(fmt)  # before any download
    check_new_folder(out)
    options = sample_options(sampler, steps, precision, guidance_scale)
    with tempfile.TemporaryDirectory(prefix="hcmbench-") as download, display.progress("Sampling images") as progress:
        checkpoint = resolve_checkpoint(source, download)
        result = generate_dataset(checkpoint, out, count, fmt, label, seed, options, batch_size, device,
                                  slices_per_volume, source=source, progress=progress)
    patients = f" in {result.patients} patient folders" if result.format == "nifti" else ""
    display.say(f"Wrote {result.images} {result.model} images ({result.format}){patients} to {out}")
