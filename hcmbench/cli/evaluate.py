"""`hcmbench evaluate`, `figure` and `compare`: score generators against held-out real patients."""

from __future__ import annotations

from pathlib import Path

import click

from hcmbench.cli.app import main
from hcmbench.cli.display import Display, console
from hcmbench.cli.options import (check_outputs, detect_seeds_option, detector_config, device_option, force_option,
                                  parse_list, sample_options, sampling_options, seed_option)

TABLE_FILES = ("table.md", "table.csv")


@main.command()
@click.argument("source")
@click.option("-n", "count", type=click.IntRange(2), default=1000, show_default=True,
              help="Number of images to generate and score.")
@click.option("--data", "data_root", type=click.Path(path_type=Path), default=None,
              help="ACDC-layout root of the training data. Default: the one the checkpoint was trained on.")
@click.option("--test-data", "--reference", "reference_root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="An external ACDC-layout folder of test patients to compare against: patients never "
              "seen by the generator or the classifier. Default: the held-out test split of --data.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for table.md and table.csv. Default: eval/ beside the run's checkpoints/, else ./eval.")
@click.option("--ssim-data-range", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="SSIM data range. 255 reproduces the study's inflated figures (labelled as such).")
@sampling_options(guidance=False)
@click.option("--no-calibration", is_flag=True, help="Leave out the calibration rows (not recommended).")
@click.option("--group", default=None, help="Score one ACDC group (e.g. HCM) of a model trained on several: it is "
              "asked for that group and compared with that group's real slices only.")
@detect_seeds_option
@seed_option
@device_option
@force_option
def evaluate(source: str, count: int, data_root: Path | None, reference_root: Path | None, out: Path | None,
             ssim_data_range: float, sampler: str | None, steps: int | None, precision: str | None, no_calibration: bool, group: str | None,
             detect_seeds: int, seed: int, device: str, force: bool) -> None:
    """Score a generator: SSIM / CC / MSE, FID, KID, PRDC, memorisation, diversity, with calibration rows.

    SOURCE is a checkpoint file, an MLflow run id, or a runs:/ or models:/ URI (e.g. models:/hcm-dcgan@champion).
    """
    import tempfile

    from hcmbench.evaluation.report import EvaluationConfig, default_output_folder, evaluate_checkpoint, rich_tables
    from hcmbench.tracking import resolve_checkpoint

    display = Display.current()
    out = out or default_output_folder(source)
    check_outputs([out / name for name in TABLE_FILES], force)  # before minutes of evaluation
    config = EvaluationConfig(n=count, data_range=ssim_data_range, seed=seed, calibration=not no_calibration,
                              detector=detector_config(detect_seeds))
    with tempfile.TemporaryDirectory(prefix="hcmbench-") as download, display.phases() as progress:
        checkpoint = resolve_checkpoint(source, download)
        table = evaluate_checkpoint(checkpoint, data_root, reference_root, config, sample_options(sampler, steps, precision),
                                    device, source_name=source, progress=progress, group=group)
    for part in rich_tables(table):
        console.print(part)
    md, csv_path = table.write(out)
    display.say(f"Wrote {md} and {csv_path}")


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the PNGs (created if needed).")
@click.option("--data", "data_root", type=click.Path(path_type=Path), default=None,
              help="Where the real slice comes from. Default: the first checkpoint's training data.")
@click.option("--name", "names", multiple=True, help="Panel label per source, in order. Default: the model names.")
@sampling_options(guidance=False)
@seed_option
@force_option
def figure(sources: tuple[str, ...], out: Path, data_root: Path | None, names: tuple[str, ...], sampler: str | None,
           steps: int | None, precision: str | None, seed: int, force: bool) -> None:
    """The study's figures: a real slice beside one sample per model (samples.png), and each model's loss curves.

    SOURCES are checkpoint files, MLflow run ids, or runs:/ or models:/ URIs.
    """
    import tempfile

    from hcmbench.evaluation.figures import study_figures
    from hcmbench.tracking import resolve_checkpoint

    check_outputs([out / "samples.png"], force)  # at once; the loss curves' names are known once loaded
    with tempfile.TemporaryDirectory(prefix="hcmbench-") as download:
        checkpoints = [resolve_checkpoint(s, Path(download) / str(i)) for i, s in enumerate(sources)]
        paths = study_figures(checkpoints, out, data_root, seed, list(names) or None,
                              sample_options=sample_options(sampler, steps, precision),
                              check=lambda files: check_outputs(files, force))
    for path in paths:
        console.print(f"Wrote {path}", highlight=False, soft_wrap=True)


@main.command()
@click.option("--models", "model_names", default=None,
              help="Comma-separated models to compare. Default: every model with a finished sweep run.")
@click.option("--metric", default="fid", show_default=True, help="What picks each model's best run.")
@click.option("-n", "count", type=click.IntRange(2), default=1000, show_default=True, help="Images generated per model.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("compare"), show_default=True,
              help="Folder for table.md and table.csv.")
@sampling_options("ddim", 50, guidance=False)
@detect_seeds_option
@seed_option
@device_option
@force_option
def compare(model_names: str | None, metric: str, count: int, out: Path, sampler: str, steps: int,
            precision: str | None, detect_seeds: int, seed: int, device: str, force: bool) -> None:
    """The study's Table 1: the best run of each model against held-out patients, with calibration rows."""
    import tempfile

    from hcmbench.evaluation.report import EvaluationConfig, evaluate_checkpoints, rich_tables
    from hcmbench.tracking import best_runs, download_checkpoints, log_comparison, utility_gains

    display = Display.current()
    check_outputs([out / name for name in TABLE_FILES], force)
    runs = best_runs(list(parse_list(model_names)) if model_names else None, metric)
    with tempfile.TemporaryDirectory(prefix="hcmbench-") as tmp, display.phases() as progress:
        checkpoints = download_checkpoints(runs, Path(tmp))
        table = evaluate_checkpoints(checkpoints, config=EvaluationConfig(n=count, seed=seed,
                                                                          detector=detector_config(detect_seeds)),
                                     sample_options=sample_options(sampler, steps, precision), device=device,
                                     progress=progress)
    table = table.with_utility(utility_gains({name: run.info.run_id for name, run in runs.items()}))
    for part in rich_tables(table):
        console.print(part)
    md, csv_path = table.write(out)
    run_id = log_comparison(table, {name: run.info.run_id for name, run in runs.items()})
    display.say(f"Wrote {md} and {csv_path}; logged as MLflow run {run_id} (experiment hcmbench-compare)")
