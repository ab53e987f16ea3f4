"""`KeepCSVColumns`: Lightning's CSV log keeps every column when a run's stages run in different
processes (`strategy=ddp_spawn`, e.g. `trainer=ddp_cpu`)."""

from __future__ import annotations

import csv
import logging
import multiprocessing
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

log = logging.getLogger(__name__)


class KeepCSVColumns(Callback):
    """Makes every `CSVLogger` of the trainer know the columns its `metrics.csv` already holds.

    Under `ddp_spawn` each `trainer.fit` / `trainer.test` runs in fresh worker processes that
    hold the main process's copy of the logger, which never saw the columns the fit workers
    wrote (`val/psnr`, ...). Lightning's CSV writer then rewrites the file with the test columns
    only and fails on the fit rows (`ValueError: dict contains fields not in fieldnames`),
    leaving a header-only file. At `setup` of every stage this callback adds the file's header
    to the writer's known columns, so the test rows are appended to the fit rows.

    A writer first created inside a spawned worker deletes an existing `metrics.csv` (Lightning
    treats it as a stale log); the callback puts that file back. In a single process the
    writer already knows its columns and nothing changes.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Merge each CSV log's existing header into its writer's columns (rank 0 only)."""
        if trainer.global_rank != 0:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                self._keep_columns(logger)

    @staticmethod
    def _keep_columns(logger: CSVLogger) -> None:
        path = Path(logger.log_dir) / "metrics.csv"
        kept = path.read_bytes() if path.is_file() else None
        writer = logger.experiment  # created here when new: it deletes an existing metrics.csv
        if kept is not None and not path.exists() and multiprocessing.parent_process() is not None:
            path.write_bytes(kept)  # a spawned worker continuing the run's log: keep its rows
        if not path.is_file():
            return
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        missing = [k for k in header if k not in writer.metrics_keys]
        if missing:
            writer.metrics_keys.extend(missing)
            writer.metrics_keys.sort()
            log.debug("%s: continuing with the columns %s", path, missing)
