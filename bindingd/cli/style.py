"""Colour and tables for a person at a terminal; plain text for pipes and files.

Colour only when the stream is a terminal, `NO_COLOR` is unset or empty (https://no-color.org)
and `TERM` is not `dumb`. Widths are measured on the plain text, so a coloured table lines up.
"""

from __future__ import annotations

import os
from typing import TextIO

GREEN = "32"
RED = "31"
YELLOW = "33"
DIM = "2"
BOLD = "1"


def coloured(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, code: str, stream: TextIO) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if text and coloured(stream) else text


def columns(
    header: tuple[str, ...],
    rows: list[tuple[str, ...]],
    stream: TextIO,
    colours: dict[int, dict[str, str]] | None = None,
) -> None:
    """Left-aligned columns two spaces apart, like `kubectl get`. `colours` maps a column index to
    {cell text: colour code}: the cell is painted after it is padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for n, row in enumerate([header, *rows]):
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
            padded = cell.ljust(width)
            if n == 0:
                padded = paint(padded, BOLD, stream)
            elif colours and cell in colours.get(i, {}):
                padded = paint(cell, colours[i][cell], stream) + " " * (width - len(cell))
            cells.append(padded)
        print("  ".join(cells).rstrip(), file=stream)


def box(header: list[str], rows: list[list[str]], stream: TextIO, dim: set[str] | None = None) -> None:
    """A boxed table, as `wrangler d1 execute` prints query results. Cells in `dim` (e.g. NULL)
    are shown faint."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    try:
        "┌─│".encode(stream.encoding or "ascii")
        rule, bar, corners = "─", "│", "┌┬┐├┼┤└┴┘"
    except (LookupError, UnicodeEncodeError):  # a terminal in an old 8-bit locale
        rule, bar, corners = "-", "|", "+++++++++"

    def line(left: str, mid: str, right: str) -> str:
        return left + mid.join(rule * (w + 2) for w in widths) + right

    def cells(values: list[str], header_row: bool) -> str:
        out = []
        for value, width in zip(values, widths, strict=True):
            text = value.ljust(width)
            if header_row:
                text = paint(text, BOLD, stream)
            elif dim and value in dim:
                text = paint(value, DIM, stream) + " " * (width - len(value))
            out.append(f" {text} ")
        return bar + bar.join(out) + bar

    print(line(*corners[0:3]), file=stream)
    print(cells(header, True), file=stream)
    print(line(*corners[3:6]), file=stream)
    for row in rows:
        print(cells(row, False), file=stream)
    print(line(*corners[6:9]), file=stream)
