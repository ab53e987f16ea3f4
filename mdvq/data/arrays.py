"""Ready-made spectrogram arrays (`.npz`, or `.npy` plus a labels `.npy`) as a `SpectrogramSet`.

Also holds the small helpers every recorded-data reader shares: per-example resizing and
stacking to `(N, C, F, T)` (`stack_examples`), resampling a physical axis to a new length
(`resample_axis`), and tuple arguments given as YAML lists (`as_size`).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mdvq.core.errors import DataError
from mdvq.data.dataset import SpectrogramSet
from mdvq.data.on_error import check_on_error, load_each
from mdvq.data.spectrogram import magnitude_to_unit, resize_spectrogram

log = logging.getLogger(__name__)

SCALES = ("unit", "db", "magnitude")


def as_size(value, name: str) -> tuple[int, int] | None:
    """`None` or a pair of positive ints (YAML lists too) -> tuple; ValueError naming `name`."""
    if value is None:
        return None
    try:
        size = tuple(int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair of ints (F, T) or null, got {value!r}") from err
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{name} must be a pair of positive ints (F, T) or null, got {value!r}")
    return size


def resample_axis(axis: np.ndarray | None, n: int) -> np.ndarray | None:
    """The physical axis (`(F,)` Hz or `(T,)` s) of an image resized from `len(axis)` to `n` pixels.

    Matches `resize_spectrogram` (pixel-centre sampling, `align_corners=False`): new pixel `i`
    sits at old coordinate `(i + 0.5) * len(axis) / n - 0.5`, linearly interpolated (and
    extrapolated) on the old axis; for an evenly spaced axis these are the centres of `n` equal
    cells spanning the old cells' extent. Returns the axis unchanged when the length already is
    `n`, and None for a missing or empty axis. The one axis resampler of `mdvq.data` (the
    datamodule uses it too).
    """
    if axis is None or len(axis) == 0:
        return None
    axis = np.asarray(axis, dtype=np.float64)
    m = len(axis)
    if m == n:
        return axis
    if m == 1:
        return np.full(n, axis[0])
    pos = (np.arange(n) + 0.5) * m / n - 0.5
    step = np.diff(axis)
    idx = np.clip(np.floor(pos).astype(int), 0, m - 2)
    return axis[idx] + (pos - idx) * step[idx]


def stack_examples(
    images: Sequence[np.ndarray],
    sources: Sequence[str],
    image_size: tuple[int, int] | None,
) -> np.ndarray:
    """Stack per-example `(C, F, T)` arrays in [0,1] into float32 `(N, C, F, T)`.

    With `image_size=(F, T)` every example is resized with `resize_spectrogram`; with None all
    examples must already share one shape, else a DataError names the first odd file
    (`sources[i]`) and the shape it differs from.
    """
    if not images:
        raise ValueError("no examples to stack")
    if image_size is not None:
        _warn_odd_aspect(images, sources)
        return np.stack([resize_spectrogram(im, image_size) for im in images]).astype(np.float32)
    first = images[0].shape
    for im, src in zip(images, sources, strict=True):
        if im.shape != first:
            raise DataError(
                src,
                f"spectrogram shape (C, F, T) {im.shape} differs from {first} of {sources[0]}; "
                "set image_size=(F, T) to resize every example to one size",
            )
    return np.stack(images).astype(np.float32)


def _warn_odd_aspect(images: Sequence[np.ndarray], sources: Sequence[str]) -> None:
    """Log a warning when examples differ in aspect ratio F/T (by > 1 %): resizing all to one
    `image_size` then stretches them differently (a time or Doppler axis squeezed in some)."""
    ratios = np.array([im.shape[-2] / im.shape[-1] for im in images])
    common = np.median(ratios)
    odd = np.flatnonzero(np.abs(ratios / common - 1) > 0.01)
    if len(odd):
        i = odd[0]
        log.warning("%d of %d examples have another aspect ratio (F/T) than the common %.3f, "
                    "e.g. %s of shape %s: resized to image_size they are stretched differently",
                    len(odd), len(images), common, sources[i], tuple(images[i].shape[-2:]))


def db_to_unit(db: np.ndarray, dynamic_range_db: float) -> np.ndarray:
    """dB values -> [0,1]: `clip((dB - max(dB) + D) / D, 0, 1)` per array over the last two axes."""
    db = np.asarray(db, dtype=np.float64)
    peak = db.max(axis=(-2, -1), keepdims=True)
    return np.clip((db - peak + dynamic_range_db) / dynamic_range_db, 0.0, 1.0).astype(np.float32)


class ArraySource:
    """Spectrograms already computed elsewhere, stored as numpy arrays.

    path: a `.npz` with `images` `(N, F, T)` or `(N, C, F, T)`, `labels` `(N,)` (ints, or class
      names as strings) and optionally `subjects` `(N,)`, `class_names` `(K,)`, `freqs_hz`
      `(F,)` [Hz], `times_s` `(T,)` [s]; or a `.npy` of images with `labels_path` a `.npy` of
      labels.
    labels_path: the labels `.npy` when `path` is a `.npy` (an error with a `.npz`).
    class_names: class names in label order; overrides the file's `class_names`. Default: the
      file's, else the sorted string labels, else "0".."K-1".
    scale: how the values are read. "unit": already in [0,1] (rows in ascending Doppler), a
      value outside [0,1] is an error; "db": dB values, normalised per example (and channel)
      to its peak over `dynamic_range_db`; "magnitude": linear magnitudes (>= 0), converted
      with `magnitude_to_unit` over `dynamic_range_db`.
    dynamic_range_db: the range kept below each example's peak for "db"/"magnitude" [dB].
    image_size: `(F, T)` to resize every example to, or None to keep the stored size.
    on_error: "raise" or "skip"; "skip" drops examples with NaN/inf, out-of-range values or an
      unknown label (logging each and the count); file-level problems always raise.
    subjects_key: the `.npz` key of the per-example recording/subject ids `(N,)` that keep
      windows of one recording in one split ("subjects"; e.g. "recordings"); a named key that
      is missing is an error. Without ids the datamodule warns that windows of one recording
      may fall into different splits.

    `load()` returns a `SpectrogramSet` with images float32 `(N, C, F, T)` in [0,1].
    """

    def __init__(
        self,
        path: str | os.PathLike,
        labels_path: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        image_size: tuple[int, int] | None = None,
        on_error: str = "raise",
        scale: str = "unit",
        dynamic_range_db: float = 60.0,
        subjects_key: str = "subjects",
    ):
        self.path = Path(path)
        self.subjects_key = str(subjects_key)
        self.labels_path = None if labels_path is None else Path(labels_path)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.image_size = as_size(image_size, "image_size")
        self.on_error = check_on_error(on_error)
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        self.scale = scale
        if dynamic_range_db <= 0:
            raise ValueError(f"dynamic_range_db must be positive, got {dynamic_range_db}")
        self.dynamic_range_db = float(dynamic_range_db)

    # -- reading ------------------------------------------------------------------------
    def _read(self) -> dict[str, np.ndarray]:
        if not self.path.is_file():
            raise DataError(self.path, "array file not found")
        suffix = self.path.suffix.lower()
        if suffix == ".npz":
            if self.labels_path is not None:
                raise DataError(
                    self.path, "labels_path is only for .npy images; a .npz holds `labels`"
                )
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
                raise DataError(self.path, f"unreadable .npz ({err})") from err
            for key in ("images", "labels"):
                if key not in arrays:
                    raise DataError(self.path, f"missing key {key!r} (found {sorted(arrays)})")
            return arrays
        if suffix == ".npy":
            if self.labels_path is None:
                raise DataError(self.path, ".npy images need labels_path (a .npy of labels)")
            return {"images": _load_npy(self.path), "labels": _load_npy(self.labels_path)}
        raise DataError(self.path, f"expected a .npz or .npy file, got {suffix or 'no suffix'!r}")

    def _labels(self, raw: np.ndarray, file_names: np.ndarray | None, origin: Path):
        """Raw labels -> (int labels with -1 for unknown, class names)."""
        names = self.class_names
        if names is None and file_names is not None:
            names = [str(c) for c in np.asarray(file_names).reshape(-1)]
        if raw.dtype.kind in "US":
            raw = raw.astype(str)
            if names is None:
                names = sorted(set(raw.tolist()))
            index = {c: i for i, c in enumerate(names)}
            return np.array([index.get(s, -1) for s in raw], dtype=np.int64), names
        if raw.dtype.kind == "f" and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)):
            raw = raw.astype(np.int64)
        if raw.dtype.kind not in "iu":
            raise DataError(
                origin, f"labels must be integers or class-name strings, got dtype {raw.dtype}"
            )
        raw = raw.astype(np.int64)
        if names is None:
            names = [str(i) for i in range(int(raw.max()) + 1 if raw.size else 0)]
        raw = np.where((raw >= 0) & (raw < len(names)), raw, -1)
        return raw, names

    def load(self) -> SpectrogramSet:
        """Read, check, scale and (optionally) resize the arrays; see the class docstring."""
        arrays = self._read()
        images = np.asarray(arrays["images"])
        labels_origin = self.labels_path or self.path
        raw_labels = np.asarray(arrays["labels"])
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4:
            raise DataError(
                self.path, f"expected images of shape (N, F, T) or (N, C, F, T), got {images.shape}"
            )
        if images.dtype.kind not in "fiu":
            raise DataError(self.path, f"images must be numeric, got dtype {images.dtype}")
        n = images.shape[0]
        if raw_labels.ndim != 1:
            raise DataError(
                labels_origin, f"expected labels of shape (N,) = ({n},), got {raw_labels.shape}"
            )
        if len(raw_labels) != n:
            raise DataError(labels_origin, f"{len(raw_labels)} labels for {n} images")
        labels, class_names = self._labels(raw_labels, arrays.get("class_names"), labels_origin)
        if self.subjects_key != "subjects" and self.subjects_key not in arrays:
            raise DataError(self.path, f"missing ids key {self.subjects_key!r} "
                                       f"(data.subjects_key; found {sorted(arrays)})")
        subjects = arrays.get(self.subjects_key)
        if subjects is not None and (subjects.ndim != 1 or len(subjects) != n):
            raise DataError(
                self.path, f"expected {self.subjects_key} of shape ({n},), got {subjects.shape}"
            )
        axes = {}
        for key, dim in (("freqs_hz", 2), ("times_s", 3)):
            ax = arrays.get(key)
            if ax is not None and (ax.ndim != 1 or len(ax) != images.shape[dim]):
                raise DataError(
                    self.path, f"expected {key} of shape ({images.shape[dim]},), got {ax.shape}"
                )
            axes[key] = ax

        def convert(i: int) -> np.ndarray:
            x = images[i].astype(np.float64)
            where = f"{self.path.name} example {i}"
            if not np.all(np.isfinite(x)):
                raise DataError(self.path, f"NaN or inf values in example {i}")
            if labels[i] < 0:
                raise DataError(
                    labels_origin,
                    f"label {raw_labels[i].item()!r} of example {i} is not one of {class_names}",
                )
            if self.scale == "unit":
                if x.min() < 0 or x.max() > 1:
                    raise DataError(
                        self.path,
                        f"values of example {i} span [{x.min():.4g}, {x.max():.4g}], outside [0,1] "
                        "for scale='unit' (use scale='db' or 'magnitude')",
                    )
                return x.astype(np.float32)
            if self.scale == "db":
                return db_to_unit(x, self.dynamic_range_db)
            if x.min() < 0:
                raise DataError(self.path, f"negative magnitude in {where} for scale='magnitude'")
            return magnitude_to_unit(x, self.dynamic_range_db)

        loaded, skipped = load_each(range(n), convert, self.on_error)
        if not loaded:
            raise DataError(self.path, f"no usable examples ({len(skipped)} skipped)")
        keep = np.array([i for i, _ in loaded])
        src = np.array([f"{self.path}:{i}" for i in keep])
        stacked = stack_examples([x for _, x in loaded], list(src), self.image_size)
        f_new, t_new = stacked.shape[-2:]
        data = SpectrogramSet(
            images=stacked,
            labels=labels[keep],
            class_names=class_names,
            subjects=None if subjects is None else np.asarray(subjects)[keep],
            freqs_hz=resample_axis(axes["freqs_hz"], f_new),
            times_s=resample_axis(axes["times_s"], t_new),
            sources=src,
            meta={"source": "arrays", "path": str(self.path), "scale": self.scale,
                  "n_skipped": len(skipped), "skipped": [str(e) for e in skipped]},
        )
        return data.validate(self.path)


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "array file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(path, f"unreadable .npy ({err})") from err
