"""A test-only Lightning callback that preempts its own job once, as SLURM does.

Imported by the job processes of tests/test_launchers.py (tests/ on their PYTHONPATH): a light
module, so a job does not re-import the test module.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PreemptOnce(Callback):
    """At the start of training epoch `epoch` (the previous epoch's checkpoints/last.ckpt is
    written), send `signal_name` to this process, once: `marker` is created then. A job that
    finds the marker (the requeued one) is left alone and writes `<marker>.resumed` with the
    epoch and step it starts from ("E S").

    Args:
        marker: file created when the signal is sent.
        signal_name: e.g. "SIGUSR2", submitit's preemption / time-limit signal.
        epoch: the 0-based epoch at whose start to signal.
    """

    def __init__(self, marker: str, signal_name: str = "SIGUSR2", epoch: int = 1):
        self.marker = Path(marker)
        self.signum = getattr(signal, signal_name)
        self.epoch = epoch

    def on_train_start(self, trainer, pl_module) -> None:
        if self.marker.exists():
            resumed = self.marker.with_name(self.marker.name + ".resumed")
            resumed.write_text(f"{trainer.current_epoch} {trainer.global_step}")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), self.signum)
