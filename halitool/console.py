"""The one stderr console for everything meant for people, and progress bars on it.

stdout carries data only; the library never writes to it. Commands receive a console and pass it down.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_console(color: bool | None = None, quiet: bool = False, verbose: bool = False) -> Console:
    """A stderr console; ``color=None`` means: colour on a terminal unless NO_COLOR is set."""
    no_color = color is False or (color is None and "NO_COLOR" in os.environ)
    # Off a terminal (a log file, CI) rich would assume 80 columns and cut wide tables; logs can be wider.
    width = None if sys.stderr.isatty() else 160
    console = Console(stderr=True, no_color=no_color, force_terminal=True if color else None, highlight=False,
                      log_path=False, width=width)
    console.quiet_mode = quiet  # type: ignore[attr-defined]
    console.verbose_mode = verbose  # type: ignore[attr-defined]
    if quiet:
        console.quiet = True
    return console


def default_console() -> Console:
    """A console for library calls made without one (plain Python use)."""
    return make_console()


def progress(console: Console, *extra_columns) -> Progress:
    """A progress bar on ``console``; shown only when stderr is a terminal and not ``--quiet``."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        redirect_stdout=False,
        redirect_stderr=False,
        disable=console.quiet or not console.is_terminal,
        transient=False,
    )
