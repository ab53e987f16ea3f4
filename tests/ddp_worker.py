"""Light helpers that the worker processes of a DDP test import (a `ddp_spawn` worker
unpickles the trainer, datamodule and callbacks, importing the modules that define them: this
small module rather than a heavy test file).

Each helper appends one line per event to a log file, so a test can count what every process
did: `<cache_dir>/builds.log` gets `<kind> <who>` per cache build (`radar`, `tokens`), a
`RankLog` file `train <who> batches=<n> train_examples=<n> key=<cache key>` per process that
trained. `who` is `rank<r>` inside a process group, else `main`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from mdvq.data.simulator import RadarSimulatorSource
from mdvq.data.tokens import TokenDataModule
from mdvq.models.vqdiffusion import VQDiffusionModule


def who() -> str:
    """`rank<r>` in an initialised process group, else `main`."""
    return f"rank{dist.get_rank()}" if dist.is_available() and dist.is_initialized() else "main"


def record(path: str | os.PathLike, line: str) -> None:
    """Append `line` to `path` (one short write in append mode: lines of processes do not mix)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(line + "\n")


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines `record` wrote to `path` (none when it does not exist)."""
    path = Path(path)
    return path.read_text().splitlines() if path.exists() else []


class CountingSimulatorSource(RadarSimulatorSource):
    """The simulator, recording `radar <who>` in `<cache_dir>/builds.log` on every build."""

    def build(self):
        record(Path(self.cache_dir) / "builds.log", f"radar {who()}")
        return super().build()


class CountingTokens(TokenDataModule):
    """The token cache, recording `tokens <who>` in `<cache_dir>/builds.log` on every encoding."""

    def _encode_all(self):
        record(self.cache_dir / "builds.log", f"tokens {who()}")
        return super()._encode_all()


class CountingVQDiffusion(VQDiffusionModule):
    """The VQ-Diffusion prior, training on a `CountingTokens` cache."""

    def wrap_datamodule(self, datamodule):
        tokens = super().wrap_datamodule(datamodule)
        tokens.__class__ = CountingTokens
        return tokens


class RankLog(Callback):
    """Records, per process, how many batches it trained on, its training split's size and the
    key of the cache it read."""

    def __init__(self, path: str):
        self.path = path
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def on_train_end(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        key = getattr(dm, "cache_key", None) or dm.data_key
        record(self.path, f"train {who()} batches={self.batches} "
                          f"train_examples={len(dm.datasets['train'])} key={key}")
