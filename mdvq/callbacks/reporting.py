"""How callbacks log epoch values: identically on every rank (figures: `mdvq.utils.figures`)."""

from __future__ import annotations


def log_epoch_value(pl_module, name: str, value: float) -> None:
    """Log an epoch-level value that is already the same on every rank (computed from synced state).

    Logged on all ranks (so ModelCheckpoint/EarlyStopping find it everywhere) with a `max`
    reduction, which returns the common value exactly and keeps Lightning from warning about
    unsynced epoch metrics.
    """
    pl_module.log(name, float(value), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")
