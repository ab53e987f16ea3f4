"""`EpochLines`: one plain line per epoch instead of a progress bar when stdout is no terminal."""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta

from lightning.pytorch import Callback

from mdvq.utils.metric_keys import TRAIN_LOSS, VAL_PSNR


def format_duration(seconds: float) -> str:
    """`h:mm:ss` of a duration in seconds ("?" when not finite)."""
    if not math.isfinite(seconds):
        return "?"
    return str(timedelta(seconds=round(max(seconds, 0.0))))


def epoch_line(epoch: int, max_epochs: int | None, metrics: dict, elapsed_s: float,
               epochs_timed: int | None = None) -> str:
    """`epoch 3/8 | train/loss 0.1234 | val/psnr 21.50 | elapsed 0:01:23 | remaining 0:02:10`.

    `epoch` counts from 1 (epochs done); `metrics` {name: float} in the order given; the
    remaining time (s) is the mean time of the `epochs_timed` epochs `elapsed_s` covers
    (default `epoch`; fewer in a resumed run) times the epochs left (unknown without
    `max_epochs`, e.g. max_epochs=-1).
    """
    total = max_epochs if max_epochs and max_epochs > 0 else None
    parts = [f"epoch {epoch}/{total}" if total else f"epoch {epoch}"]
    parts += [f"{name} {value:.4g}" for name, value in metrics.items()]
    parts.append(f"elapsed {format_duration(elapsed_s)}")
    if total:
        timed = max(epochs_timed or epoch, 1)
        parts.append(f"remaining {format_duration(elapsed_s / timed * (total - epoch))}")
    return " | ".join(parts)


class EpochLines(Callback):
    """Prints one line per training epoch (after its validation) with the key metrics and the
    elapsed / estimated remaining time, and switches the progress bar off, when `when` says so.

    A progress bar written to a file or pipe (CI, SLURM, nohup) shows nothing readable until the
    end; these lines are flushed at once.

    Args:
        metrics: names to print when logged (e.g. train/loss, val/psnr in dB), in this order.
        when: "auto" (when stdout is not a terminal), "always" or "never".
    """

    def __init__(self, metrics: list[str] | tuple[str, ...] = (TRAIN_LOSS, VAL_PSNR),
                 when: str = "auto"):
        if when not in ("auto", "always", "never"):
            raise ValueError(f"callbacks.epoch_lines.when must be auto, always or never, got {when!r}")
        self.metrics = [str(m) for m in metrics]
        self.when = when
        self.active = False
        self._started: float | None = None
        self._first_epoch = 0

    def _wanted(self) -> bool:
        if self.when != "auto":
            return self.when == "always"
        isatty = getattr(sys.stdout, "isatty", None)
        return not (callable(isatty) and isatty())

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.active = self._wanted()
        bar = getattr(trainer, "progress_bar_callback", None)
        if self.active and bar is not None and callable(getattr(bar, "disable", None)):
            bar.disable()

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = time.monotonic()
        self._first_epoch = trainer.current_epoch  # > 0 in a resumed run

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.active or not trainer.is_global_zero or self._started is None:
            return
        logged = trainer.callback_metrics
        values = {}
        for name in self.metrics:
            value = logged.get(name, logged.get(f"{name}_epoch"))
            if value is not None:
                values[name] = float(value)
        done = trainer.current_epoch + 1
        line = epoch_line(done, trainer.max_epochs, values, time.monotonic() - self._started,
                          done - self._first_epoch)
        print(line, file=sys.stdout, flush=True)
