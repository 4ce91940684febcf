"""Markdown building blocks shared by every report section: numbers, pipe tables and their cells, and slugs.

`table(header, rows)` writes a GitHub pipe table (the subset `page.markdown_to_html` renders); `cell` escapes one
cell's text (pipes, newlines); `num` prints a number or a dash; `slug` turns a title into an anchor or a file name.
"""

from __future__ import annotations

import math
import re


def num(x: float | None, digits: int = 2) -> str:
    """`x` with `digits` decimals, or an em dash for None, NaN and infinities."""
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def cell(text: str) -> str:
    """Escape a Markdown table cell (pipes; newlines become <br>)."""
    return text.replace("|", "\\|").replace("\n", "<br>")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table: the header, the delimiter row, one line per row (cells escaped by `cell`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def slug(text: str) -> str:
    """Lower-case letters and digits joined by '-': a heading's anchor, a figure's file name."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
