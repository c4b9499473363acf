"""`hcmbench promote` and `hcmbench ui`: the MLflow registry and the browser on the runs."""

from __future__ import annotations

import click

from hcmbench.cli.app import main
from hcmbench.cli.display import Display, console


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

    with Display.current().status(f"Registering the best {model_name} run"):
        result = promote_run(model_name, metric, alias)
    console.print(f"Registered {result.name} version {result.version} (run {result.run_id}, {result.metric} "
                  f"{result.value:.4g}) as models:/{result.name}@{result.alias}", highlight=False, soft_wrap=True)


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (local only by default).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="The server's worker processes.")
@click.option("--open", "open_browser", is_flag=True, help="Open the runs of the latest experiment in a browser.")
def ui(port: int, host: str, workers: int, open_browser: bool) -> None:
    """Start `mlflow ui` on this project's store and print each experiment's runs view (Ctrl-C stops it).

    The URLs open MLflow's model-training view (runs, charts, artifacts), with a sweep's trials side by side,
    best first. SIGTERM, SIGINT or SIGHUP ends the server and every process it started.
    """
    import webbrowser

    from hcmbench.processes import serve
    from hcmbench.redact import mask_passwords
    from hcmbench.tracking import runs_views, tracking_uri, ui_address, ui_command, ui_environment

    views, address, display = runs_views(host, port), ui_address(host, port), Display.current()
    for view in views:
        console.print(f"{view.experiment}: {view.url}", highlight=False, soft_wrap=True)
    if not views:
        console.print(f"No runs yet: {address}", highlight=False, soft_wrap=True)

    def ready() -> None:
        display.say(f"MLflow UI on {address} (store {mask_passwords(tracking_uri())}); Ctrl-C stops it")
        if open_browser:
            webbrowser.open(views[0].url if views else address)

    raise SystemExit(serve(ui_command(host, port, workers), host, port, on_ready=ready, env=ui_environment()))
