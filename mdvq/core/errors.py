"""The error raised for bad input data: a data file, array or run folder that cannot be used."""

from __future__ import annotations

import os


class DataError(ValueError):
    """A data file or array that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
