"""Colour and tables for a person at a terminal; plain text for pipes and files.

Colour only when the stream is a terminal, `NO_COLOR` is unset or empty (https://no-color.org)
and `TERM` is not `dumb`. Widths are measured on the plain text, so a coloured table lines up.
A cell is shown with its control characters escaped (`printable`): a value from a database or a
server must not reach the terminal as an escape sequence.
"""

from __future__ import annotations

import os
import unicodedata
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


# Every control character (C0, DEL, C1) as an escape: "\x1b]0;title\x07" printed raw retitles
# the window, "\x1b[2J" clears the screen, a C1 CSI does either on some terminals, and a
# newline would break the table's one line a row.
_ESCAPES = {
    code: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(chr(code), f"\\x{code:02x}")
    for code in (*range(0x20), *range(0x7F, 0xA0))
}


def printable(text: str) -> str:
    """`text` with its control characters escaped (\\n, \\x1b ...), safe to show on a terminal."""
    return text.translate(_ESCAPES)


def width(text: str) -> int:
    """Columns `text` takes on a terminal: East Asian wide characters two, combining marks none
    (len() would misalign a table holding them)."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text
    )


def pad(text: str, columns: int) -> str:
    return text + " " * (columns - width(text))


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
    shown = [tuple(printable(cell) for cell in row) for row in [header, *rows]]
    widths = [max(width(r[i]) for r in shown) for i in range(len(header))]
    for n, row in enumerate(shown):
        cells = []
        for i, (cell, columns_) in enumerate(zip(row, widths, strict=True)):
            padded = pad(cell, columns_)
            if n == 0:
                padded = paint(padded, BOLD, stream)
            elif colours and cell in colours.get(i, {}):
                padded = paint(cell, colours[i][cell], stream) + " " * (columns_ - width(cell))
            cells.append(padded)
        print("  ".join(cells).rstrip(), file=stream)


def box(header: list[str], rows: list[list[str]], stream: TextIO, dim: set[str] | None = None) -> None:
    """A boxed table, as `wrangler d1 execute` prints query results. Cells in `dim` (e.g. NULL)
    are shown faint."""
    header = [printable(h) for h in header]
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max([width(h), *(width(r[i]) for r in rows)]) for i, h in enumerate(header)]
    try:
        "┌─│".encode(stream.encoding or "ascii")
        rule, bar, corners = "─", "│", "┌┬┐├┼┤└┴┘"
    except (LookupError, UnicodeEncodeError):  # a terminal in an old 8-bit locale
        rule, bar, corners = "-", "|", "+++++++++"

    def line(left: str, mid: str, right: str) -> str:
        return left + mid.join(rule * (w + 2) for w in widths) + right

    def cells(values: list[str], header_row: bool) -> str:
        out = []
        for value, columns_ in zip(values, widths, strict=True):
            text = pad(value, columns_)
            if header_row:
                text = paint(text, BOLD, stream)
            elif dim and value in dim:
                text = paint(value, DIM, stream) + " " * (columns_ - width(value))
            out.append(f" {text} ")
        return bar + bar.join(out) + bar

    print(line(*corners[0:3]), file=stream)
    print(cells(header, True), file=stream)
    print(line(*corners[3:6]), file=stream)
    for row in rows:
        print(cells(row, False), file=stream)
    print(line(*corners[6:9]), file=stream)
