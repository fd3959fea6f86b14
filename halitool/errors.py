"""The exit-code table and the exceptions that carry it.

Library code raises these; only the CLI turns them into an ``Error: ...`` line and an exit status.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # runtime failure
    USAGE = 2  # bad options or arguments
    BAD_INPUT = 3  # corrupt file, wrong schema, checkpoint/architecture mismatch, missing labels
    INCOMPLETE = 4  # output left incomplete; --resume can finish it
    INTERRUPTED = 130  # Ctrl-C


class HalitoolError(Exception):
    """An error the user can act on; its message becomes the one ``Error:`` line."""

    exit_code: ExitCode = ExitCode.FAILURE


class UsageError(HalitoolError):
    """Options that cannot work together, an existing output without --force, ..."""

    exit_code = ExitCode.USAGE


class BadInputError(HalitoolError):
    """An input file or data set that is missing, corrupt or incompatible."""

    exit_code = ExitCode.BAD_INPUT


class IncompleteOutputError(HalitoolError):
    """A run stopped early and left a partial output that ``--resume`` can finish."""

    exit_code = ExitCode.INCOMPLETE
