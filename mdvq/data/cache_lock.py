"""An exclusive lock around building one cache file, so processes that want the same missing
file take turns: the first builds and writes it, the others then read the finished file.

Multi-process runs order their ranks inside Lightning (`mdvq.data.datamodule.build_once`), but
some processes meet a missing cache with no process group to order them: the jobs of a
parallel sweep (`hydra/launcher=local_parallel`, several SLURM jobs) started on a fresh cache
folder, and the ranks that `srun` starts all at once, which set up a prior's data before DDP
exists. Without the lock each of them simulates or encodes the same file (atomic writes keep it
whole, but the work is repeated N times and N copies of the data sit in memory at once).

The lock is an advisory `flock` on `<file>.lock` beside the cache file (POSIX; honoured across
machines by shared filesystems that support flock: NFSv4, Lustre with `-o flock`, GPFS). Where
it cannot be taken (no `fcntl`, a filesystem without locks) the build goes ahead unlocked, as
before: repeated, never corrupt. The `.lock` file is left in place (removing it would let a
third process lock a new file while the second still holds the old one).

Why not the `filelock` package (checked with filelock 4.3): where `flock` is missing (ENOSYS)
its `FileLock` switches to a soft lock (a marker file), which a killed job leaves behind and
which then holds every later build until a timeout; where the filesystem refuses locks (ENOLCK)
the error propagates; and which of these happens depends on its version (`fallback_to_soft`
arrived in 3.30). Wrapping it to build unlocked in those cases, as this module does, takes
about as many lines as the `flock` call itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of cache file `path`: `<path>.lock`."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextmanager
def exclusive_build(path: str | os.PathLike) -> Iterator[bool]:
    """Hold the exclusive build lock of cache file `path` for the duration of the block (waiting
    while another process holds it); yields True when locked, False when locking is not
    possible here (the block then runs unlocked). Creates the cache folder if needed."""
    target = lock_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield False
        return
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # a read-only cache folder: reading still works, building will say why
        log.debug("no build lock %s (%s)", target, err)
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError as err:  # ENOLCK: a filesystem without locks
            log.debug("build lock %s not taken (%s): building unlocked", target, err)
            locked = False
        try:
            yield locked
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
