"""`WandbReview`: what a W&B dashboard needs beyond the metrics: data/model tags and the code-use
histogram as a native W&B histogram (the figures themselves go through `save_and_log_figure`)."""

from __future__ import annotations

import numpy as np
from lightning.pytorch import Callback
from lightning.pytorch.loggers import WandbLogger


def wandb_loggers(trainer) -> list[WandbLogger]:
    """The trainer's WandbLoggers (none when the run has no W&B logger)."""
    return [lg for lg in getattr(trainer, "loggers", []) if isinstance(lg, WandbLogger)]


def log_wandb_histogram(trainer, tag: str, counts) -> bool:
    """Send per-code `counts` `(K,)` (selections of each code), sorted most used first, as a W&B
    histogram under `tag` (one bin per code rank, bin height = selections). Call on rank zero.
    Returns False when the run has no W&B logger."""
    loggers = wandb_loggers(trainer)
    if not loggers:
        return False
    import wandb

    counts = np.sort(np.asarray(counts, dtype=np.float64).ravel())[::-1]
    edges = np.arange(len(counts) + 1, dtype=np.float64)
    for logger in loggers:
        logger.log_metrics({tag: wandb.Histogram(np_histogram=(counts, edges))},
                           step=trainer.global_step)
    return True


class WandbReview(Callback):
    """Tags each W&B run with `data:<data key>` (same key = same data and held-out split) and
    `model:<kind>`, so a dashboard filters runs that are comparable. Does nothing without a
    W&B logger. Grouping, naming, job type and `define_metric` are the logger's
    (`mdvq.utils.loggers.wandb_logger`).

    Args:
        extra_tags: more tags for every run of this config.
    """

    def __init__(self, extra_tags: list[str] | tuple[str, ...] = ()):
        self.extra_tags = [str(t) for t in extra_tags or ()]

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        tags = list(self.extra_tags)
        data_key = getattr(trainer.datamodule, "data_key", None) if trainer.datamodule else None
        if data_key:
            tags.append(f"data:{data_key}"[:64])  # W&B tags are at most 64 characters
        kind = getattr(pl_module, "model_kind", None)
        if kind:
            tags.append(f"model:{kind}")
        for logger in wandb_loggers(trainer):
            run = logger.experiment
            old = tuple(getattr(run, "tags", None) or ())
            new = tuple(dict.fromkeys([*old, *tags]))
            if new != old:
                run.tags = new
