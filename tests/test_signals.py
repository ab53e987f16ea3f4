"""The Lightning private API that mdvq/runs/signals.py relies on is still there: a Lightning
upgrade that removes or renames it fails here, in CI, not in a user's preempted job."""

from __future__ import annotations

import inspect
import signal

import lightning as L
import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mdvq.runs import signals


def test_the_trainer_has_the_signal_connector_flag_we_set():
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False)
    connector = trainer._signal_connector
    assert connector.received_sigterm is False  # Lightning's loop stops when this turns True
    connector.received_sigterm = True
    assert trainer._signal_connector.received_sigterm is True


def test_the_spawn_launcher_has_its_worker_processes_and_kill():
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    assert signals._MultiProcessingLauncher is _MultiProcessingLauncher
    assert "procs" in inspect.getsource(_MultiProcessingLauncher.__init__)
    assert list(inspect.signature(_MultiProcessingLauncher.kill).parameters) == ["self", "signum"]


def test_sigterm_outside_training_raises_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with signals.sigterm_guard(lambda: None) as received:
        with pytest.raises(SIGTERMException):
            signal.raise_signal(signal.SIGTERM)
        assert received == {}
    assert signal.getsignal(signal.SIGTERM) is before


def test_signal_names_and_exit_status():
    assert signals.signal_name(SIGTERMException()) == "SIGTERM"
    assert signals.signal_name(KeyboardInterrupt()) == "SIGINT"
    assert signals.signal_name(ValueError("x")) is None
    assert (signals.EXIT_SIGTERM, signals.EXIT_SIGINT) == (143, 130)
