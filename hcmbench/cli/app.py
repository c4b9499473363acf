"""The `hcmbench` group: the version, --quiet, and one way of failing (one line on stderr, exit 2)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from hcmbench import __version__
from hcmbench.errors import HcmbenchError
from hcmbench.redact import mask_passwords


class Group(click.Group):
    """A click group that turns HcmbenchError into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except HcmbenchError as exc:
            click.echo(f"error: {mask_passwords(str(exc))}", err=True)  # a URL in it keeps no password
            ctx.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hcmbench")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or status lines.")
@click.pass_context
def main(ctx: click.Context, quiet: bool) -> None:
    """hcmbench: synthetic cardiac MRI you can trust.

    Train, sweep, evaluate and promote generative models of hypertrophic cardiomyopathy (HCM)
    short-axis MRI from the ACDC dataset, or from the built-in phantom when no data is given.
    """
    ctx.obj = {"quiet": quiet}


@contextlib.contextmanager
def interruptible(message: str) -> Iterator[None]:
    """Ctrl-C ends the command with `message` on stderr and exit status 130, without a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(message, err=True)
        raise SystemExit(130) from None
