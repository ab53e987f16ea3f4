"""`ReleaseProcessGroup`: a clean exit for the worker processes of `strategy=ddp_spawn`."""

from __future__ import annotations

import multiprocessing

import torch.distributed as dist
from lightning.pytorch.callbacks import Callback


class ReleaseProcessGroup(Callback):
    """Destroys the torch.distributed process group at the end of a run inside a spawned
    worker (Lightning's `ddp_spawn`, e.g. `trainer=ddp_cpu`).

    Spawned workers leave through `os._exit`, which skips the `atexit` handler Lightning
    registers to destroy the group; gloo's threads then occasionally abort the worker at exit
    ("terminate called without an active exception", SIGABRT) after a successful run. The
    callback's `teardown` is the last hook of a run and no collective follows it in the worker.
    In the main process (single device, or `ddp` launched as subprocesses, whose `atexit` runs)
    it does nothing.
    """

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Destroy the process group when running in a spawned child with one initialised."""
        if multiprocessing.parent_process() is not None and dist.is_available() \
                and dist.is_initialized():
            dist.destroy_process_group()
