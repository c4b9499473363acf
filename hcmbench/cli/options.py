"""Options that several commands take, declared once, and the parsers of their values."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hcmbench.errors import HcmbenchError

Decorator = Callable[[Callable], Callable]
SAMPLERS = ("ddpm", "ddim", "dpm++")


def stack(*options: Decorator) -> Decorator:
    """Several option decorators as one, in the order given (as they read above a command)."""
    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


data_option = click.option(
    "--data", "data_root", type=click.Path(path_type=Path), default=None,
    help="ACDC-layout dataset root. Default: $HCMBENCH_DATA, else the built-in phantom.")
size_option = click.option("--size", type=click.Choice(["32", "64", "128"]), default="64", show_default=True,
                           help="Side of the preprocessed slices in pixels.")
skip_bad_option = click.option("--skip-bad", is_flag=True, help="Skip unreadable patients and report them, "
                               "instead of stopping at the first.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same result.")
device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
out_folder_option = click.option("--out", required=True, type=click.Path(path_type=Path),
                                 help="Folder to create (must not exist or be empty).")
force_option = click.option("--force", is_flag=True, help="Replace files of the same names already in --out.")


def check_outputs(paths: list[Path], force: bool = False) -> None:
    """Before a command's work: every file it will write can be written, and none is already there unless
    `force` (--force) allows replacing it. HcmbenchError, in one line, otherwise: hcmbench never silently
    replaces a file of the user's."""
    from hcmbench.atomic import check_writable

    for path in paths:
        if path.is_dir():
            raise HcmbenchError(f"cannot write {path}: it is a folder")
    existing = [str(path) for path in paths if path.exists()]
    if existing and not force:
        one = len(existing) == 1
        raise HcmbenchError(f"{', '.join(existing)} already exist{'s' if one else ''}: pass --force to replace "
                            f"{'it' if one else 'them'}, or choose another --out")
    for path in paths:
        check_writable(path)


def groups_option(default: tuple[str, ...] | None) -> Decorator:
    """`--groups HCM,NOR` (or repeated); `default` None means every group in the data."""
    said = ", ".join(default) if default else "every group in the data"
    return click.option("--groups", multiple=True, default=default or (),
                        help=f"ACDC groups, e.g. HCM or HCM,NOR. Default: {said}.")


def parse_groups(value: tuple[str, ...]) -> tuple[str, ...] | None:
    """`--groups HCM,NOR` and `--groups HCM --groups NOR` both work; None when none is given."""
    names = tuple(g.strip() for item in value for g in item.split(",") if g.strip())
    return names or None


def parse_list(value: str) -> tuple[str, ...]:
    """A comma-separated option value as a tuple of its non-empty items."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def sampling_options(sampler: str | None = None, steps: int | None = None, precision: str | None = None,
                     guidance: bool = True) -> Decorator:
    """--sampler, --steps and --precision (and --guidance-scale) for commands that draw from a diffusion
    model. None leaves the model's own default."""
    options = [
        click.option("--sampler", type=click.Choice(SAMPLERS), default=sampler, show_default=sampler is not None,
                     help="Diffusion sampler: ancestral (ddpm), DDIM, or DPM-Solver++(2M); other models ignore it."
                          + ("" if sampler else " Default: ancestral (ddpm), the least detectable on real ACDC; dpm++ "
                                             "is about 50 times faster, at a cost (docs/results.md).")),
        click.option("--steps", type=click.IntRange(1), default=steps, show_default=steps is not None,
                     help="Diffusion sampling steps." + ("" if steps else " Default: the sampler's (all 1,000 for "
                                                                          "ddpm, 50 for ddim, 20 for dpm++).")),
    ]
    options.append(click.option("--precision", type=click.Choice(["fp32", "bf16"]), default=precision,
                                show_default=precision is not None,
                                help="Diffusion: the network's arithmetic while sampling (bf16: about twice as fast "
                                     "on a CPU with AVX-512 BF16)." + ("" if precision else " Default: fp32.")))
    if guidance:
        options.append(click.option("--guidance-scale", type=float, default=None,
                                    help="Classifier-free guidance of a class-conditional ddpm. Default: the model's."))
    return stack(*options)


def sample_options(sampler: str | None, steps: int | None, precision: str | None = None,
                   guidance_scale: float | None = None) -> dict[str, Any]:
    """The options given to `sample`, without the ones left at the model's defaults."""
    given = {"sampler": sampler, "steps": steps, "precision": precision, "guidance_scale": guidance_scale}
    return {k: v for k, v in given.items() if v is not None}


detect_seeds_option = click.option(
    "--detect-seeds", type=click.IntRange(0), default=3, show_default=True,
    help="Seeds of the detectability test (a classifier trained per seed and set, 10-30 s each at 64 px on "
         "a CPU); 0 leaves the column out.")


def detector_config(seeds: int) -> Any:
    """The detectability test's settings for `--detect-seeds` (0: no detectability column)."""
    from hcmbench.evaluation.detectability import DetectabilityConfig

    return DetectabilityConfig(seeds=seeds) if seeds else None


# -- TrainConfig, declared once in config.py ---------------------------------------------------------

def _click_type(annotation: str) -> Any:
    base = annotation.replace(" | None", "").strip()
    return {"int": int, "float": float, "str": str}[base]


def train_config_options(command: Callable) -> Callable:
    """One option per TrainConfig field (`--batch-size`, `--kimg`, ...), with its default and help from
    the field itself. Bad values are refused by TrainConfig, in one line."""
    from hcmbench.config import TrainConfig

    for item in reversed(dataclasses.fields(TrainConfig)):
        if not item.metadata.get("cli", False):
            continue
        flag = "--" + item.name.replace("_", "-")
        if item.type == "bool":
            option = click.option(f"{flag}/--no-{flag[2:]}", item.name, default=item.default, show_default=True,
                                  help=item.metadata["help"])
        else:
            option = click.option(flag, item.name, type=_click_type(item.type), default=item.default,
                                  show_default=item.default is not None, help=item.metadata["help"])
        command = option(command)
    return command


def train_config_values(ctx: click.Context, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(every TrainConfig option's value, the ones given on the command line) of a command's parameters."""
    from hcmbench.config import TrainConfig

    names = [f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli", False)]
    options = {name: values[name] for name in names}
    given = {k: v for k, v in options.items() if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
    return options, given


def parse_settings(pairs: tuple[str, ...]) -> dict[str, Any]:
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


def number_list(kind: type, allow_all: bool = False) -> Callable:
    """A Click callback parsing "2,5,all" / "0.5,1,2" into a tuple (None for "all")."""
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple:
        items: list[Any] = []
        for part in parse_list(value):
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


distributed_options = stack(
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
    device_option,
)
