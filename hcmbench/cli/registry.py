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
def ui(port: int, host: str) -> None:
    """Start `mlflow ui` on this project's store (Ctrl-C stops it)."""
    import subprocess

    from hcmbench.tracking import ui_command

    command = ui_command(host, port)
    Display.current().say(f"MLflow UI on http://{host}:{port} (store {command[command.index('--backend-store-uri') + 1]})")
    try:
        raise SystemExit(subprocess.call(command))
    except KeyboardInterrupt:
        raise SystemExit(0) from None
