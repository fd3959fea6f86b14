"""Options shared by several commands, defined once, and the per-invocation context."""

from __future__ import annotations

from dataclasses import dataclass

import click
from rich.console import Console

from halitool.report import FORMATS


@dataclass
class AppContext:
    console: Console
    verbose: bool
    quiet: bool


def app(ctx: click.Context | None = None) -> AppContext:
    """The AppContext the top-level group stored (a default one when a command is invoked on its own)."""
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        from halitool.console import make_console

        root.obj = AppContext(console=make_console(), verbose=False, quiet=False)
    return root.obj


def output_options(func):
    """``--format table|json|csv`` and ``-o FILE|-``."""
    func = click.option(
        "-o",
        "--output",
        metavar="FILE|-",
        default=None,
        help="Write the result to FILE (JSON or CSV; '-' for stdout).",
    )(func)
    func = click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default=None,
        help="Result format [default: table on a terminal, else json].",
    )(func)
    return func


def force_option(func):
    return click.option("--force", is_flag=True, help="Overwrite an existing output file.")(func)


def device_option(func):
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where to compute: the GPU when there is one (auto), or the named device.",
    )(func)
