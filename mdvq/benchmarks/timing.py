"""Marginal cost per batch: wall time against batch count, fitted, with arms interleaved.

A run of ``n`` batches costs ``fixed + n * per_batch`` seconds (start-up, compilation and
warm-up are in ``fixed``). Timing every arm at two or more batch counts and fitting a line
gives ``per_batch`` free of the fixed part; running the arms interleaved (A(n1) B(n1) A(n2)
B(n2), then again) spreads slow drift of a shared machine over all arms alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def marginal_cost(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares line through ``(batches, seconds)`` points: ``(per_batch_s, fixed_s)``.

    Needs at least two distinct batch counts (ValueError otherwise).
    """
    n = np.asarray([p[0] for p in points], dtype=float)
    t = np.asarray([p[1] for p in points], dtype=float)
    if len(np.unique(n)) < 2:
        raise ValueError(f"marginal cost needs two distinct batch counts, got {sorted(set(n))}")
    slope, intercept = np.polyfit(n, t, 1)
    return float(slope), float(intercept)


def interleaved(arms: Mapping[str, Callable[[int], None]], counts: Sequence[int],
                repeats: int = 2, clock: Callable[[], float] = time.perf_counter,
                on_run: Callable[[str, int, float], None] | None = None
                ) -> dict[str, list[tuple[int, float]]]:
    """Time ``arm(n)`` for every arm and batch count ``n`` in ``counts``, ``repeats`` times,
    interleaved (for each repeat, for each count, every arm in turn).

    Returns ``{arm: [(n, seconds), ...]}``; ``on_run(arm, n, seconds)`` is called after each run.
    """
    if repeats < 1 or len(set(counts)) < 2 or min(counts) < 1:
        raise ValueError(f"batches must hold two distinct counts >= 1 and repeats >= 1, got "
                         f"{list(counts)} x {repeats}")
    points: dict[str, list[tuple[int, float]]] = {name: [] for name in arms}
    for _ in range(repeats):
        for n in counts:
            for name, arm in arms.items():
                start = clock()
                arm(int(n))
                seconds = clock() - start
                points[name].append((int(n), seconds))
                if on_run is not None:
                    on_run(name, int(n), seconds)
    return points
