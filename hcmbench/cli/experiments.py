"""`hcmbench study` and `hcmbench utility`: the experiments that answer the study's questions."""

from __future__ import annotations

from pathlib import Path

import click

from hcmbench.cli.app import main
from hcmbench.cli.display import Display, console
from hcmbench.cli.options import (check_outputs, data_option, detect_seeds_option, device_option, force_option,
                                  number_list, parse_list, sampling_options, seed_option, size_option)
from hcmbench.experiments.study import STUDY_MODELS


@main.command()
@data_option
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Wall-clock training budget of each model.")
@click.option("--models", "model_names", default=",".join(STUDY_MODELS),
              show_default=True, help="Comma-separated models to train and compare.")
@click.option("--preset", default="cpu", show_default=True, help="Each model's recipe (see `train --preset`).")
@click.option("-n", "count", type=click.IntRange(2), default=1000, show_default=True,
              help="Images generated per model for the table.")
@detect_seeds_option
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs") / "study", show_default=True,
              help="Folder for the runs, table.md, table.csv and figures/. The same command resumes a study.")
@click.option("--results", "results_md", type=click.Path(path_type=Path), default=None,
              help="A Markdown file (e.g. docs/results.md) whose study section gets the table, command, machine "
                   "and times; Figure 4 is copied into figures/ beside it.")
@sampling_options("dpm++", 20, guidance=False)
@seed_option
@device_option
def study(data_root: Path | None, minutes: float, model_names: str, preset: str, count: int, detect_seeds: int,
          out: Path, results_md: Path | None, sampler: str, steps: int, precision: str | None, seed: int,
          device: str) -> None:
    """The published study's Table 1, measured: train every model at the same budget, then score them.

    Each model's preset trains for --minutes into OUT/<model> (an MLflow run in hcmbench-study; an
    interrupted study resumes where it stopped). Then one calibrated table against the held-out test
    patients, Figure 4 (a real slice beside a sample of each model) and the loss curves.
    """
    import shlex

    from hcmbench.data import resolve_data_root
    from hcmbench.evaluation.report import rich_tables
    from hcmbench.experiments.study import StudyConfig, results_section, run_study, write_results_section

    from hcmbench.atomic import check_writable

    display = Display.current()
    check_writable(out, folder=True)  # before minutes of training
    if results_md is not None:
        check_writable(results_md)
        check_writable(results_md.parent / "figures", folder=True)
    config = StudyConfig(models=tuple(m.lower() for m in parse_list(model_names)), minutes=minutes, preset=preset,
                         n=count, detect_seeds=detect_seeds, seed=seed, device=device, sampler=sampler, steps=steps,
                         precision=precision or "fp32")
    root = resolve_data_root(data_root, announce=display.say)
    with display.phases() as progress:
        result = run_study(root, out, config, display=display.say, progress=progress)
    for part in rich_tables(result.table):
        console.print(part)
    display.say(f"Wrote {out / 'table.md'}, {out / 'table.csv'} and {out / 'figures'}; MLflow experiment hcmbench-study")
    if results_md is not None:
        figure = results_md.parent / "figures" / "study_samples.png"
        spelled = ["study", "--data", str(root), "--minutes", f"{minutes:g}", "--models", ",".join(config.models),
                   "--preset", preset, "-n", str(count), "--detect-seeds", str(detect_seeds), "--out", str(out),
                   "--results", str(results_md), "--sampler", sampler, "--steps", str(steps),
                   *(["--precision", precision] if precision else []),
                   "--seed", str(seed)]  # every setting, so that it reruns as it ran
        command = "hcmbench " + " ".join(shlex.quote(arg) for arg in spelled)
        section = results_section(result, command, config, figure.relative_to(results_md.parent).as_posix())
        write_results_section(results_md, section, result.figures[0], figure)
        display.say(f"Updated the study section of {results_md} and {figure}")


TEST_DATA_HELP = ("An ACDC-layout folder of test patients: patients never seen by the generator or the classifier "
                  "(e.g. the ACDC testing set). Every patient of it is tested, whatever its split.")


def _summary_at(ctx: click.Context, param: click.Parameter, value: str | None):
    """--summary-at TASK,PATIENTS,RATIO as a tuple (None: the default, or the grid's nearest)."""
    from hcmbench.errors import HcmbenchError
    from hcmbench.experiments.utility import parse_summary_at

    if value is None:
        return None
    try:
        return parse_summary_at(value)
    except HcmbenchError as error:
        raise click.BadParameter(str(error)) from None


@main.command()
@click.option("--model-uri", "sources", multiple=True, required=True,
              help="A generator: models:/hcm-dcgan@champion, runs:/ID, a run id or a checkpoint file. Repeat for several.")
@data_option
@click.option("--test-data", "test_root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help=TEST_DATA_HELP + " The classifiers then train on patients of all of --data. Default: "
                   "cross-validation over --data.")
@click.option("--patients-per-group", "patients", default="2,5,all", show_default=True,
              callback=number_list(int, allow_all=True), help="Real training patients per group (scarcity levels).")
@click.option("--synthetic-ratio", "ratios", default="1", show_default=True, callback=number_list(float),
              help="Synthetic HCM slices added, as multiples of the real HCM slices (e.g. 0.5,1,2).")
@click.option("--seeds", type=click.IntRange(1), default=3, show_default=True,
              help="Repeats: each deals its own folds and draws its own patients, images and initialisation.")
@click.option("--folds", type=click.IntRange(2), default=5, show_default=True,
              help="Patient-level cross-validation folds over --data (without --test-data).")
@click.option("--tasks", default="hcm,5class", show_default=True, help="hcm (HCM vs the rest) and/or 5class.")
@size_option
@click.option("--epochs", type=click.IntRange(1), default=15, show_default=True, help="Classifier epochs.")
@click.option("--no-augmentation", is_flag=True, help="Leave out the classic-augmentation baseline.")
@click.option("--no-oracle", is_flag=True,
              help="Leave out real+oracle (real HCM slices of other training patients standing in for a perfect "
                   "generator's: the ceiling, and the paired test's positive control).")
@click.option("--bootstrap", type=click.IntRange(100), default=2000, show_default=True,
              help="Bootstrap resamples of the test patients (95 % intervals) and permutations (paired test).")
@click.option("--summary-at", "summary_at", default=None, callback=_summary_at, metavar="TASK,PATIENTS,RATIO",
              help="The setting of each generator's one summary gain (logged, shown by compare).  [default: hcm,5,1, "
                   "or the grid's nearest]")
@click.option("--out", type=click.Path(path_type=Path), default=Path("utility"), show_default=True,
              help="Folder for utility.md, utility.csv and utility.png.")
@device_option
@force_option
def utility(sources: tuple[str, ...], data_root: Path | None, test_root: Path | None, patients: tuple, ratios: tuple,
            seeds: int, folds: int, tasks: str, size: str, epochs: int, no_augmentation: bool, no_oracle: bool,
            bootstrap: int, summary_at: tuple | None, out: Path, device: str, force: bool) -> None:
    """Does synthetic data help? HCM classifiers on scarce real data, with and without each generator's images.

    Scored on real patients never seen by the generator or the classifier: by patient-level cross-validation
    over --data (every patient tested once per repeat; a generator's rows only on the patients it never saw), or
    on --test-data. Balanced accuracy and ROC AUC per slice and per patient with 95 % bootstrap intervals over
    patients; each method against its baseline (real, or real+aug) by a paired permutation test; real+oracle as
    the ceiling; the smallest difference the design detects under the table. Logged to MLflow (experiment
    hcmbench-utility) with each generator's summary gain at --summary-at. The generators must have been
    trained at --size.
    """
    import tempfile

    from hcmbench.checkpoints import load_generator, resolve_device
    from hcmbench.data import resolve_data_root
    from hcmbench.experiments.utility import UtilityConfig, generator_names, rich_table, run_utility
    from hcmbench.tracking import log_utility, resolve_checkpoint

    display = Display.current()
    check_outputs([out / name for name in ("utility.md", "utility.csv", "utility.png")], force)
    config = UtilityConfig(tasks=parse_list(tasks), patients_per_group=patients, synthetic_ratios=ratios, seeds=seeds,
                           folds=folds, size=int(size), epochs=epochs, augmentation=not no_augmentation,
                           oracle=not no_oracle, bootstrap=bootstrap, summary_at=summary_at, device=device)
    data_root = resolve_data_root(data_root, announce=display.say)
    with tempfile.TemporaryDirectory(prefix="hcmbench-") as download:
        generators = [load_generator(resolve_checkpoint(s, Path(download) / str(i)), device=resolve_device(device))
                      for i, s in enumerate(sources)]
    names = generator_names(generators)
    with display.progress("training classifiers") as progress:
        result = run_utility(data_root, dict(zip(names, generators)), config, progress=progress, test_root=test_root)
    console.print(rich_table(result))
    paths = result.write(out)
    run_id = log_utility(result, dict(zip(names, sources)), paths)
    display.say(f"Wrote {', '.join(str(p) for p in paths)}; logged as MLflow run {run_id} (experiment hcmbench-utility)")
