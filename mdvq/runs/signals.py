"""Stopping a run cleanly on SIGTERM / Ctrl-C: the signal plumbing kept out of `train()`.

A scheduler's time limit or SLURM preemption sends SIGTERM; `train()` must then record where
it stopped (the summary says `interrupted`, the signal, and the checkpoint to resume from) and
exit 143 (128 + 15), under a single process, DDP and `ddp_spawn` alike. Ctrl-C exits 130.

This module touches Lightning's private API, checked on Lightning 2.5-2.6
(`tests/test_signals.py` fails when these names disappear, so an upgrade is caught by CI):
- `trainer._signal_connector.received_sigterm` (the flag Lightning's loop broadcasts and stops on);
- `lightning.pytorch.strategies.launchers.multiprocessing._MultiProcessingLauncher` with its
  `procs` (the `ddp_spawn` workers) and `kill(signum)`.

`sigterm_guard(get_trainer)` installs the handler for the whole run (a context manager);
`StopTogetherOnSigterm` is the callback that keeps ranks of a multi-process run together.
"""

from __future__ import annotations

import contextlib
import logging
import signal

import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

EXIT_SIGTERM = 128 + signal.SIGTERM
"""Exit status of a run stopped by SIGTERM (143)."""
EXIT_SIGINT = 128 + signal.SIGINT
"""Exit status of a run stopped by Ctrl-C (130)."""


class StopTogetherOnSigterm(Callback):
    """In a multi-process run, marks a SIGTERM without a collective inside the signal handler.

    Lightning's SIGTERM handler broadcasts a tensor from rank 0 inside the handler; when the
    ranks are signalled at different points of a batch (SLURM signals every task, the main
    process of `ddp_spawn` forwards the signal to its workers), that broadcast meets another
    collective (a gradient all-reduce) and the job hangs instead of stopping. Once Lightning has
    installed its handler (before the sanity check and before training) this one replaces it
    in processes of a group of several: it only marks the signal (and, in the process that
    launched the others with `ddp`, passes it on to them, as Lightning's does). Lightning's loop
    broadcasts the mark at the start of the next batch, so every rank stops there together
    (SIGTERMException, exit 143). Lightning restores the previous handler at the end of the run.
    """

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        """Install the handler before the sanity check's validation batches."""
        self._install(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        """Install the handler (again: Lightning re-registers its own before each stage)."""
        self._install(trainer)

    @staticmethod
    def _install(trainer) -> None:
        if not (dist.is_available() and dist.is_initialized() and trainer.world_size > 1):
            return
        connector = trainer._signal_connector

        def handler(signum, frame):
            if not connector.received_sigterm:
                log.info("rank %d: SIGTERM, stopping after the current batch", trainer.global_rank)
                launcher = trainer.strategy.launcher
                if launcher is not None and trainer.global_rank == 0:
                    launcher.kill(signum)  # `ddp` children (a spawn worker has no processes)
            connector.received_sigterm = True

        try:
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            pass


def signal_name(err: BaseException) -> str | None:
    """"SIGTERM" for Lightning's SIGTERMException, "SIGINT" for Ctrl-C (Lightning turns a
    KeyboardInterrupt inside fit into `SystemExit(1)`), else None."""
    if isinstance(err, SIGTERMException):
        return "SIGTERM"
    if isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt):
        return "SIGINT"
    return None


def interruption(err: BaseException, name: str | None, trainer, checkpoints: dict) -> str:
    """The summary's error text of an interrupted run: the signal, where it stopped, and the
    checkpoint to resume from."""
    if name is None:
        return f"{type(err).__name__}: {err}"
    where = ""
    if trainer is not None and trainer.state.status is not None:
        where = f" at epoch {trainer.current_epoch}, step {trainer.global_step}"
    last = checkpoints.get("last")
    then = (f"resume with ckpt_path={last}" if last else
            "no checkpoint was written yet (one is saved at the end of each epoch): run again")
    return f"stopped by {name}{where}; {then}"


def _stop_on_sigterm(get_trainer, received: dict | None = None):
    """Install a SIGTERM handler that raises Lightning's SIGTERMException while no trainer is
    running (data generation, model building), so a run stopped then still writes its summary
    and exits 143. While fitting, Lightning's own handler (which calls this one too) only marks
    the signal and stops the loop after the current batch. In the main process of `ddp_spawn`,
    where Lightning installs no handler (its loop runs in the spawned workers), it sends the
    signal on to the workers, notes it in `received["signal"]`, waits for them to stop after
    their current batch (at most `_WORKER_STOP_S`) and raises SIGTERMException: the workers
    leave with status 0 and no results, for which Lightning's main process would otherwise
    wait forever. Returns the previous handler (`_NOT_INSTALLED` outside the main thread,
    where handlers cannot be set)."""

    def handler(signum, frame):
        trainer = get_trainer()
        if trainer is None or trainer.state.status != TrainerStatus.RUNNING:
            raise SIGTERMException()
        launcher = getattr(trainer.strategy, "launcher", None)
        if isinstance(launcher, _MultiProcessingLauncher) and launcher.procs:
            if received is not None:
                received["signal"] = "SIGTERM"
            launcher.kill(signum)
            for proc in launcher.procs:
                proc.join(_WORKER_STOP_S)
            raise SIGTERMException()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return _NOT_INSTALLED
    return signal.SIG_DFL if previous is None else previous  # None: set outside Python


_NOT_INSTALLED = object()
_WORKER_STOP_S = 300  # seconds the main process of ddp_spawn waits for its workers to stop


def _restore_sigterm(previous) -> None:
    """Put back the SIGTERM handler `_stop_on_sigterm` replaced."""
    if previous is not _NOT_INSTALLED:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_guard(get_trainer):
    """For the duration of a run: SIGTERM raises Lightning's SIGTERMException while no trainer
    runs, and is passed on to `ddp_spawn` workers while one does (`_stop_on_sigterm`). Yields
    a dict that holds `"signal": "SIGTERM"` once the main process of `ddp_spawn` forwarded
    one. The previous handler is restored on exit."""
    received: dict[str, str] = {}
    previous = _stop_on_sigterm(get_trainer, received)
    try:
        yield received
    finally:
        _restore_sigterm(previous)
