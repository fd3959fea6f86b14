"""The CLI's one stderr console: tables, the library's log messages and progress bars for people.

stdout carries data only. The library never prints: it logs to the ``halitool`` loggers and reports progress
through a :class:`halitool.progress.Progress`; :func:`make_console` attaches the loggers to the console and
:class:`BarProgress` draws the library's tasks on it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Iterator

from rich.console import Console

from halitool import progress as library_progress
from halitool import settings

if TYPE_CHECKING:  # rich.progress loads with the first bar, not with every command
    from rich.progress import Progress

LOGGER = "halitool"


class ConsoleLogHandler(logging.Handler):
    """Each log record as one line on the console (warnings in yellow); the text is printed as is (no markup)."""

    def __init__(self, console: Console):
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = "yellow" if record.levelno >= logging.WARNING else None
            self.console.print(self.format(record), style=style, markup=False, highlight=False)
        except Exception:  # noqa: BLE001  logging must never break the command
            self.handleError(record)


def make_console(color: bool | None = None, quiet: bool = False, verbose: bool = False) -> Console:
    """A stderr console that also shows the library's log messages (INFO; DEBUG with ``verbose``; none with
    ``quiet``); ``color=None`` means: colour on a terminal unless NO_COLOR is set."""
    no_color = color is False or (color is None and settings.no_color())
    # Off a terminal (a log file, CI) rich would assume 80 columns and cut wide tables; logs can be wider.
    width = None if sys.stderr.isatty() else 160
    console = Console(stderr=True, no_color=no_color, force_terminal=True if color else None, highlight=False,
                      log_path=False, width=width)
    if quiet:
        console.quiet = True
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, ConsoleLogHandler)]:
        logger.removeHandler(old)  # one CLI invocation, one console (tests invoke the CLI many times)
    logger.addHandler(ConsoleLogHandler(console))
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    return console


def progress(console: Console, *extra_columns) -> Progress:
    """A rich progress bar on ``console``; shown only when stderr is a terminal and not ``--quiet``."""
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

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


class _BarTask(library_progress.Task):
    def __init__(self, bar: Progress, task_id):
        self.bar, self.task_id = bar, task_id

    def advance(self, n: int = 1, info: str | None = None) -> None:
        fields = {"info": info} if info is not None else {}
        self.bar.update(self.task_id, advance=n, **fields)


class BarProgress(library_progress.Progress):
    """The library's tasks as rich progress bars on the CLI's console, one bar per task (with its ``info``).

    Tasks may nest (semisup's seeds around train's steps): they share one live display, started with the first
    task and stopped with the last, because rich allows one live display at a time."""

    def __init__(self, console: Console):
        self.console = console
        self._bar: Progress | None = None
        self._open = 0

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, completed: int = 0) -> Iterator[library_progress.Task]:
        if self._bar is None:
            from rich.progress import TextColumn

            self._bar = progress(self.console, TextColumn("{task.fields[info]}"))
            self._bar.start()
        bar = self._bar
        task_id = bar.add_task(description, total=total, completed=completed, info="")
        self._open += 1
        try:
            yield _BarTask(bar, task_id)
        finally:
            self._open -= 1
            if self._open == 0:
                bar.stop()
                self._bar = None
