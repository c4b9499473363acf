"""`hcmbench train`: one model on preprocessed slices, through the engine."""

from __future__ import annotations

from pathlib import Path

import click

from hcmbench.cli.app import main
from hcmbench.cli.display import Display, console
from hcmbench.cli.options import (data_option, groups_option, parse_groups, parse_list, parse_settings, size_option,
                                  train_config_options, train_config_values)
from hcmbench.formatting import duration


@main.command()
@click.option("--model", "model_name", required=True, help="Model to train: vae, gan, dcgan, acgan, infogan or ddpm.")
@data_option
@groups_option(("HCM",))
@click.option("--frames", default="ED,ES", show_default=True,
              help="Frames of each patient: ED, ES, 1-based numbers, or cine (every frame of the patients' "
                   "_4d cine files, where the dataset has them; ED and ES keep their expert masks).")
@size_option
@train_config_options
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder. Default: outputs/train/<model>.")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its own settings (--epochs, --kimg or "
              "--minutes may extend it).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="A model setting, e.g. --set latent_dim=128.")
@click.option("--preset", default=None, help="A model's named recipe of settings and budget, e.g. cpu (sized for a "
              "laptop's CPU; `hcmbench study` uses it). Options given here and --set still win.")
@click.pass_context
def train(ctx: click.Context, model_name: str, data_root: Path | None, groups: tuple[str, ...], frames: str, size: str,
          out: Path | None, resume: bool, settings: tuple[str, ...], preset: str | None, **train_options) -> None:
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

    display = Display.current()
    model_class(model_name)  # an unknown name fails before any data work
    recipe = model_preset(model_name, preset) if preset else Preset("")
    options, given = train_config_values(ctx, train_options)
    train_config = layered_train_config(options, recipe.train, given)
    model_settings = {**recipe.model, **parse_settings(settings)}
    out = out or Path("outputs") / "train" / model_name.lower()
    with display.training() as view:
        if resume:
            result = engine.resume(out, epochs=given.get("epochs"), data_root=data_root, callbacks=[view],
                                   progress=view.progress, kimg=given.get("kimg"), minutes=given.get("minutes"))
        else:
            root = resolve_data_root(data_root, announce=display.say)
            data_config = DataConfig(groups=parse_groups(groups) or ("HCM",), size=int(size), frames=parse_list(frames))
            result = engine.train(model_name, root, out, data_config, train_config, model_settings,
                                  callbacks=[view], progress=view.progress)
    stop = "stopped early" if result.stopped_early else "finished"
    display.say(f"{stop} after {result.epochs_run} {result.unit}s ({result.kimg:.1f} kimg, {duration(result.seconds)}); "
                f"best validation score {result.best_score:.4g} at {result.unit} {result.best_epoch}.")
    display.say(f"Samples: {out / 'samples'}   Loss plot: {result.loss_plot}")
    console.print(f"Checkpoint: {result.best_checkpoint}", highlight=False, soft_wrap=True)
