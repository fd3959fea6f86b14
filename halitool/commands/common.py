"""The CLI's one vocabulary: options shared by several commands, defined once from the library's own constants,
and the per-invocation context."""

from __future__ import annotations

from dataclasses import dataclass

import click
from rich.console import Console

from halitool.commands.console import BarProgress
from halitool.commands.report import FORMATS, SUMMARY_FORMATS
from halitool.choices import DEVICES, PRECISIONS, SPLIT_CHOICES, SPLITS


@dataclass
class AppContext:
    console: Console
    verbose: bool
    quiet: bool
    _progress: BarProgress | None = None

    @property
    def progress(self) -> BarProgress:
        """Progress bars for the library's tasks, on this invocation's console (one live display for all)."""
        if self._progress is None:
            self._progress = BarProgress(self.console)
        return self._progress


def app(ctx: click.Context | None = None) -> AppContext:
    """The AppContext the top-level group stored (a default one when a command is invoked on its own)."""
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        from halitool.commands.console import make_console

        root.obj = AppContext(console=make_console(), verbose=False, quiet=False)
    return root.obj


def format_option(choices=FORMATS, help: str = "Result format [default: table on a terminal, else json]."):
    """``--format``: one of ``choices`` (all three for results, table|json for a command's summary)."""
    return click.option("--format", "fmt", type=click.Choice(choices), default=None, help=help)


def summary_format_option(help: str = "Summary format: json on stdout, or a table on stderr "
                                      "[default: table on a terminal]."):
    return format_option(SUMMARY_FORMATS, help)


def result_output_option(func):
    """``-o FILE|-``: where a result (JSON or CSV) goes [default: stdout]."""
    return click.option("-o", "--output", metavar="FILE|-", default=None,
                        help="Write the result to FILE (JSON or CSV; '-' for stdout).")(func)


def output_options(func):
    """``--format table|json|csv`` and ``-o FILE|-``: a command whose result is data."""
    return format_option()(result_output_option(func))


def artifact_output_option(metavar: str, help: str):
    """``-o OUT`` (required): the file a command makes (features, a grid); refused if it exists, unless --force."""
    return click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar=metavar, help=help)


def force_option(func):
    return click.option("--force", is_flag=True, help="Overwrite an existing output file.")(func)


def device_option(func):
    return click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                        help="Where to compute: the GPU when there is one (auto), or the named device.")(func)


def precision_option(help: str):
    return click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True, help=help)


def split_option(default: str, help: str, with_all: bool = True):
    """``--split``: a split of the data set (train, valid, test) or, ``with_all``, every row."""
    choices = SPLIT_CHOICES if with_all else tuple(SPLITS)
    return click.option("--split", type=click.Choice(choices), default=default, show_default=True, help=help)


def seed_option(help: str, name: str = "--seed"):
    return click.option(name, type=int, default=0, show_default=True, help=help)


def count_option(names: str | tuple[str, ...], default: int | None, help: str, minimum: int = 1, **kwargs):
    """A count (``--seeds``, ``--batch-size``, ``-n``...): an integer of at least ``minimum``, checked by Click so
    that every count fails the same way (exit 2, naming the option). ``names``: the option's name, or its
    names and destination as for ``click.option``."""
    names = (names,) if isinstance(names, str) else names
    return click.option(*names, type=click.IntRange(min=minimum), default=default, help=help, **kwargs)
