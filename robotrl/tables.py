"""Result tables, one layout for the terminal (rich) and for Markdown files: a name column, then values."""

from __future__ import annotations

from typing import Any


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def rich_table(headers: list[str], rows: list[list[str]], title: str | None = None) -> Any:
    """A rich Table: the first column unwrapped, the values right-aligned."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column(headers[0], no_wrap=True)
    for header in headers[1:]:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*row)
    return table
