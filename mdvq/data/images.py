"""Spectrogram pictures in one folder per class (e.g. published image-only datasets) as a set.

Pictures put positive Doppler at the top; arrays here have rows in ascending Doppler, so every
picture is flipped (`to_image_rows`). Colour-mapped pictures (e.g. MATLAB's `jet`) can be
mapped back to intensity in [0,1] by the nearest colour of the colormap's 256-entry table.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mdvq.core.errors import DataError
from mdvq.data.arrays import as_size, stack_examples
from mdvq.data.dataset import SpectrogramSet
from mdvq.data.on_error import check_on_error, load_each
from mdvq.utils.pixels import to_image_rows

log = logging.getLogger(__name__)


def colormap_table(name: str, n: int = 256) -> np.ndarray:
    """The RGB table of a matplotlib colormap: float `(n, 3)` in [0,1]; entry `i` is intensity
    `i / (n - 1)`.

    Raises ValueError naming `colormap` for an unknown name.
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"colormap {name!r} is not a matplotlib colormap") from None
    return cmap.resampled(n)(np.linspace(0.0, 1.0, n))[:, :3]


class ColormapInverter:
    """Maps colour-mapped RGB pixels back to intensity by the nearest table colour (k-d tree).

    `invert(rgb)` takes `(..., 3)` in [0,1] and returns `(intensity (...) in [0,1], distance
    (...))` where distance is the Euclidean RGB distance to the chosen table entry. Distinct
    colours are looked up once, so large pictures with few colours are fast.
    """

    def __init__(self, name: str, n: int = 256):
        from scipy.spatial import cKDTree

        self.name = name
        self.table = colormap_table(name, n)
        self.tree = cKDTree(self.table)
        self.n = n

    def invert(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(..., 3)` RGB in [0,1] -> (intensity `(...)` float32 in [0,1], distance `(...)`)."""
        # distinct colours via one int64 key per pixel (16 bits per channel): np.unique on
        # rows of floats is ~10x slower
        q = np.round(np.clip(np.asarray(rgb, dtype=np.float64), 0, 1).reshape(-1, 3) * 65535)
        q = q.astype(np.int64)
        _, first, inverse = np.unique(
            (q[:, 0] << 32) | (q[:, 1] << 16) | q[:, 2], return_index=True, return_inverse=True
        )
        dist, idx = self.tree.query(q[first] / 65535.0)
        shape = rgb.shape[:-1]
        inverse = inverse.reshape(-1)
        intensity = (idx[inverse] / (self.n - 1)).astype(np.float32).reshape(shape)
        return intensity, dist[inverse].reshape(shape)


def _pixels(path: Path) -> np.ndarray:
    """Read a picture as float `(H, W)` or `(H, W, 3)` in [0,1]; DataError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                mode = img.mode
            elif mode in ("LA", "PA"):
                img = img.convert("L")
                mode = "L"
            elif mode in ("CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
                img = img.convert("RGB")
                mode = "RGB"
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(path, f"unreadable or corrupt image ({err})") from err
    if mode == "1":
        return arr.astype(np.float64)
    if arr.dtype == np.uint8:
        arr = arr / 255.0
    elif arr.dtype.kind in "ui" and mode.startswith("I"):
        arr = arr / 65535.0  # 16-bit grayscale PNGs open as I;16 or I
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
    else:
        raise DataError(path, f"unsupported image mode {mode!r} (dtype {arr.dtype})")
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # alpha dropped
    if not (np.all(np.isfinite(arr)) and arr.min() >= 0 and arr.max() <= 1):
        raise DataError(path, f"pixel values outside [0,1] for image mode {mode!r}")
    return arr


def cell_centres(lo: float, hi: float, n: int) -> np.ndarray:
    """Centres of `n` equal cells spanning `[lo, hi]`: the axis of `n` pixels covering that range."""
    edges = np.linspace(float(lo), float(hi), int(n) + 1)
    return (edges[:-1] + edges[1:]) / 2


class ImageFolderSource:
    """Spectrogram pictures under `root/<class name>/*.png|jpg` as a labelled `SpectrogramSet`.

    root: a folder with one subfolder per class; class names are the sorted subfolder names
      (hidden folders are ignored).
    channels: 1 for intensity, 3 to keep RGB.
    colormap: with `channels=1`, the matplotlib colormap name the RGB pictures were drawn
      with ("jet", "viridis", ...); pixels are mapped back to intensity by the nearest entry
      of its 256-colour table. None: RGB pictures become intensity by luminance
      (0.299 R + 0.587 G + 0.114 B). Grayscale pictures are read as intensity directly.
    extensions: file suffixes read (case-insensitive).
    image_size: `(F, T)` to resize every picture to, or None (then all must share one size).
    on_error: "raise" or "skip" (skip logs each bad picture and the count).
    colormap_tolerance: with a colormap, the largest mean RGB distance (in [0,1] units) of a
      picture's pixels to the colormap's table; beyond it the picture is rejected as not drawn
      with that colormap. None disables the check.

    id_pattern: a regular expression searched in each picture's path below its class folder
      (e.g. `^(?P<recording>[^_]+)_` for `rec03_w12.png`); the `subject` group, else the
      `recording` group, else group 1, else the whole match is the example's split group, so
      windows cut from one recording stay in one split. A picture that does not match is an
      error naming it. None: no ids (the datamodule warns that windows of one recording may
      fall into different splits).
    doppler_hz: `[lo, hi]` Doppler range [Hz] the picture's rows span (bottom to top), or None.
    duration_s: time span [s] of the picture's columns, or None. With them the set carries
      `freqs_hz` / `times_s` (cell centres), so grids and samples show Hz and seconds.

    Rows are flipped so that row 0 is the most negative Doppler (pictures have positive
    Doppler at the top). `load()` -> images float32 `(N, channels, F, T)` in [0,1].
    """

    def __init__(
        self,
        root: str | os.PathLike,
        channels: int = 1,
        colormap: str | None = None,
        extensions: Sequence[str] = (".png", ".jpg", ".jpeg"),
        image_size: tuple[int, int] | None = None,
        on_error: str = "raise",
        colormap_tolerance: float | None = 0.1,
        id_pattern: str | None = None,
        doppler_hz: Sequence[float] | None = None,
        duration_s: float | None = None,
    ):
        self.root = Path(root)
        try:
            self.id_pattern = None if id_pattern is None else re.compile(id_pattern)
        except re.error as err:
            raise ValueError(f"data.id_pattern {id_pattern!r} is not a regex ({err})") from err
        if doppler_hz is not None:
            doppler_hz = tuple(float(v) for v in doppler_hz)
            if len(doppler_hz) != 2 or not doppler_hz[0] < doppler_hz[1]:
                raise ValueError(f"data.doppler_hz must be [lo, hi] with lo < hi [Hz], got "
                                 f"{list(doppler_hz)}")
        self.doppler_hz = doppler_hz
        if duration_s is not None and not float(duration_s) > 0:
            raise ValueError(f"data.duration_s must be positive [s], got {duration_s}")
        self.duration_s = None if duration_s is None else float(duration_s)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if channels == 3 and colormap is not None:
            raise ValueError("colormap applies to channels=1 only (channels=3 keeps RGB)")
        self.channels = channels
        self.colormap = colormap
        self._inverter = None if colormap is None else ColormapInverter(colormap)
        self.extensions = tuple(
            e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions
        )
        if not self.extensions:
            raise ValueError("extensions must not be empty")
        self.image_size = as_size(image_size, "image_size")
        self.on_error = check_on_error(on_error)
        self.colormap_tolerance = colormap_tolerance

    def classes(self) -> list[Path]:
        """Class subfolders sorted by name; DataError if root is missing or has none."""
        if not self.root.is_dir():
            raise DataError(self.root, "image root not found (expected one subfolder per class)")
        folders = sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not folders:
            raise DataError(self.root, "no class subfolders (expected root/<class name>/<images>)")
        return folders

    def files(self, folder: Path) -> list[Path]:
        """The pictures of one class folder, sorted; DataError naming the folder if none."""
        files = sorted(
            p for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in self.extensions and not p.name.startswith(".")
        )
        if not files:
            raise DataError(folder, f"empty class folder: no {'/'.join(self.extensions)} images")
        return files

    def read(self, path: Path) -> np.ndarray:
        """One picture -> float32 `(channels, F, T)` in [0,1], rows in ascending Doppler."""
        px = _pixels(path)
        is_rgb = px.ndim == 3
        if self.channels == 3:
            if not is_rgb:
                raise DataError(path, "grayscale image but channels=3 expects RGB")
            out = np.moveaxis(px, -1, 0)
        elif self._inverter is not None:
            if not is_rgb:
                raise DataError(
                    path,
                    f"grayscale image but colormap={self.colormap!r} expects colour-mapped RGB",
                )
            out, dist = self._inverter.invert(px)
            if self.colormap_tolerance is not None and dist.mean() > self.colormap_tolerance:
                raise DataError(
                    path, f"colours do not fit colormap {self.colormap!r}: mean RGB distance "
                    f"{dist.mean():.3f} > colormap_tolerance {self.colormap_tolerance}"
                )
            out = out[None]
        elif is_rgb:
            out = (px @ np.array([0.299, 0.587, 0.114]))[None]
        else:
            out = px[None]
        return to_image_rows(np.clip(out, 0.0, 1.0).astype(np.float32))

    def group_of(self, path: Path) -> str:
        """The split group (recording/subject id) of a picture from `id_pattern`; DataError if none.

        Ids are prefixed with the class folder, so equal names in two classes stay apart.
        """
        rel = path.relative_to(self.root)
        match = self.id_pattern.search(Path(*rel.parts[1:]).as_posix())
        if match is None:
            raise DataError(path, f"name does not match data.id_pattern {self.id_pattern.pattern!r}")
        named = match.groupdict()
        value = named.get("subject") or named.get("recording")
        if value is None:
            value = match.group(1) if match.re.groups else match.group(0)
        if not value:
            raise DataError(path, f"data.id_pattern {self.id_pattern.pattern!r} matched an empty id")
        return f"{rel.parts[0]}/{value}"

    def load(self) -> SpectrogramSet:
        """Read every picture of every class folder; see the class docstring."""
        folders = self.classes()
        items = [(label, p) for label, folder in enumerate(folders) for p in self.files(folder)]
        def read_one(item) -> np.ndarray:
            if self.id_pattern is not None:
                self.group_of(item[1])  # a name without an id is a bad file (skippable)
            return self.read(item[1])

        loaded, skipped = load_each(items, read_one, self.on_error)
        if not loaded:
            raise DataError(self.root, f"no image could be loaded ({len(skipped)} skipped)")
        sources = [str(p) for (_, p), _ in loaded]
        images = stack_examples([x for _, x in loaded], sources, self.image_size)
        f_rows, t_cols = images.shape[-2:]
        data = SpectrogramSet(
            images=images,
            labels=[label for (label, _), _ in loaded],
            class_names=[f.name for f in folders],
            subjects=None if self.id_pattern is None else [
                self.group_of(p) for (_, p), _ in loaded],
            freqs_hz=None if self.doppler_hz is None else cell_centres(*self.doppler_hz, f_rows),
            times_s=None if self.duration_s is None else cell_centres(0.0, self.duration_s, t_cols),
            sources=sources,
            meta={"source": "image_folder", "root": str(self.root), "colormap": self.colormap,
                  "channels": self.channels, "has_ids": self.id_pattern is not None, "n_skipped": len(skipped),
                  "skipped": [str(e) for e in skipped]},
        )
        return data.validate(self.root)
