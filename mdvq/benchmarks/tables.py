"""Markdown tables of benchmark rows (lists of dicts)."""

from __future__ import annotations

from collections.abc import Sequence

from mdvq.utils.tables import markdown_table as table


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None,
                   numeric: Sequence[str] = ()) -> str:
    """A markdown table of `rows` with `columns` (None: the first row's keys, in order); None
    cells print "n/a", floats 3 significant digits; `numeric` columns are right-aligned."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    return table([str(c) for c in columns], ([_cell(row.get(c)) for c in columns] for row in rows),
                 right=numeric)
