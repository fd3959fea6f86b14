"""Machine output (JSON, CSV) on stdout or to a file, and tables for people on stderr.

Every command's result is a dict; JSON adds ``schema_version`` and ``command``. Tables never go to stdout.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from rich.console import Console

if TYPE_CHECKING:  # rich.table loads when a table is drawn, not with the CLI
    from rich.table import Table

SCHEMA_VERSION = 1
FORMATS = ("table", "json", "csv")
SUMMARY_FORMATS = ("table", "json")  # a command whose output is a file: its summary has no CSV form


def default_format(output: str | None) -> str:
    """Table when a person reads the terminal, JSON when stdout or -o goes elsewhere."""
    if output is None and sys.stdout.isatty():
        return "table"
    return "json"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every JSON parser reads the output."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _clean(value.item())
    return value


def to_json(result: dict, command: str) -> str:
    doc = {"schema_version": SCHEMA_VERSION, "command": command, **result}
    return json.dumps(_clean(doc), indent=2) + "\n"


def to_csv(rows: Iterable[dict]) -> str:
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        fields: list[str] = []
        for row in rows:
            fields.extend(k for k in row if k not in fields)
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _clean(v) for k, v in row.items()})
    return buf.getvalue()


def emit(
    result: dict,
    *,
    command: str,
    fmt: str | None,
    output: str | None,
    console: Console,
    table: Callable[[dict], Any] | None = None,
    csv_rows: Callable[[dict], Iterable[dict]] | None = None,
    force: bool = True,
) -> None:
    """Write ``result`` in ``fmt`` to ``output`` (a path, ``-`` or None for stdout).

    The table goes to the stderr console; with ``-o FILE`` the file gets JSON or CSV and the table is still shown.
    """
    fmt = fmt or default_format(output)
    if fmt == "table":
        if table is not None:
            console.print(table(result))
        if output is None:
            return
        fmt = "json"  # -o FILE with a table on screen: the file still gets data
    if fmt == "json":
        text = to_json(result, command)
    elif fmt == "csv":
        text = to_csv(csv_rows(result) if csv_rows else [_flat(result)])
    else:  # Click's Choice keeps other values out
        raise ValueError(fmt)
    if output in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from halitool.fileio import atomic_write_bytes  # (hashlib, tempfile) only when a file is written

        atomic_write_bytes(Path(output), text.encode(), force=force)


def _flat(result: dict, prefix: str = "") -> dict:
    flat: dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(_clean(value))
        else:
            flat[name] = value
    return flat


def key_value_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(str(key), str(value))
    return table
