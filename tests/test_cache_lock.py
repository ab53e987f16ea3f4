"""Processes that want the same missing cache file at once build it once (`mdvq.data.cache_lock`):
two forked processes, released together by a barrier, ask `load_or_build` for one file."""

import multiprocessing as mp
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest
from conftest import make_set

from mdvq.data import cache_lock, dataset
from mdvq.data.dataset import load_or_build

pytestmark = pytest.mark.skipif(sys.platform == "win32" or "fork" not in mp.get_all_start_methods(),
                                reason="forks processes and uses POSIX flock")


def _ask(cache_dir, log_path, barrier, out):
    """One process: wait for the other, then load or build the cache (building takes 0.5 s)."""
    def build():
        with open(log_path, "a") as fh:
            fh.write("built\n")
        time.sleep(0.5)
        return make_set(per_class=4)

    barrier.wait()
    data = load_or_build(cache_dir, "toy", {"n": 4}, build)
    out.put(float(data.images.sum()))


def _two_processes_ask(tmp_path):
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    log_path = tmp_path / "builds.txt"
    procs = [ctx.Process(target=_ask, args=(tmp_path / "cache", log_path, barrier, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    sums = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    builds = log_path.read_text().count("built") if log_path.exists() else 0
    return builds, sums


def test_two_processes_build_a_missing_cache_once_and_read_the_same_data(tmp_path):
    builds, sums = _two_processes_ask(tmp_path)
    assert builds == 1
    assert sums[0] == sums[1] == pytest.approx(float(make_set(per_class=4).images.sum()))
    assert len(list((tmp_path / "cache").glob("toy-*.npz"))) == 1
    assert len(list((tmp_path / "cache").glob("toy-*.npz.lock"))) == 1


def test_without_the_lock_both_processes_build(tmp_path, monkeypatch):
    @contextmanager
    def no_lock(path):
        yield False

    monkeypatch.setattr(dataset, "exclusive_build", no_lock)  # inherited by the forked children
    builds, _ = _two_processes_ask(tmp_path)
    assert builds == 2  # the race the lock prevents


def test_where_locking_is_impossible_the_build_runs_unlocked(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_lock, "fcntl", None)
    with cache_lock.exclusive_build(tmp_path / "sub" / "x.npz") as locked:
        assert locked is False
    data = load_or_build(tmp_path / "c", "toy", {"n": 2}, lambda: make_set(per_class=2))
    again = load_or_build(tmp_path / "c", "toy", {"n": 2}, lambda: pytest.fail("rebuilt"))
    np.testing.assert_array_equal(data.images, again.images)


def test_the_lock_is_released_when_the_build_fails(tmp_path):
    def broken():
        raise RuntimeError("simulator crashed")

    with pytest.raises(RuntimeError, match="simulator crashed"):
        load_or_build(tmp_path, "toy", {"n": 1}, broken)
    (lock,) = tmp_path.glob("toy-*.npz.lock")
    import fcntl
    import os

    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
    finally:
        os.close(fd)
    data = load_or_build(tmp_path, "toy", {"n": 1}, lambda: make_set(per_class=1))
    assert len(data) == 3
