"""How the CLI shows what it read: JSON for scripts, tables for people.

Tables are drawn with rich (the ``cli`` extra) when it is installed, else as aligned plain
text, so the commands work on a bare install.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import attrs


@attrs.frozen
class Table:
    """A titled table of text cells."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: str = "none"
    """What to show instead of a table without rows."""


def workers_table(workers: list[dict[str, Any]] | None) -> list[Table]:
    """The worker processes registered in the broker (none for a broker without a registry)."""
    if workers is None:
        return []
    now = time.time()
    rows = tuple(
        (
            w["id"],
            w["host"],
            str(w["pid"]),
            ",".join(f"{name}={n}" for name, n in w["queues"].items()),
            datetime.fromtimestamp(w["started_at"], UTC).isoformat(timespec="seconds"),
            f"{max(0.0, now - w['last_seen']):.1f}s ago",
        )
        for w in workers
    )
    columns = ("worker", "host", "pid", "queues", "started", "last heartbeat")
    return [Table("workers", columns, rows, empty="no worker registered")]


def write_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, sort_keys=True, default=str)
    out.write("\n")


def write_tables(tables: Sequence[Table], out: TextIO) -> None:
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:  # the cli extra is not installed
        _plain(tables, out)
        return
    # Piped or redirected: wide enough that ids and errors stay on one line.
    width = None if out.isatty() else 200
    console = Console(file=out, highlight=False, width=width)
    for table in tables:
        if not table.rows:
            console.print(f"[bold]{table.title}[/bold]: {table.empty}")
            continue
        shown = RichTable(title=table.title, title_justify="left")
        for column in table.columns:
            shown.add_column(column)
        for row in table.rows:
            shown.add_row(*row)
        console.print(shown)


def _plain(tables: Sequence[Table], out: TextIO) -> None:
    for table in tables:
        if not table.rows:
            out.write(f"{table.title}: {table.empty}\n")
            continue
        widths = [
            max(len(column), *(len(row[i]) for row in table.rows))
            for i, column in enumerate(table.columns)
        ]
        out.write(f"{table.title}\n")
        for row in (table.columns, *table.rows):
            out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
            out.write("\n")
        out.write("\n")
