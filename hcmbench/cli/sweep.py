"""`hcmbench sweep` and `hcmbench worker`: an Optuna study per model, shared by any number of workers."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from hcmbench.cli.app import interruptible, main
from hcmbench.cli.display import Display, console
from hcmbench.cli.options import data_option, distributed_options

STOPPED = "stopped: the running trial was ended and queued again; run the same command to continue"


def _summarise(display: Display, result) -> None:
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.counts.items())) or "none"
    display.say(f"Study {result.study_name}: {result.trials_run} trials run here ({counts}); "
                + ("all its trials have ended." if result.finished else f"its total is {result.total} trials."))
    if result.best_number is None:
        console.print("No trial finished: nothing to compare or promote yet.")
    else:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
        console.print(f"Best: trial {result.best_number}, {result.metric} {result.best_value:.4g} ({params})",
                      highlight=False, soft_wrap=True)
    console.print(f"MLflow parent run: {result.parent_run_id}   (hcmbench ui; hcmbench promote --model {result.model})",
                  highlight=False, soft_wrap=True)


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
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the sampler and every trial.")
@distributed_options
def sweep(model_name: str, trials: int, study_name: str | None, space_file: Path | None, print_space: bool,
          data_root: Path | None, epochs: int | None, kimg: float | None, minutes: float | None, seed: int,
          storage: str | None, tracking_uri: str | None, heartbeat_interval: int, grace_period: int,
          timeout: float | None, device: str) -> None:
    """Tune a model with an Optuna study; every trial is an MLflow run (browse them with `hcmbench ui`).

    `hcmbench worker` processes, here or on other machines, can join the study and share its trials.
    """
    from hcmbench.data import resolve_data_root
    from hcmbench.models.registry import model_class
    from hcmbench.sweep import Heartbeat, load_space, run_sweep, space_text

    display = Display.current()
    model_class(model_name)  # an unknown model fails here, before any store is touched
    space = load_space(model_name, space_file)
    if print_space:
        click.echo(space_text(model_name, space_file), nl=False)
        return
    heartbeat = Heartbeat(heartbeat_interval, grace_period)
    data_root = resolve_data_root(data_root, announce=display.say)
    with display.sweep(trials) as show, interruptible(STOPPED):
        result = run_sweep(model_name, trials, space, study_name, storage, timeout, data_root, epochs, seed,
                           device, display=show, heartbeat=heartbeat, tracking_uri=tracking_uri, kimg=kimg,
                           minutes=minutes)
    _summarise(display, result)


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

    display = Display.current()
    heartbeat = Heartbeat(heartbeat_interval, grace_period)
    with display.sweep(None) as show, interruptible(STOPPED):
        result = run_worker(study_name, storage or default_storage(), data_root, device, timeout, wait,
                            display=show, heartbeat=heartbeat, tracking_uri=tracking_uri)
    _summarise(display, result)


@main.command()
@click.option("--storage", default=None, envvar="HCMBENCH_STORAGE",
              help="Optuna storage URL of the studies. Default: $HCMBENCH_STORAGE, else sqlite:///mlruns/optuna.db.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (local only by default).")
@click.option("--open", "open_browser", is_flag=True, help="Open it in a browser.")
def dashboard(storage: str | None, port: int, host: str, open_browser: bool) -> None:
    """Start optuna-dashboard on the sweeps' studies: history, parameter importances, slices (Ctrl-C stops it).

    An optional extra: pip install 'hcmbench[dashboard]'.
    """
    import webbrowser

    from hcmbench.sweep.dashboard import serve_dashboard
    from hcmbench.tracking import ui_address

    address, display = ui_address(host, port), Display.current()

    def ready() -> None:
        display.say(f"optuna-dashboard on {address}; Ctrl-C stops it")
        if open_browser:
            webbrowser.open(address)

    with contextlib.suppress(KeyboardInterrupt):
        serve_dashboard(storage, host, port, on_ready=ready)
