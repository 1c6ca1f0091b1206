"""Plain-text layout for the terminal: one-line truncation, durations, and tables whose columns
shrink or drop to fit the width."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Column", "format_duration", "format_table", "terminal_width", "truncate"]


def terminal_width() -> int:
    """The terminal's width (``$COLUMNS`` wins; 160 when output is not a terminal)."""
    return max(40, shutil.get_terminal_size((160, 24)).columns)


def truncate(text: str | None, width: int) -> str:
    """One line of at most ``width`` characters (whitespace collapsed, ``…`` when cut)."""
    flat = " ".join((text or "").split())
    if len(flat) <= width:
        return flat
    return flat[: max(0, width - 1)] + "…"


def format_duration(nanoseconds: int) -> str:
    seconds = nanoseconds / 1e9
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@dataclass(frozen=True)
class Column:
    """A table column: ``shrink_to`` makes it truncatable, ``drop_rank`` droppable (1 first)."""

    header: str
    cells: Sequence[str]
    right: bool = False
    shrink_to: int | None = None
    drop_rank: int | None = None

    @property
    def natural(self) -> int:
        return max([len(self.header), *(len(cell) for cell in self.cells)])

    @property
    def least(self) -> int:
        return self.natural if self.shrink_to is None else min(self.natural, self.shrink_to)


def _fit(columns: Sequence[Column], width: int) -> tuple[list[Column], list[int]]:
    """Drop columns by rank until the rest fit ``width``, then share the room among the
    shrinkable ones (shortest first, never below 6 characters)."""
    kept = list(columns)
    droppable = sorted(
        (c for c in columns if c.drop_rank is not None), key=lambda c: c.drop_rank or 0
    )

    def least_width() -> int:
        return sum(column.least for column in kept) + 2 * (len(kept) - 1)

    while least_width() > width and droppable:
        kept.remove(droppable.pop(0))
    widths = [column.natural for column in kept]
    shrinkable = [i for i, column in enumerate(kept) if column.shrink_to is not None]
    budget = width - 2 * (len(kept) - 1)
    budget -= sum(w for i, w in enumerate(widths) if i not in shrinkable)
    for position, index in enumerate(sorted(shrinkable, key=lambda i: widths[i])):
        share = budget // (len(shrinkable) - position)
        widths[index] = min(widths[index], max(share, 6))
        budget -= widths[index]
    return kept, widths


def format_table(columns: Sequence[Column], width: int) -> str:
    """Aligned columns fitted to ``width`` (see :func:`_fit`)."""
    kept, widths = _fit(columns, width)
    lines = []
    for row in range(-1, len(kept[0].cells) if kept else 0):
        cells = []
        for column, column_width in zip(kept, widths, strict=True):
            text = truncate(column.header if row < 0 else column.cells[row], column_width)
            cells.append(text.rjust(column_width) if column.right else text.ljust(column_width))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
