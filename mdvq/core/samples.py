"""The samples folder: its one writer (`write_samples`) and its one reader (`load_samples`).

Layout (written by ``python -m mdvq.sample``, read by ``python -m mdvq.evaluate``)::

    samples.npy   float32 (N, 1, F, T) in [0, 1], rows in ascending Doppler
    labels.npy    int64 (N,): the class each sample was asked for
    meta.json     {"class_names": [...], "freqs_hz" (Hz), "times_s" (s), "steps", "guidance",
                   "seed", "prior", "prior_kind", "samples_per_second", ...}
    png/<class>_<i>.png   each sample as an 8-bit grey picture, positive Doppler at the top
    grid.png      one row per class, axes in seconds and Hz

Every problem raises ``FileNotFoundError`` or ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.npy"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
#: samples of each class shown in grid.png (every sample gets its own PNG under png/)
GRID_PER_CLASS = 12


@dataclass
class SampleSet:
    """Generated spectrograms: ``images`` float32 ``(N, 1, F, T)`` in [0, 1], ``labels`` int64
    ``(N,)`` (the class asked for), ``meta`` (the sampler's meta.json) and the ``directory``."""

    images: np.ndarray
    labels: np.ndarray
    meta: dict
    directory: Path

    @property
    def class_names(self) -> list[str]:
        """The class names of ``meta.json``."""
        return [str(c) for c in self.meta["class_names"]]

    def __len__(self) -> int:
        return len(self.labels)


def write_samples(directory: str | Path, images: np.ndarray, labels: np.ndarray, meta: dict,
                  pictures: bool = True) -> Path:
    """Write a samples folder; returns it.

    ``images`` ``(N, 1, F, T)`` in [0, 1] (stored as float32), ``labels`` ``(N,)`` (int64),
    ``meta`` a JSON-ready dict holding at least ``class_names`` (and, for physical axes,
    ``freqs_hz``/``times_s``). With ``pictures`` also ``png/`` (one PNG per sample) and
    ``grid.png``. Checks: see :func:`load_samples`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    np.save(directory / SAMPLES_FILE, images)
    np.save(directory / LABELS_FILE, labels)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=_jsonable))
    if pictures:
        _write_pictures(directory, images, labels, meta)
    return directory


#: the files and folder `write_samples` writes (besides the PNGs under png/)
WRITTEN = (SAMPLES_FILE, LABELS_FILE, META_FILE, "grid.png", "png")


def clear_samples(directory: str | Path, overwrite: bool = False,
                  dry_run: bool = False) -> list[Path]:
    """Make `directory` ready for a new `write_samples`, so no earlier sample is left beside the
    new ones: nothing to do when it holds no samples folder; else, without `overwrite`, a
    ValueError naming it (choose a new folder, or `overwrite=true`); with `overwrite`, remove
    only what `write_samples` wrote there earlier (`WRITTEN`, and the `png/<class>_<i>.png` of
    the class names of its meta.json), never other files. Returns the paths removed (with
    `dry_run`: the paths it would remove, removing nothing, so a caller can refuse before long
    work and remove only once the new samples exist).

    Raises ValueError naming meta.json when PNGs are there but meta.json is missing or
    unreadable (which PNGs are samples cannot be told).
    """
    directory = Path(directory)
    found = [name for name in WRITTEN if (directory / name).exists()]
    if not found:
        return []
    if not overwrite:
        raise ValueError(f"out={directory} already holds samples written by an earlier "
                         f"mdvq.sample ({', '.join(found)}); give a new folder (out=...), or "
                         "overwrite=true to replace them (only the files mdvq.sample wrote "
                         "are removed)")
    png = directory / "png"
    pictures = sorted(png.glob("*.png")) if png.is_dir() else []
    ours: list[Path] = []
    if pictures:
        try:
            names = _load_meta(directory / META_FILE)["class_names"]
        except (OSError, ValueError) as err:
            raise ValueError(f"{directory / META_FILE}: cannot tell which of {png} mdvq.sample "
                             f"wrote ({err}); remove that folder yourself, or give a new "
                             "out=...") from None
        pattern = re.compile("(?:" + "|".join(re.escape(_safe(str(n))) for n in names)
                             + r")_\d+\.png")
        ours = [p for p in pictures if pattern.fullmatch(p.name)]
    removed = [p for p in [*(directory / n for n in WRITTEN if n != "png"), *ours] if p.is_file()]
    if dry_run:
        return removed
    for path in removed:
        path.unlink()
    if png.is_dir() and not any(png.iterdir()):
        png.rmdir()
    log.info("overwrite=true: removed %d files of the earlier samples in %s", len(removed),
             directory)
    return removed


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "class"


def _write_pictures(directory: Path, images: np.ndarray, labels: np.ndarray, meta: dict) -> None:
    from PIL import Image

    from mdvq.utils.pixels import to_pixels
    from mdvq.utils.plotting import sample_grid_figure, save_figure

    names = [str(c) for c in meta["class_names"]]
    (directory / "png").mkdir(exist_ok=True)
    counts: dict[int, int] = {}
    for img, c in zip(images, labels.tolist()):
        i = counts[c] = counts.get(c, -1) + 1
        Image.fromarray(to_pixels(img[0])).save(directory / "png" / f"{_safe(names[c])}_{i}.png")
    per_row = min(max(counts.values(), default=0) + 1, GRID_PER_CLASS)
    # the grid shows the first GRID_PER_CLASS of each class (thousands of panels take minutes)
    shown = np.concatenate([np.flatnonzero(labels == c)[:per_row] for c in sorted(counts)])
    title = ", ".join(f"{k} {meta[k]}" for k in ("steps", "guidance", "seed") if k in meta)
    fig = sample_grid_figure(images[shown], labels[shown], names, meta.get("freqs_hz"),
                             meta.get("times_s"), per_row=per_row,
                             suptitle=f"samples: {title}" if title else None)
    save_figure(fig, directory / "grid.png")


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def load_samples(directory: str | Path) -> SampleSet:
    """Read and check a samples directory (shapes, dtypes, range [0, 1], finiteness, labels).

    Labels are checked against the ``class_names`` of meta.json; see :func:`check_compatible`
    for the checks against the real data.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"samples directory not found: {directory}")
    paths = {name: directory / name for name in (SAMPLES_FILE, LABELS_FILE, META_FILE)}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (a samples directory holds "
                                    f"{SAMPLES_FILE}, {LABELS_FILE} and {META_FILE})")
    meta = _load_meta(paths[META_FILE])
    images = _load_images(paths[SAMPLES_FILE])
    labels = _load_labels(paths[LABELS_FILE], len(images))
    k = len(meta["class_names"])
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"{paths[LABELS_FILE]}: labels must lie in [0, {k}) for the {k} classes "
                         f"of {paths[META_FILE]}, got values in [{labels.min()}, {labels.max()}]")
    return SampleSet(images=images, labels=labels, meta=meta, directory=directory)


def _load_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")  # noqa: TRY004
    names = meta.get("class_names")
    if not isinstance(names, list) or len(names) < 2:
        raise ValueError(f"{path}: 'class_names' must be a list of at least 2 names, got {names!r}")
    return meta


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npy array ({err})") from None


def _load_images(path: Path) -> np.ndarray:
    images = _load_array(path)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{path}: expected float32 values in [0, 1], got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[0] < 1:
        raise ValueError(f"{path}: expected shape (N, 1, F, T) with N >= 1, got {images.shape}")
    finite = np.isfinite(images).reshape(len(images), -1).all(1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{path}: NaN or inf values in {len(bad)} samples (first: index {bad[0]})")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{path}: values must lie in [0, 1], got [{lo:g}, {hi:g}]")
    return images.astype(np.float32, copy=False)


def _load_labels(path: Path, n: int) -> np.ndarray:
    labels = _load_array(path)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: expected int64 class indices, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{path}: expected shape ({n},) (one label per sample of "
                         f"{SAMPLES_FILE}), got {labels.shape}")
    return labels.astype(np.int64, copy=False)


def check_compatible(
    samples: SampleSet,
    class_names: Sequence[str],
    image_size: Sequence[int],
    freqs_hz: np.ndarray | None = None,
    times_s: np.ndarray | None = None,
) -> None:
    """Check generated samples against the real data the classifier was trained on.

    Class names must be the same list in the same order (``ValueError`` naming meta.json) and
    ``(F, T)`` must equal ``image_size`` (naming samples.npy). Different physical axes
    (``freqs_hz`` [Hz], ``times_s`` [s]) only log a warning.
    """
    meta_path = samples.directory / META_FILE
    if samples.class_names != [str(c) for c in class_names]:
        raise ValueError(f"{meta_path}: class_names {samples.class_names} "
                         f"({len(samples.class_names)} classes) differ from the classifier's data "
                         f"classes {list(class_names)} ({len(class_names)} classes)")
    size = tuple(int(s) for s in image_size)
    if tuple(samples.images.shape[2:]) != size:
        raise ValueError(f"{samples.directory / SAMPLES_FILE}: samples are (F, T) = "
                         f"{tuple(samples.images.shape[2:])} but the classifier's data are {size}")
    for key, real in (("freqs_hz", freqs_hz), ("times_s", times_s)):
        given = samples.meta.get(key)
        if given is None or real is None:
            continue
        given = np.asarray(given, dtype=np.float64)
        if given.shape != np.shape(real) or not np.allclose(given, real, rtol=1e-4, atol=1e-6):
            log.warning("%s: %s differ from the real data's axis", meta_path, key)
