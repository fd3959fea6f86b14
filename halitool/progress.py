"""How the library tells its caller what it is doing, without printing anything.

Long jobs take a :class:`Progress` and open one task per loop (``with progress.task("encoding", total=n) as t:
t.advance(k)``); the default, :data:`SILENT`, does nothing. Messages for people go to the standard ``logging``
loggers under ``halitool`` (``logging.getLogger(__name__)`` in each module). The command line attaches both to
its one stderr console (:mod:`halitool.commands.console`); a Python caller gets no output unless it asks for
some, for example with ``logging.basicConfig(level=logging.INFO)``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


class Task:
    """One loop's progress: ``advance`` by the units done; ``info`` is a short status text (rates, losses)."""

    def advance(self, n: int = 1, info: str | None = None) -> None:
        pass


class Progress:
    """A source of tasks. This base class reports nowhere; the CLI's subclass draws bars on stderr."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, completed: int = 0) -> Iterator[Task]:
        yield Task()


SILENT = Progress()
