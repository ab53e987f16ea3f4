"""Markdown tables: one layout for every table mdvq writes (sweeps, routes, generation metrics,
benchmarks). Cells arrive as text; each caller formats its numbers its own way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]],
                   right: Iterable[str] = ()) -> str:
    """`| a | b |` rows under a `|---|---|` rule; columns named in `right` are right-aligned
    (`---:`). Cells are strings, written as given."""
    right = set(right)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if h in right else "---" for h in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
