"""Aligned text tables for the CLI: text columns to the left, numbers to the right."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def render(head: Sequence[str], rows: Sequence[Sequence[Any]], *, right: frozenset[int] = frozenset()) -> str:
    """`right` holds the indexes of the columns aligned to the right (numbers)."""
    cells = [[str(c) for c in head]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
