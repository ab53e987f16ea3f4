"""The skip-or-raise policy (`data.on_error`) for bad input data (`mdvq.core.errors.DataError`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from mdvq.core.errors import DataError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

ON_ERROR_CHOICES = ("raise", "skip")


def check_on_error(on_error: str) -> str:
    """Validate the `data.on_error` policy ('raise' or 'skip') and return it."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"data.on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


def load_each(
    items: Iterable[T], load: Callable[[T], R], on_error: str = "raise"
) -> tuple[list[tuple[T, R]], list[DataError]]:
    """Apply `load` to every item; with on_error='skip' a DataError is logged and the item dropped.

    Returns the (item, result) pairs that loaded and the errors that were skipped. With
    on_error='raise' the first DataError propagates unchanged.
    """
    check_on_error(on_error)
    loaded: list[tuple[T, R]] = []
    skipped: list[DataError] = []
    for item in items:
        try:
            loaded.append((item, load(item)))
        except DataError as err:
            if on_error == "raise":
                raise
            log.warning("skipping %s", err)
            skipped.append(err)
    if skipped:
        log.warning("skipped %d of %d files (data.on_error=skip)", len(skipped), len(skipped) + len(loaded))
    return loaded, skipped
