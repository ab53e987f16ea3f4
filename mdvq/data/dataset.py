"""`SpectrogramSet`: the in-memory form every data source produces, and its atomic on-disk cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mdvq.core.errors import DataError
from mdvq.data.cache_lock import exclusive_build

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
#: the entry of every cache file written by `atomic_save_npz` holding `arrays_checksum` of the rest
CHECKSUM_KEY = "checksum"


@dataclass
class SpectrogramSet:
    """A labelled set of spectrograms in [0,1] with their physical axes.

    images: float32 `(N, C, F, T)` in [0,1], rows in ascending Doppler (docs/data.md).
    labels: int64 `(N,)` class indices into `class_names`.
    subjects: str `(N,)` subject/recording-group ids, or None when unknown (splits then
      stratify by class only).
    freqs_hz: `(F,)` Doppler axis in Hz, or None when unknown (e.g. image folders).
    times_s: `(T,)` frame times in seconds, or None when unknown.
    sources: per-example origin (file path or "sim:<index>") for traceability, or None.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    subjects: np.ndarray | None = None
    freqs_hz: np.ndarray | None = None
    times_s: np.ndarray | None = None
    sources: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.images = np.asarray(self.images, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.subjects is not None:
            self.subjects = np.asarray(self.subjects).astype(str)
        if self.sources is not None:
            self.sources = np.asarray(self.sources).astype(str)
        self.class_names = [str(c) for c in self.class_names]

    def __len__(self) -> int:
        return len(self.labels)

    def validate(self, origin: str | os.PathLike | None = None) -> SpectrogramSet:
        """Check shapes, ranges and finiteness; raise DataError naming `origin` on a problem."""
        n = len(self.labels)
        if self.images.ndim != 4:
            raise DataError(origin, f"images must be (N, C, F, T), got shape {self.images.shape}")
        if self.images.shape[0] != n:
            raise DataError(origin, f"{self.images.shape[0]} images but {n} labels")
        if n == 0:
            raise DataError(origin, "no examples")
        if not np.all(np.isfinite(self.images)):
            bad = int(np.flatnonzero(~np.isfinite(self.images).reshape(n, -1).all(1))[0])
            where = self.sources[bad] if self.sources is not None else f"example {bad}"
            raise DataError(origin, f"NaN or inf values in {where}")
        if self.images.min() < 0 or self.images.max() > 1:
            raise DataError(origin, "images must lie in [0,1]")
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise DataError(
                origin, f"labels must lie in [0, {len(self.class_names)}) for classes {self.class_names}"
            )
        for name in ("subjects", "sources"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise DataError(origin, f"{name} has {len(arr)} entries for {n} examples")
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the set to `path` (.npz) atomically: a crash leaves the old file or none."""
        arrays = {"images": self.images, "labels": self.labels,
                  "class_names": np.asarray(self.class_names, dtype=str),
                  "meta": np.asarray(json.dumps(self.meta, default=str)),
                  "version": np.asarray(CACHE_FORMAT_VERSION)}
        for name in ("subjects", "freqs_hz", "times_s", "sources"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        atomic_save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpectrogramSet:
        """Read a set written by `save`; raise DataError naming the file if it is unreadable,
        or its content checksum is missing or does not match (`verified_arrays`)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                z = verified_arrays(z, path)
                if int(z["version"]) != CACHE_FORMAT_VERSION:
                    raise DataError(path, f"cache format {int(z['version'])}, expected {CACHE_FORMAT_VERSION}")
                opt = {k: z[k] for k in ("subjects", "freqs_hz", "times_s", "sources") if k in z}
                return cls(images=z["images"], labels=z["labels"], class_names=list(z["class_names"]),
                           meta=json.loads(str(z["meta"])), **opt)
        except DataError:
            raise
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise DataError(path, f"unreadable spectrogram cache ({err})") from err


def arrays_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """A content hash (blake2b, 128 bits, hex) of named arrays: every array's name, dtype,
    shape and bytes in name order, so a changed value, shape, type or entry changes it. The
    `CHECKSUM_KEY` entry itself is left out."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(k for k in arrays if k != CHECKSUM_KEY):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def verified_arrays(npz, path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an open `.npz` (`np.load` result) whose stored `CHECKSUM_KEY` matches its
    content; raises DataError naming `path` when the checksum is missing (a cache written before
    checksums: stale) or differs (the file was altered after it was written)."""
    arrays = {k: npz[k] for k in npz.files}
    if CHECKSUM_KEY not in arrays:
        raise DataError(path, "no content checksum (a cache written by an older mdvq): "
                              "treated as stale")
    stored, actual = str(arrays.pop(CHECKSUM_KEY)), arrays_checksum(arrays)
    if stored != actual:
        raise DataError(path, f"content checksum mismatch (stored {stored[:12]}..., content "
                              f"{actual[:12]}...): the file was altered after it was written")
    return arrays


def atomic_save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Save arrays to `path` through a temporary file in the same folder and `os.replace`,
    with their `arrays_checksum` as the `CHECKSUM_KEY` entry (checked by `verified_arrays`).

    The file gets the mode of a file created normally (0666 less the umask, e.g. 0644):
    `mkstemp` creates 0600, which would make a cache shared on a cluster unreadable to others.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {**arrays, CHECKSUM_KEY: np.asarray(arrays_checksum(arrays))}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def cache_key(params: dict) -> str:
    """A short stable hash of the settings that determine a cached set (JSON of sorted keys)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_or_build(
    cache_dir: str | os.PathLike | None,
    name: str,
    params: dict,
    build: Callable[[], SpectrogramSet],
) -> SpectrogramSet:
    """Return the cached set for (`name`, `params`), building and caching it when missing.

    The file is `<cache_dir>/<name>-<cache_key(params)>.npz`, so changed settings give a new
    file. An unreadable or altered cache file (content checksum missing or different) is
    reported with its path and rebuilt. With `cache_dir=None` nothing is
    cached. The returned set's `meta["cache_key"]` holds the key. Processes that want the
    same missing file at once (parallel sweep jobs, ranks started before DDP exists) build it
    once: the others wait for the build lock, then read it (`mdvq.data.cache_lock`).
    """
    key = f"{name}-{cache_key(params)}"
    if cache_dir is None:
        data = build()
        data.meta.update({"cache_key": key, "params": params})
        return data
    path = Path(cache_dir) / f"{key}.npz"
    with exclusive_build(path):  # processes wanting the same missing file take turns
        if path.exists():
            try:
                data = SpectrogramSet.load(path)
                log.info("loaded cached %s from %s", name, path)
                data.meta["cache_key"] = key
                return data
            except DataError as err:
                log.warning("rebuilding cache: %s", err)
        data = build()
        data.meta.update({"cache_key": key, "params": params})
        data.save(path)
        log.info("cached %s (%d examples) at %s", name, len(data), path)
    return data
