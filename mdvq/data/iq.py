"""Raw complex-baseband (I/Q) slow-time radar recordings -> windowed micro-Doppler spectrograms.

Formats read (one recording per file; see docs/data.md):
- `.mat` (MATLAB v5/v7): a named variable, complex `(N,)` or real `(N, 2)` I/Q columns; the
  sample rate / carrier may be stored as variables too (`fs_key`, `fc_key`).
- `.npy`: complex `(N,)` or real `(N, 2)`; `.npz`: the same under a named key, plus optional
  sample-rate / carrier keys.
- `.wav`: stereo, I left and Q right; the sample rate comes from the file header.
- raw interleaved binary (`raw_extensions`, e.g. `.bin`): `I0 Q0 I1 Q1 ...` as `float32` or
  `int16` in the configured byte order.

Processing on the shared spectrogram path (`mdvq.data.spectrogram`): static-clutter removal
over the whole recording (`mdvq.data.clutter.remove_static_clutter`: mean removal and an optional
MTI high-pass, as in the Glasgow reference processing), cutting into fixed-length windows
(`window_s`, `hop_s`), STFT with Doppler in Hz and time in s, then the usual per-example dB /
dynamic-range normalisation to [0,1]. The STFT may be set in physical units (window and hop in
s, Doppler resolution in Hz: `mdvq.data.spectrogram.STFTUnits`), turned into samples at each
recording's rate, so one setting means the same at 1 kHz and at 5 kHz. Positive Doppler means `I + jQ` rotating counter-clockwise
(`exp(+j 2 pi f t)`, an approaching target).

Every window keeps its recording: `sources` are `"<file>#<k>@<start>s"` and the set's `subjects`
are the split groups (the subject id where one is given, else the recording), so the
subject-disjoint split keeps every window of one recording in one split.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mdvq.core.errors import DataError
from mdvq.data.arrays import as_size, resample_axis, stack_examples
from mdvq.data.clutter import remove_static_clutter
from mdvq.data.dataset import SpectrogramSet, load_or_build
from mdvq.data.labels_csv import read_label_rows
from mdvq.data.on_error import check_on_error, load_each
from mdvq.data.spectrogram import STFTConfig, STFTUnits, compute_spectrogram, derived_axes

log = logging.getLogger(__name__)

# Bump when the processing below changes, so cached sets are rebuilt.
PROCESSING_VERSION = 1

RAW_DTYPES = {"float32": "f4", "int16": "i2"}
BYTE_ORDERS = {"little": "<", "big": ">"}


@dataclass
class IQRecording:
    """One complex-baseband slow-time recording.

    samples: complex128 `(N,)`; sample_rate_hz: slow-time sample rate (PRF) [Hz] or None when
    the file does not store it; carrier_hz: carrier frequency [Hz] or None.
    """

    samples: np.ndarray
    sample_rate_hz: float | None = None
    carrier_hz: float | None = None


def as_complex(arr: np.ndarray, path, what: str = "I/Q data") -> np.ndarray:
    """Complex `(N,)` / `(N, 1)`, or real `(N, 2)` / `(2, N)` I/Q columns -> complex128 `(N,)`.

    Raises DataError naming `path` for another shape ("odd column count") or a non-numeric type.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiuc":
        raise DataError(path, f"{what} must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "c":
        if arr.ndim == 1 or (arr.ndim == 2 and 1 in arr.shape):
            return arr.reshape(-1).astype(np.complex128)
        raise DataError(path, f"complex {what} must be a vector (N,), got shape {arr.shape}")
    if arr.ndim == 2 and arr.shape[1] == 2:
        return arr[:, 0].astype(np.float64) + 1j * arr[:, 1].astype(np.float64)
    if arr.ndim == 2 and arr.shape[0] == 2 and arr.shape[1] != 2:
        return arr[0].astype(np.float64) + 1j * arr[1].astype(np.float64)
    cols = arr.shape[1] if arr.ndim == 2 else None
    detail = f"{cols} columns" if cols is not None else f"{arr.ndim} dimension(s)"
    raise DataError(
        path, f"real {what} must have 2 columns (I, Q), got shape {arr.shape} ({detail})"
    )


def _scalar(value, path, key: str) -> float:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "fiu":
        raise DataError(path, f"{key!r} must be a single number, got {arr.dtype} {arr.shape}")
    return float(arr.reshape(-1)[0])


def _pick(arrays: Mapping[str, np.ndarray], key: str | None, path, kind: str) -> np.ndarray:
    """The data variable `key`, or the only non-metadata variable when `key` is None."""
    if key is not None:
        if key not in arrays:
            raise DataError(path, f"missing {kind} {key!r} (found {sorted(arrays)})")
        return arrays[key]
    if len(arrays) != 1:
        raise DataError(
            path, f"{len(arrays)} {kind}s {sorted(arrays)}: set data.variable to the I/Q one"
        )
    return next(iter(arrays.values()))


def _split_meta(arrays: dict, fs_key: str | None, fc_key: str | None, path):
    """Pop the sample-rate / carrier entries out of `arrays` -> (fs or None, fc or None)."""
    fs = _scalar(arrays.pop(fs_key), path, fs_key) if fs_key and fs_key in arrays else None
    fc = _scalar(arrays.pop(fc_key), path, fc_key) if fc_key and fc_key in arrays else None
    return fs, fc


def read_iq(
    path: str | os.PathLike,
    variable: str | None = None,
    fs_key: str | None = "fs",
    fc_key: str | None = "fc",
    raw_dtype: str = "float32",
    byte_order: str = "little",
) -> IQRecording:
    """Read one I/Q recording from `.mat`, `.npy`, `.npz`, stereo `.wav` or raw binary.

    variable: the `.mat` variable / `.npz` key holding the samples (None: the only one besides
      `fs_key`/`fc_key`). fs_key / fc_key: names of the sample rate [Hz] / carrier [Hz] stored
      next to the samples in `.mat`/`.npz` files (read when present). raw_dtype ("float32" |
      "int16") and byte_order ("little" | "big"): layout of raw interleaved `I Q I Q ...` files
      (any suffix not listed above). A `.wav` gives its own sample rate; integer `.wav`/raw
      samples are scaled to [-1, 1) by their type's full scale (scale does not matter after the
      per-example normalisation).

    Returns an `IQRecording`; raises DataError naming the file for an unreadable file, a missing
    variable, a wrong shape or column count, an empty recording or NaN/inf samples.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "recording not found")
    suffix = path.suffix.lower()
    check_content(path, suffix)
    fs = fc = None
    if suffix == ".mat":
        arrays = _read_mat(path)
        fs, fc = _split_meta(arrays, fs_key, fc_key, path)
        data = _pick(arrays, variable, path, "variable")
    elif suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise DataError(path, f"unreadable .npz ({err})") from err
        fs, fc = _split_meta(arrays, fs_key, fc_key, path)
        data = _pick(arrays, variable, path, "key")
    elif suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(path, f"unreadable .npy ({err})") from err
    elif suffix == ".wav":
        data, fs = _read_wav(path)
    else:
        data = _read_raw(path, raw_dtype, byte_order)
    samples = as_complex(data, path)
    if samples.size == 0:
        raise DataError(path, "empty recording (0 samples)")
    finite = np.isfinite(samples)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(path, f"{len(bad)} NaN or inf samples (first at sample {int(bad[0])})")
    return IQRecording(samples, fs, fc)


#: what each format's first bytes look like: (kind, test on the first HEAD_BYTES bytes, what the
#: file is in words); the first match names the content
HEAD_BYTES = 1024
SIGNATURES = (
    ("npy", lambda h: h.startswith(b"\x93NUMPY"), "a NumPy .npy array (\\x93NUMPY header)"),
    ("zip", lambda h: h[:4] in (b"PK\x03\x04", b"PK\x05\x06"),
     "a zip archive such as .npz (PK header)"),
    ("mat", lambda h: h.startswith(b"MATLAB"), "a MATLAB .mat file ('MATLAB ... MAT-file' header)"),
    ("hdf5", lambda h: h.startswith(b"\x89HDF\r\n\x1a\n") or h[512:520] == b"\x89HDF\r\n\x1a\n",
     "an HDF5 file (\\x89HDF header; MATLAB v7.3 or .h5)"),
    ("wav", lambda h: h[:4] in (b"RIFF", b"RIFX", b"RF64") and h[8:12] == b"WAVE",
     "a WAV file (RIFF header)"),
)
#: the kinds of content each suffix may hold (raw binary: any content no format claims)
EXPECTED_KINDS = {".npy": ("npy",), ".npz": ("zip",), ".mat": ("mat", "hdf5"), ".wav": ("wav",)}
_PRINTABLE = frozenset(range(32, 127)) | {9, 10, 13}


def sniff(head: bytes) -> tuple[str | None, str]:
    """What the first bytes of a file look like -> (kind, words): kind is one of "npy", "zip",
    "mat", "hdf5", "wav", "text" (at least 95 % printable ASCII), "empty" or None (no
    known signature); words describe it for an error message."""
    if not head:
        return "empty", "empty (0 bytes)"
    for kind, test, words in SIGNATURES:
        if test(head):
            return kind, words
    if sum(b in _PRINTABLE for b in head) >= 0.95 * len(head):
        text = head[:40].decode("ascii", "replace").splitlines()[0] if head.strip() else ""
        return "text", f"text ({text!r}...)" if text else "text (blank)"
    return None, "binary data of no known format"


def check_content(path: Path, suffix: str) -> None:
    """Raise DataError naming `path` when its first bytes do not fit its suffix: a 0-byte file,
    a container of another format (a WAV file named .npy), or text where samples are expected
    (a text file named .bin, which would otherwise be read as raw float samples). Raw binary
    suffixes accept any content no known format claims; `.mat` also unknown binary (MATLAB v4
    files have no header)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as err:
        raise DataError(path, f"unreadable file ({err})") from err
    kind, words = sniff(head)
    if kind == "empty":
        raise DataError(path, "empty file (0 bytes)")
    expected = EXPECTED_KINDS.get(suffix)
    if expected is None:  # raw interleaved binary
        if kind is None:
            return
        raise DataError(path, f"named {suffix or 'without a suffix'} (read as raw interleaved "
                              f"I/Q samples) but its content is {words}")
    if kind in expected or kind is None:  # unknown binary: the format's reader says what is wrong
        return
    raise DataError(path, f"named {suffix} but its content is {words}")


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path, squeeze_me=False)
    except NotImplementedError as err:  # v7.3 = HDF5
        raise DataError(path, f"MATLAB v7.3 (HDF5) files are not supported; save with "
                              f"save(..., '-v7') ({err})") from err
    except (OSError, ValueError, TypeError, MatReadError) as err:
        raise DataError(path, f"unreadable .mat file ({err})") from err
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def _int_scale(data: np.ndarray) -> np.ndarray:
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        offset = (int(info.max) + 1) // 2 if data.dtype.kind == "u" else 0  # 8-bit WAV: unsigned
        return (data.astype(np.float64) - offset) / (int(info.max) + 1 - offset)
    return data.astype(np.float64)


def _read_wav(path: Path) -> tuple[np.ndarray, float]:
    from scipy.io import wavfile

    try:
        rate, data = wavfile.read(path)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(path, f"unreadable .wav file ({err})") from err
    if data.ndim != 2 or data.shape[1] != 2:
        channels = 1 if data.ndim == 1 else data.shape[1]
        raise DataError(path, f".wav must be stereo (I left, Q right), got {channels} channel(s)")
    return _int_scale(data), float(rate)


def _read_raw(path: Path, raw_dtype: str, byte_order: str) -> np.ndarray:
    dtype = np.dtype(BYTE_ORDERS[byte_order] + RAW_DTYPES[raw_dtype])
    size = path.stat().st_size
    if size % (2 * dtype.itemsize):
        raise DataError(
            path, f"{size} bytes is not a whole number of {raw_dtype} I/Q pairs "
            f"({2 * dtype.itemsize} bytes each): wrong data.raw_dtype or truncated file?"
        )
    flat = np.fromfile(path, dtype=dtype)
    return _int_scale(flat.astype(flat.dtype.newbyteorder("="))).reshape(-1, 2)


RESAMPLE_KEY = "data.datamodule.source.resample_hz"


def resample_iq(samples: np.ndarray, rate_hz: float, target_hz: float,
                origin: str | os.PathLike | None = None) -> np.ndarray:
    """Resample complex `samples` from `rate_hz` to `target_hz` [Hz] (polyphase,
    `scipy.signal.resample_poly`, with its anti-aliasing filter when the rate drops).

    The ratio is taken as up/down with both at most 1000; the mean is removed before filtering
    and added back, so a static-clutter offset does not ring at the ends. Raises DataError naming
    `origin` when no such ratio gives `target_hz` to 1e-6 relative.
    """
    from scipy.signal import resample_poly

    ratio = Fraction(float(target_hz) / float(rate_hz)).limit_denominator(1000)
    if ratio.numerator == 0 or ratio.numerator > 1000 or (
            abs(float(ratio) * rate_hz - target_hz) > 1e-6 * target_hz):
        raise DataError(origin, f"cannot resample {rate_hz:g} Hz to {RESAMPLE_KEY}={target_hz:g} "
                                f"Hz by a ratio up/down of integers <= 1000")
    mean = samples.mean()
    return resample_poly(samples - mean, ratio.numerator, ratio.denominator) + mean


def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Start indices of the full windows of `window` samples every `hop` samples in `n_samples`."""
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, hop, dtype=np.int64)


def iq_spectrograms(
    samples: np.ndarray,
    sample_rate_hz: float,
    window_s: float,
    hop_s: float,
    stft: STFTConfig,
    mean_removal: bool = True,
    mti_order: int = 0,
    mti_cutoff: float = 0.0075,
    origin: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clutter removal over the recording, then one spectrogram per window.

    samples: complex `(N,)` at `sample_rate_hz` [Hz]. window_s / hop_s: example length and
    step [s]. Returns `(images float32 (W, F, T) in [0,1], freqs_hz (F,), times_s (T,) from the
    window start, starts_s (W,))`. Raises DataError naming `origin` when the recording is
    shorter than one window or a window is shorter than one STFT segment.
    """
    fs = float(sample_rate_hz)
    window = round(window_s * fs)
    hop = max(round(hop_s * fs), 1)
    if window < stft.nperseg:
        raise DataError(
            origin, f"data.window_s={window_s} s is {window} samples at {fs:g} Hz, fewer than "
            f"one STFT window ({stft.nperseg} samples: data.stft_window_s, or data.nperseg)"
        )
    n = len(samples)
    starts = window_starts(n, window, hop)
    if len(starts) == 0:
        raise DataError(
            origin, f"recording too short: {n} samples ({n / fs:.3g} s at {fs:g} Hz) is shorter "
            f"than one window (data.window_s={window_s} s = {window} samples)"
        )
    clean = remove_static_clutter(samples, mean_removal, mti_order, mti_cutoff, axis=-1)
    segments = np.stack([clean[s : s + window] for s in starts])
    images, freqs, times = compute_spectrogram(segments, fs, stft)
    return images, freqs, times, starts / fs


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


class IQSource:
    """Raw I/Q recordings under `root` as a labelled, windowed `SpectrogramSet`.

    root: a folder searched recursively (hidden files skipped) for recordings with one of
      `extensions`, or a single recording file.
    extensions: suffixes read; `.mat .npy .npz .wav` by format, anything else as raw binary.
    sample_rate_hz: slow-time sample rate (PRF) [Hz]; None takes it from the file (`.wav`
      header, `fs_key` in `.mat`/`.npz`). Given and different from the file's: the config wins,
      with a warning. Missing or non-positive: an error naming the file.
    resample_hz: resample every recording to this slow-time rate [Hz] before the STFT
      (`resample_iq`), or None. None and recordings at different rates (their Doppler axes
      differ): an error naming the rates and one file of each.
    carrier_hz: carrier [Hz] (only recorded in `meta`, for velocity axes), or None.
    variable, fs_key, fc_key, raw_dtype, byte_order: see `read_iq`.
    labels_csv: CSV with columns `file,label[,subject]` (`file` relative to root or a bare
      name). name_pattern: a regular expression searched in each file's path relative to root,
      with named groups `label` and/or `subject` (e.g. `(?P<subject>P\\d+)_(?P<label>[a-z]+)`).
      Labels come from the CSV when given, else from the pattern's `label` group, else from the
      file's class folder (`root/<class>/file`). Subjects come from the CSV or the pattern's
      `subject` group; the split groups every example by subject when known, else by recording.
    class_names: class names in label order (default: the sorted labels found).
    window_s, hop_s: example length and step [s] (windows overlap when hop < window).
    mean_removal, mti_order, mti_cutoff: `remove_static_clutter` (mti_order 0: no MTI; the
      Glasgow reference uses order 4, cutoff 0.0075 of the Nyquist frequency).
    stft: an `STFTConfig` or a dict of its fields (nperseg, noverlap, nfft in samples; each may
      be None where the physical-unit key of the same quantity is given).
    stft_window_s, stft_hop_s: STFT window and hop [s]; doppler_resolution_hz: the Doppler bin
      wanted [Hz] (nfft = next power of two >= fs / resolution, at least the window): turned
      into samples at each recording's rate (`STFTUnits`); None uses the sample key. Giving
      both for one quantity is a ValueError naming both keys.
    image_size: `(F, T)` to resize every example to, or None (all must share one size).
    cache_dir: folder for the processed set (`load_or_build`), or None.
    on_error: "raise" or "skip" (skip logs each bad file and the count in `meta`).

    `load()` -> images float32 `(N, 1, F, T)` in [0,1]; `freqs_hz` [Hz], `times_s` [s from the
    window start] when all recordings share one sample rate; `subjects` as above.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        sample_rate_hz: float | None = None,
        carrier_hz: float | None = None,
        extensions: Sequence[str] = (".mat", ".npy", ".npz", ".wav", ".bin"),
        variable: str | None = None,
        fs_key: str | None = "fs",
        fc_key: str | None = "fc",
        raw_dtype: str = "float32",
        byte_order: str = "little",
        labels_csv: str | os.PathLike | None = None,
        name_pattern: str | None = None,
        class_names: Sequence[str] | None = None,
        window_s: float = 2.0,
        hop_s: float = 1.0,
        mean_removal: bool = True,
        mti_order: int = 0,
        mti_cutoff: float = 0.0075,
        stft: Mapping | STFTConfig | None = None,
        image_size: tuple[int, int] | None = None,
        cache_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
        resample_hz: float | None = None,
        stft_window_s: float | None = None,
        stft_hop_s: float | None = None,
        doppler_resolution_hz: float | None = None,
    ):
        self.root = Path(root)
        if sample_rate_hz is not None and not float(sample_rate_hz) > 0:
            raise ValueError(f"data.sample_rate_hz must be positive [Hz], got {sample_rate_hz}")
        self.sample_rate_hz = None if sample_rate_hz is None else float(sample_rate_hz)
        if resample_hz is not None and not float(resample_hz) > 0:
            raise ValueError(f"{RESAMPLE_KEY} must be positive [Hz] or null, got {resample_hz}")
        self.resample_hz = None if resample_hz is None else float(resample_hz)
        self.carrier_hz = None if carrier_hz is None else float(carrier_hz)
        self.extensions = tuple(
            e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions
        )
        if raw_dtype not in RAW_DTYPES:
            raise ValueError(f"data.raw_dtype must be one of {sorted(RAW_DTYPES)}, got {raw_dtype!r}")
        if byte_order not in BYTE_ORDERS:
            raise ValueError(
                f"data.byte_order must be one of {sorted(BYTE_ORDERS)}, got {byte_order!r}"
            )
        self.variable, self.fs_key, self.fc_key = variable, fs_key, fc_key
        self.raw_dtype, self.byte_order = raw_dtype, byte_order
        self.labels_csv = None if labels_csv is None else Path(labels_csv)
        try:
            self.name_pattern = None if name_pattern is None else re.compile(name_pattern)
        except re.error as err:
            raise ValueError(f"data.name_pattern {name_pattern!r} is not a regex ({err})") from err
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        if not (window_s and window_s > 0):
            raise ValueError(f"data.window_s must be positive [s], got {window_s}")
        if not (hop_s and hop_s > 0):
            raise ValueError(f"data.hop_s must be positive [s], got {hop_s}")
        self.window_s, self.hop_s = float(window_s), float(hop_s)
        if mti_order < 0:
            raise ValueError(f"data.mti_order must be >= 0, got {mti_order}")
        self.mean_removal, self.mti_order, self.mti_cutoff = bool(mean_removal), int(mti_order), float(mti_cutoff)
        self.stft_units = STFTUnits(stft_window_s, stft_hop_s, doppler_resolution_hz)
        self.stft_settings = dataclasses.asdict(stft) if isinstance(stft, STFTConfig) else {
            k: v for k, v in dict(stft or {}).items()}
        self.stft_units.check(self.stft_settings)
        known = self.resample_hz or self.sample_rate_hz
        # in samples: the STFT of every recording; in physical units: the one at the configured
        # rate (None until a recording's rate is read)
        self.stft = (self.stft_units.at(known, self.stft_settings)
                     if known is not None or not self.stft_units.given() else None)
        self.image_size = as_size(image_size, "image_size")
        self.cache_dir = cache_dir
        self.on_error = check_on_error(on_error)

    def stft_at(self, fs: float) -> STFTConfig:
        """The STFT settings in samples at sample rate `fs` [Hz]."""
        if not self.stft_units.given() and self.stft is not None:
            return self.stft
        return self.stft_units.at(fs, self.stft_settings)

    def derived(self, fs: float) -> dict:
        """The derived axes at `fs` [Hz] (`derived_axes`: resolution_hz, time_step_s,
        window_s, doppler_span_hz and the STFT in samples)."""
        return derived_axes(fs, self.stft_at(fs))

    # -- discovery and labels -----------------------------------------------------------------
    def files(self) -> list[Path]:
        """Every non-hidden recording below root with one of `extensions`, sorted; DataError if none."""
        if self.root.is_file():
            return [self.root]
        if not self.root.is_dir():
            raise DataError(self.root, "recordings folder not found")
        files = [
            p for p in self.root.rglob("*")
            if p.suffix.lower() in self.extensions and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        ]
        if not files:
            raise DataError(self.root, f"no recordings ({' '.join(self.extensions)}) found")
        return sorted(files, key=lambda p: _rel(p, self.root))

    def check_class_folders(self, files: list[Path]) -> None:
        """With labels from class folders (no labels_csv, no `label` group in name_pattern), a
        DataError naming the first non-hidden folder below root that holds no recording: it
        would be a class without examples, silently left out of training."""
        if self.labels_csv is not None or not self.root.is_dir() or (
                self.name_pattern is not None and "label" in self.name_pattern.groupindex):
            return
        holding = {parent for p in files for parent in p.parents}
        for folder in sorted(self.root.rglob("*")):
            rel = folder.relative_to(self.root)
            if folder.is_dir() and folder not in holding and not any(
                    part.startswith(".") for part in rel.parts):
                raise DataError(folder, f"empty class folder: no recordings "
                                        f"({' '.join(self.extensions)}) in it; add them, or "
                                        "remove the folder")

    def _base(self) -> Path:
        return self.root.parent if self.root.is_file() else self.root

    def read_labels_csv(self) -> dict[str, tuple[str, str | None]]:
        """`labels_csv` -> {file key: (label, subject or None)}; DataError naming the CSV."""
        path = self.labels_csv
        if path is None:
            return {}
        table: dict[str, tuple[str, str | None]] = {}
        for where, key, label, subject in read_label_rows(path):
            if not label:
                raise DataError(path, f"{where}: empty label")
            table[key] = (label, subject)
        return table

    def label_of(self, path: Path, table: Mapping) -> tuple[str, str | None]:
        """(label, subject or None) of one recording: CSV, then name pattern, then class folder."""
        rel = _rel(path, self._base())
        entry = table.get(rel) or table.get(path.name)
        match = None
        if self.name_pattern is not None:
            match = self.name_pattern.search(rel)
            if match is None and entry is None:
                raise DataError(path, f"name does not match data.name_pattern "
                                      f"{self.name_pattern.pattern!r}")
        groups = match.groupdict() if match is not None else {}
        subject = groups.get("subject")
        if entry is not None:
            return entry[0], entry[1] or subject
        if table:
            raise DataError(path, f"no entry in labels_csv {self.labels_csv}")
        if groups.get("label"):
            return groups["label"], subject
        parts = Path(rel).parts
        if len(parts) < 2:
            raise DataError(
                path, "no label: the file is not in a class folder (root/<class>/file); give "
                "data.labels_csv or a data.name_pattern with a (?P<label>...) group"
            )
        return parts[-2], subject

    # -- processing ---------------------------------------------------------------------------
    def _rate(self, rec: IQRecording, path: Path) -> float:
        fs = self.sample_rate_hz
        if fs is None:
            fs = rec.sample_rate_hz
        elif rec.sample_rate_hz is not None and not np.isclose(fs, rec.sample_rate_hz):
            log.warning("%s: file sample rate %g Hz differs from data.sample_rate_hz=%g Hz; "
                        "using the config", path, rec.sample_rate_hz, fs)
        if fs is None:
            raise DataError(path, "sample rate missing: the file stores none; set "
                                  "data.sample_rate_hz [Hz]")
        if not (np.isfinite(fs) and fs > 0):
            raise DataError(path, f"sample rate must be positive [Hz], got {fs}")
        return float(fs)

    def _one(self, path: Path, table) -> tuple:
        """One file -> (label, subject, images (W, F, T), freqs, times, starts_s, fs, fc,
        recorded fs): fs is the rate of the spectrograms (`resample_hz` when set) [Hz]."""
        label, subject = self.label_of(path, table)
        rec = read_iq(path, self.variable, self.fs_key, self.fc_key, self.raw_dtype,
                      self.byte_order)
        recorded = fs = self._rate(rec, path)
        samples = rec.samples
        if self.resample_hz is not None and not np.isclose(fs, self.resample_hz):
            samples = resample_iq(samples, fs, self.resample_hz, origin=path)
            fs = self.resample_hz
        images, freqs, times, starts = iq_spectrograms(
            samples, fs, self.window_s, self.hop_s, self.stft_at(fs), self.mean_removal,
            self.mti_order, self.mti_cutoff, origin=path,
        )
        fc = self.carrier_hz if self.carrier_hz is not None else rec.carrier_hz
        return label, subject, images, freqs, times, starts, fs, fc, recorded

    def _check_one_rate(self, loaded: list) -> None:
        """DataError naming root unless every loaded recording has one rate: windows at other
        rates have other Doppler axes (the picture rows would mean different Hz)."""
        examples: dict[float, Path] = {}
        for path, r in loaded:
            examples.setdefault(r[6], path)
        if len(examples) > 1:
            rates = ", ".join(f"{fs:g} Hz (e.g. {_rel(p, self._base())})"
                              for fs, p in sorted(examples.items()))
            raise DataError(
                self.root, f"recordings at {len(examples)} different sample rates, so their "
                f"Doppler axes differ: {rates}; set {RESAMPLE_KEY}=<Hz> to resample every "
                "recording to one rate (or keep one rate's recordings)"
            )

    def params(self, files: list[Path]) -> dict:
        """Everything the processed set depends on (the cache key's input)."""
        def stat(p: Path) -> list:
            st = p.stat()
            return [str(p.resolve()), st.st_size, st.st_mtime_ns]

        return {
            "version": PROCESSING_VERSION,
            "files": [stat(p) for p in files],
            "labels_csv": stat(self.labels_csv) if self.labels_csv and self.labels_csv.is_file()
            else None,
            "name_pattern": None if self.name_pattern is None else self.name_pattern.pattern,
            "class_names": self.class_names,
            "sample_rate_hz": self.sample_rate_hz, "carrier_hz": self.carrier_hz,
            "variable": self.variable, "fs_key": self.fs_key, "fc_key": self.fc_key,
            "raw_dtype": self.raw_dtype, "byte_order": self.byte_order,
            "window_s": self.window_s, "hop_s": self.hop_s, "mean_removal": self.mean_removal,
            "mti_order": self.mti_order, "mti_cutoff": self.mti_cutoff,
            # the STFT in samples where the rate is configured (physical and sample settings
            # that give the same samples give the same key); else the settings as given
            "stft": dataclasses.asdict(self.stft) if self.stft is not None
            else self.stft_settings,
            "image_size": None if self.image_size is None else list(self.image_size),
            "on_error": self.on_error,
            # only when set, so the keys of sets made before the option existed stay the same
            **({"resample_hz": self.resample_hz} if self.resample_hz is not None else {}),
            **({"stft_units": dataclasses.asdict(self.stft_units)} if self.stft is None else {}),
        }

    def load(self) -> SpectrogramSet:
        """Read, label, window and process every recording (or load the cached result)."""
        files = self.files()
        self.check_class_folders(files)
        table = self.read_labels_csv()
        return load_or_build(self.cache_dir, "iq", self.params(files),
                             lambda: self._build(files, table))

    def _build(self, files: list[Path], table) -> SpectrogramSet:
        loaded, skipped = load_each(files, lambda p: self._one(p, table), self.on_error)
        if not loaded:
            raise DataError(self.root, f"no recording could be loaded ({len(skipped)} skipped)")
        self._check_one_rate(loaded)
        found = sorted({r[0] for _, r in loaded})
        names = self.class_names or found
        unknown = [lab for lab in found if lab not in names]
        if unknown:
            path = next(p for p, r in loaded if r[0] == unknown[0])
            raise DataError(path, f"label {unknown[0]!r} is not one of data.class_names {names}")
        images, labels, groups, sources, recordings = [], [], [], [], []
        for path, (label, subject, ims, _, _, starts, *_) in loaded:
            rel = _rel(path, self._base())
            group = subject if subject is not None else rel
            for k, (im, start) in enumerate(zip(ims, starts, strict=True)):
                images.append(im[None])
                labels.append(names.index(label))
                groups.append(group)
                recordings.append(rel)
                sources.append(f"{path}#{k}@{start:.3f}s")
        stacked = stack_examples(images, sources, self.image_size)
        freqs = [r[3] for _, r in loaded]
        times = [r[4] for _, r in loaded]
        same = all(len(f) == len(freqs[0]) and np.allclose(f, freqs[0]) for f in freqs) and all(
            len(t) == len(times[0]) and np.allclose(t, times[0]) for t in times)
        per_class = {c: len({r for r, lab in zip(recordings, labels, strict=True)
                             if names[lab] == c}) for c in names}
        data = SpectrogramSet(
            images=stacked,
            labels=labels,
            class_names=names,
            subjects=groups,
            freqs_hz=resample_axis(freqs[0], stacked.shape[-2]) if same else None,
            times_s=resample_axis(times[0], stacked.shape[-1]) if same else None,
            sources=sources,
            meta={"source": "iq", "root": str(self.root),
                  "sample_rate_hz": sorted({r[6] for _, r in loaded}),
                  "recorded_sample_rate_hz": sorted({r[8] for _, r in loaded}),
                  "carrier_hz": sorted({r[7] for _, r in loaded if r[7] is not None}),
                  "recordings_per_class": per_class,
                  "has_subjects": any(r[1] is not None for _, r in loaded),
                  "n_recordings": len(loaded),
                  "n_skipped": len(skipped), "skipped": [str(e) for e in skipped]},
        )
        log.info("iq: %d windows from %d recordings (%d skipped); recordings per class %s",
                 len(data), len(loaded), len(skipped), per_class)
        return data.validate(self.root)
