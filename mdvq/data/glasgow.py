"""Raw FMCW recordings in the University of Glasgow layout -> micro-Doppler spectrograms.

The "Radar signatures of human activities" set (Fioranelli et al., 2019, CC BY 4.0) stores
each recording as an ASCII `.dat` file, one number per line: carrier [Hz], sweep time [ms],
samples per sweep, bandwidth [Hz], then the complex samples written like `-12.5+3.25i`. The
processing follows the group's MATLAB example (docs/data.md): range FFT, MTI high-pass,
STFT of each range bin in a band, magnitudes summed, Doppler axis flipped so that approaching
targets are positive.

File names are `KPxxAyyRz.dat` (e.g. `1P36A01R01.dat`): `K` is the activity digit (the dataset's
Readme; in the corpus it repeats `yy`), `xx` the participant (numbers restart per campaign
folder), `yy` the activity code, `z` the repetition. Separators (`_`, spaces) and lower case
occur in the corpus and are accepted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdvq.core.errors import DataError
from mdvq.data.arrays import as_size, resample_axis, stack_examples
from mdvq.data.clutter import mti_filter
from mdvq.data.dataset import SpectrogramSet, load_or_build
from mdvq.data.labels_csv import read_label_rows
from mdvq.data.on_error import check_on_error, load_each
from mdvq.data.spectrogram import SPEED_OF_LIGHT, STFTConfig, compute_spectrogram

log = logging.getLogger(__name__)

GLASGOW_ACTIVITIES = {
    1: "walking",
    2: "sitting_down",
    3: "standing_up",
    4: "picking_up",
    5: "drinking",
    6: "falling",
}
"""Activity codes of the dataset's documentation (one of its label scripts swaps 4 and 5)."""

GLASGOW_STFT = STFTConfig(
    window="hamming", nperseg=200, noverlap=190, nfft=800, dynamic_range_db=40.0
)
"""The reference STFT: Hamming window of 200 sweeps, overlap 190, 800-point FFT, 40 dB shown."""

HEADER_FIELDS = ("carrier [Hz]", "sweep time [ms]", "samples per sweep", "bandwidth [Hz]")

# Bump when the processing below changes, so cached sets are rebuilt.
PROCESSING_VERSION = 1

_NAME_RE = re.compile(
    r"^(?P<k>\d*)[\s_]*P[\s_]*(?P<participant>\d+)[\s_]*A[\s_]*(?P<activity>\d+)"
    r"[\s_]*R[\s_]*(?P<repetition>\d+)\.dat$",
    re.IGNORECASE,
)


@dataclass
class GlasgowRecording:
    """One raw recording.

    carrier_hz: carrier frequency [Hz]; sweep_time_s: chirp duration [s] (the header's value
    is in ms); samples_per_sweep: fast-time samples per chirp (NTS); bandwidth_hz: swept
    bandwidth [Hz]; data: complex128 `(samples_per_sweep, n_sweeps)`, fast time down the rows.
    """

    carrier_hz: float
    sweep_time_s: float
    samples_per_sweep: int
    bandwidth_hz: float
    data: np.ndarray

    @property
    def n_sweeps(self) -> int:
        """Number of chirps (slow-time samples)."""
        return int(self.data.shape[1])

    @property
    def prf_hz(self) -> float:
        """Chirp repetition frequency [Hz] = 1 / sweep time."""
        return 1.0 / self.sweep_time_s

    @property
    def duration_s(self) -> float:
        """Recording length [s]."""
        return self.n_sweeps * self.sweep_time_s


def _line_of_token(text: str, index: int) -> int:
    """1-based line number of the `index`-th whitespace-separated token of `text`."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        count = len(line.split())
        if seen + count > index:
            return number
        seen += count
    return number if text else 1


def _matlab_to_python(text: str) -> str:
    """MATLAB's imaginary unit `i` -> Python's `j` (`Inf`/`inf` and `NaN` survive)."""
    return text.replace("i", "j").replace("jnf", "inf")


class BadToken(ValueError):
    """A token that is not a number; `index` is its position in the token list."""

    def __init__(self, index: int, token: str):
        self.index = index
        super().__init__(f"token {index} {token[:40]!r} is not a number")


def _complex_array(tokens: list[str]) -> np.ndarray:
    """Python complex literals -> complex128 `(N,)`; BadToken at the first bad one."""
    try:
        return np.fromiter(map(complex, tokens), dtype=np.complex128, count=len(tokens))
    except ValueError:
        for i, t in enumerate(tokens):
            try:
                complex(t)
            except ValueError:
                raise BadToken(i, t) from None
        raise


def parse_complex_tokens(tokens: list[str]) -> np.ndarray:
    """MATLAB-style complex text (`-12.5+3.25i`, `1e-3-2i`, `7`, `NaN+NaNi`) -> complex128 `(N,)`.

    Raises `BadToken` (a ValueError) with the index of the first token that is not a number.
    """
    return _complex_array([_matlab_to_python(t) for t in tokens])


def read_glasgow_dat(path: str | os.PathLike) -> GlasgowRecording:
    """Read a Glasgow `.dat` file: 4 header values, then complex samples, one per line.

    The samples are reshaped like MATLAB's column-major `reshape(Data, [NTS, nc])`, i.e.
    `data.reshape(nc, NTS).T`, so column `m` is sweep `m`. Raises DataError naming the file for
    a truncated header, a non-numeric value (with its line number), a bad header value, a
    sample count that is not a multiple of the samples per sweep, and NaN/inf samples.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as err:
        raise DataError(path, f"cannot read file ({err})") from err
    # One pass over the whole text is ~3x faster than fixing tokens one by one.
    tokens = _matlab_to_python(text).split()
    if len(tokens) < len(HEADER_FIELDS):
        raise DataError(
            path, f"truncated header: {len(tokens)} of {len(HEADER_FIELDS)} values "
            f"({', '.join(HEADER_FIELDS)})"
        )
    header = []
    for i, name in enumerate(HEADER_FIELDS):
        try:
            header.append(float(tokens[i]))
        except ValueError:
            raise DataError(
                path, f"line {_line_of_token(text, i)}: header {name} "
                f"{text.split()[i][:40]!r} is not a number"
            ) from None
    carrier_hz, sweep_ms, nts_f, bandwidth_hz = header
    if not (np.isfinite(carrier_hz) and carrier_hz > 0):
        raise DataError(path, f"header carrier must be positive [Hz], got {carrier_hz}")
    if not (np.isfinite(sweep_ms) and sweep_ms > 0):
        raise DataError(path, f"header sweep time must be positive [ms], got {sweep_ms}")
    if not (np.isfinite(nts_f) and nts_f == int(nts_f) and nts_f >= 2 and int(nts_f) % 2 == 0):
        raise DataError(path, f"header samples per sweep must be an even integer >= 2, got {nts_f}")
    if not (np.isfinite(bandwidth_hz) and bandwidth_hz >= 0):
        raise DataError(path, f"header bandwidth must be >= 0 [Hz], got {bandwidth_hz}")
    nts = int(nts_f)
    body = tokens[len(HEADER_FIELDS):]
    try:
        samples = _complex_array(body)
    except BadToken as err:
        index = err.index + len(HEADER_FIELDS)
        raise DataError(
            path, f"line {_line_of_token(text, index)}: sample {text.split()[index][:40]!r} "
            "is not a number"
        ) from None
    if len(samples) == 0:
        raise DataError(path, "no samples after the header")
    if len(samples) % nts:
        raise DataError(
            path, f"{len(samples)} samples is not a multiple of the {nts} samples per sweep "
            "(truncated file?)"
        )
    finite = np.isfinite(samples)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0]) + len(HEADER_FIELDS)
        raise DataError(
            path,
            f"line {_line_of_token(text, index)}: NaN or inf sample {text.split()[index][:40]!r}",
        )
    data = samples.reshape(-1, nts).T
    return GlasgowRecording(carrier_hz, sweep_ms / 1000.0, nts, bandwidth_hz, data)


def range_profiles(rec: GlasgowRecording) -> np.ndarray:
    """Range FFT along fast time (rectangular window), `fftshift`, positive beat frequencies.

    Returns complex `(NTS/2, n_sweeps)` where row `k` is beat frequency `k / sweep_time` [Hz],
    i.e. range `k * c / (2 * bandwidth)` [m]; row 0 (DC) is the bin the reference drops.
    """
    nts = rec.samples_per_sweep
    return np.fft.fftshift(np.fft.fft(rec.data, axis=0), axes=0)[nts // 2 :]


def glasgow_stft(
    carrier_hz: float, stft: STFTConfig = GLASGOW_STFT, max_velocity_mps: float | None = 6.0
) -> STFTConfig:
    """The STFT config with its Doppler crop set from a velocity: `f = 2 * v * fc / c` [Hz].

    With `max_velocity_mps=None` the config's own `max_doppler_hz` is kept.
    """
    if max_velocity_mps is None:
        return stft
    return dataclasses.replace(
        stft, max_doppler_hz=2.0 * max_velocity_mps * carrier_hz / SPEED_OF_LIGHT
    )


def glasgow_spectrogram(
    rec: GlasgowRecording,
    range_bins: tuple[int, int] = (10, 30),
    mti_order: int = 4,
    mti_cutoff: float = 0.0075,
    stft: STFTConfig = GLASGOW_STFT,
    max_velocity_mps: float | None = 6.0,
    origin: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference micro-Doppler spectrogram of one recording.

    range_bins: inclusive `(first, last)` range-FFT bins `k` (beat frequency `k / sweep_time`,
      range `k * c / (2 * bandwidth)`; the reference's `RBin = 10:30`), 1 <= first <= last <
      NTS/2. mti_order / mti_cutoff: see `mti_filter`. stft: STFT settings (slow time sampled at
      the PRF = 1 / sweep time). max_velocity_mps: Doppler crop as radial velocity [m/s].

    Returns `(image float32 (F, T) in [0,1], freqs_hz (F,), times_s (T,))`, rows in ascending
    Doppler with approaching targets positive (the reference's `flipud`: positive beat
    frequencies carry range, and approach then shows as negative raw Doppler).
    Raises DataError naming `origin` if the band does not fit or the recording is shorter
    than one STFT window.
    """
    lo, hi = (int(v) for v in range_bins)
    half = rec.samples_per_sweep // 2
    if not 1 <= lo <= hi < half:
        raise DataError(
            origin, f"range_bins {range_bins} must satisfy 1 <= first <= last < NTS/2 = {half}"
        )
    cfg = glasgow_stft(rec.carrier_hz, stft, max_velocity_mps)
    if rec.n_sweeps < cfg.nperseg:
        raise DataError(
            origin, f"{rec.n_sweeps} sweeps ({rec.duration_s:.3g} s), fewer than one STFT window "
            f"(nperseg={cfg.nperseg})"
        )
    profiles = range_profiles(rec)[lo : hi + 1]
    profiles = mti_filter(profiles, mti_order, mti_cutoff)
    image, freqs, times = compute_spectrogram(profiles, rec.prf_hz, cfg, sum_axes=(0,))
    return image[::-1].copy(), -freqs[::-1], times


@dataclass(frozen=True)
class GlasgowName:
    """Fields of a `KPxxAyyRz.dat` name: activity digit K (None if absent), participant id
    ("P36"), activity code yy, repetition z."""

    k: int | None
    participant: str
    activity: int
    repetition: int


def parse_glasgow_name(name: str) -> GlasgowName | None:
    """Parse a name like `1P36A01R01.dat`, `2p05a02r1.dat`, `1_P36_A01_R1.dat`; None if no match."""
    m = _NAME_RE.match(name)
    if m is None:
        return None
    return GlasgowName(
        k=int(m["k"]) if m["k"] else None,
        participant=f"P{int(m['participant']):02d}",
        activity=int(m["activity"]),
        repetition=int(m["repetition"]),
    )


class GlasgowSource:
    """The Glasgow raw `.dat` recordings under `root` as a labelled `SpectrogramSet`.

    root: the dataset folder; every `*.dat` below it is read (hidden files skipped). Its
      first-level subfolders are the campaigns ("1 December 2017 Dataset", ...).
    activity_names: activity code -> class name; class index = position in sorted codes.
    labels_csv: optional CSV with columns `file,label[,subject]`; `file` is the path relative
      to root (or a bare file name), `label` an activity code or class name, `subject` an id
      used verbatim. Its entries override the file names; files it lacks use their names.
    activity_field: "A" takes the activity from `Ayy` (docs/data.md), "K" from the leading digit
      (the dataset Readme); a disagreement is logged.
    range_bins, mti_order, mti_cutoff, max_velocity_mps: see `glasgow_spectrogram`.
    stft: an `STFTConfig` or a dict of fields overriding `GLASGOW_STFT`.
    image_size: `(F, T)` to resize every spectrogram to (recordings differ in length), or
      None (then all must share one size).
    cache_dir: folder for the processed set (`load_or_build`), or None.
    on_error: "raise" or "skip" (skip logs each bad file and the count).
    num_workers: processes reading files in parallel (0: all in this process; a 10 s file
      takes about 1 s on one core). The result does not depend on it.

    Subject ids are "<campaign folder>/<participant>", e.g. "2 March 2017 Dataset/P36" (files
    directly in root use root's name as campaign). `load()` -> images float32 `(N, 1, F, T)`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        activity_names: Mapping[int, str] | None = None,
        labels_csv: str | os.PathLike | None = None,
        range_bins: tuple[int, int] = (10, 30),
        mti_order: int = 4,
        mti_cutoff: float = 0.0075,
        stft: Mapping | STFTConfig | None = None,
        max_velocity_mps: float | None = 6.0,
        image_size: tuple[int, int] | None = None,
        cache_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
        activity_field: str = "A",
        num_workers: int = 0,
    ):
        self.root = Path(root)
        names = GLASGOW_ACTIVITIES if activity_names is None else activity_names
        self.activity_names = {int(k): str(v) for k, v in dict(names).items()}
        if not self.activity_names:
            raise ValueError("activity_names must not be empty")
        if len(set(self.activity_names.values())) != len(self.activity_names):
            raise ValueError(f"activity_names has repeated class names: {self.activity_names}")
        self.labels_csv = None if labels_csv is None else Path(labels_csv)
        bins = tuple(int(v) for v in range_bins)
        if len(bins) != 2 or not 1 <= bins[0] <= bins[1]:
            raise ValueError(
                f"range_bins must be (first, last) with 1 <= first <= last, got {range_bins}"
            )
        self.range_bins = bins
        if mti_order < 0:
            raise ValueError(f"mti_order must be >= 0, got {mti_order}")
        if mti_order and not 0 < mti_cutoff < 1:
            raise ValueError(f"mti_cutoff must lie in (0, 1) (relative to PRF/2), got {mti_cutoff}")
        self.mti_order, self.mti_cutoff = int(mti_order), float(mti_cutoff)
        if stft is None:
            self.stft = GLASGOW_STFT
        elif isinstance(stft, STFTConfig):
            self.stft = stft
        else:
            known = {f.name for f in dataclasses.fields(STFTConfig)}
            unknown = sorted(set(map(str, stft)) - known)
            if unknown:
                raise ValueError(f"unknown stft setting(s) {unknown}; known: {sorted(known)}")
            self.stft = dataclasses.replace(GLASGOW_STFT, **{str(k): v for k, v in stft.items()})
        if max_velocity_mps is not None and max_velocity_mps <= 0:
            raise ValueError(f"max_velocity_mps must be positive or null, got {max_velocity_mps}")
        self.max_velocity_mps = None if max_velocity_mps is None else float(max_velocity_mps)
        self.image_size = as_size(image_size, "image_size")
        self.cache_dir = cache_dir
        self.on_error = check_on_error(on_error)
        if activity_field not in ("A", "K"):
            raise ValueError(f"activity_field must be 'A' or 'K', got {activity_field!r}")
        self.activity_field = activity_field
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.num_workers = int(num_workers)
        self.class_names = [self.activity_names[k] for k in sorted(self.activity_names)]

    # -- discovery and labels -----------------------------------------------------------
    def files(self) -> list[Path]:
        """Every non-hidden `*.dat` below root, sorted by relative path; DataError if none."""
        if not self.root.is_dir():
            raise DataError(self.root, "dataset root not found (expected a folder of .dat files)")
        files = [
            p for p in self.root.rglob("*")
            if p.suffix.lower() == ".dat" and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        ]
        if not files:
            raise DataError(self.root, "no .dat files found")
        return sorted(files, key=lambda p: p.relative_to(self.root).as_posix())

    def campaign(self, path: Path) -> str:
        """The campaign folder of a file: its first folder below root (root's name if none)."""
        parts = path.relative_to(self.root).parts
        return parts[0] if len(parts) > 1 else self.root.resolve().name

    def _class_index(self, value: str, origin, what: str) -> int:
        value = value.strip()
        if value in self.class_names:
            return self.class_names.index(value)
        try:
            code = int(value)
        except ValueError:
            raise DataError(
                origin,
                f"{what} {value!r} is neither an activity code {sorted(self.activity_names)} "
                f"nor a class name {self.class_names}",
            ) from None
        if code not in self.activity_names:
            raise DataError(
                origin, f"unknown activity code {code} in {what} (known: {self.activity_names})"
            )
        return self.class_names.index(self.activity_names[code])

    def read_labels_csv(self) -> dict[str, tuple[int, str | None]]:
        """`labels_csv` -> {file key: (class index, subject or None)}; DataError naming the CSV."""
        path = self.labels_csv
        if path is None:
            return {}
        table: dict[str, tuple[int, str | None]] = {}
        for where, key, label, subject in read_label_rows(path):
            table[key] = (self._class_index(label, path, f"{where}: label"), subject)
        return table

    def label_of(self, path: Path, table: Mapping[str, tuple[int, str | None]]) -> tuple[int, str]:
        """(class index, subject id) of one file, from the CSV table or the file name."""
        rel = path.relative_to(self.root).as_posix()
        name = parse_glasgow_name(path.name)
        campaign = self.campaign(path)
        entry = table.get(rel) or table.get(path.name)
        if entry is not None:
            label, subject = entry
            if subject is None:
                subject = f"{campaign}/{name.participant if name else path.stem}"
            return label, subject
        if name is None:
            raise DataError(
                path, "file name does not match <K>P<participant>A<activity>R<repetition>.dat "
                "(e.g. 1P36A01R01.dat) and has no entry in labels_csv"
            )
        code = name.activity
        if name.k is not None and name.k != name.activity:
            code = name.k if self.activity_field == "K" else name.activity
            log.warning(
                "%s: leading activity digit %d differs from activity code A%02d; using %d "
                "(activity_field=%s)", path, name.k, name.activity, code, self.activity_field
            )
        if code not in self.activity_names:
            raise DataError(path, f"unknown activity code {code} (known: {self.activity_names})")
        return self.class_names.index(self.activity_names[code]), f"{campaign}/{name.participant}"

    # -- processing -----------------------------------------------------------------------
    def spectrogram(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """One file -> (image (F, T) in [0,1], freqs_hz, times_s, carrier_hz)."""
        rec = read_glasgow_dat(path)
        image, freqs, times = glasgow_spectrogram(
            rec, self.range_bins, self.mti_order, self.mti_cutoff, self.stft,
            self.max_velocity_mps, origin=path,
        )
        return image, freqs, times, rec.carrier_hz

    def params(self, files: list[Path]) -> dict:
        """Everything the processed set depends on (the cache key's input)."""
        def stat(p: Path) -> list:
            st = p.stat()
            return [p.relative_to(self.root).as_posix(), st.st_size, st.st_mtime_ns]

        csv_stat = None
        if self.labels_csv is not None and self.labels_csv.is_file():
            st = self.labels_csv.stat()
            csv_stat = [str(self.labels_csv.resolve()), st.st_size, st.st_mtime_ns]
        return {
            "version": PROCESSING_VERSION,
            "root": str(self.root.resolve()),
            "files": [stat(p) for p in files],
            "activity_names": {str(k): v for k, v in sorted(self.activity_names.items())},
            "activity_field": self.activity_field,
            "labels_csv": csv_stat,
            "range_bins": list(self.range_bins),
            "mti_order": self.mti_order,
            "mti_cutoff": self.mti_cutoff,
            "stft": dataclasses.asdict(self.stft),
            "max_velocity_mps": self.max_velocity_mps,
            "image_size": None if self.image_size is None else list(self.image_size),
            "on_error": self.on_error,
        }

    def load(self) -> SpectrogramSet:
        """Read, label and process every recording (or load the cached result)."""
        files = self.files()
        table = self.read_labels_csv()
        if table:
            keys = {p.relative_to(self.root).as_posix() for p in files} | {p.name for p in files}
            unused = sorted(set(table) - keys)
            if unused:
                log.warning("%s: %d entries match no .dat file under %s (first: %s)",
                            self.labels_csv, len(unused), self.root, unused[0])
        return load_or_build(self.cache_dir, "glasgow", self.params(files),
                             lambda: self._build(files, table))

    def _one(self, path: Path, table) -> tuple:
        """One file -> (class index, subject, image (F, T), freqs_hz, times_s, carrier_hz)."""
        label, subject = self.label_of(path, table)  # cheap checks before parsing
        return (label, subject, *self.spectrogram(path))

    def _one_or_error(self, path: Path, table) -> tuple:
        """`_one` for a worker process: a DataError comes back as data (it does not pickle)."""
        try:
            return ("ok", self._one(path, table))
        except DataError as err:
            return ("error", err.path, err.problem)

    def _build(self, files: list[Path], table) -> SpectrogramSet:
        if self.num_workers > 0 and len(files) > 1:
            from concurrent.futures import ProcessPoolExecutor
            from functools import partial

            with ProcessPoolExecutor(min(self.num_workers, len(files))) as pool:
                work = partial(self._one_or_error, table=table)
                done = dict(zip(files, pool.map(work, files, chunksize=4), strict=True))

            def one(path: Path) -> tuple:
                status, *rest = done[path]
                if status == "error":
                    raise DataError(*rest)
                return rest[0]
        else:

            def one(path: Path) -> tuple:
                return self._one(path, table)

        loaded, skipped = load_each(files, one, self.on_error)
        if not loaded:
            raise DataError(self.root, f"no recording could be loaded ({len(skipped)} skipped)")
        sources = [str(p) for p, _ in loaded]
        images = stack_examples([r[2][None] for _, r in loaded], sources, self.image_size)
        freqs = [r[3] for _, r in loaded]
        times = [r[4] for _, r in loaded]
        carriers = sorted({r[5] for _, r in loaded})
        same_f = all(len(f) == len(freqs[0]) and np.allclose(f, freqs[0]) for f in freqs)
        same_t = all(len(t) == len(times[0]) and np.allclose(t, times[0]) for t in times)
        data = SpectrogramSet(
            images=images,
            labels=[r[0] for _, r in loaded],
            class_names=self.class_names,
            subjects=[r[1] for _, r in loaded],
            freqs_hz=resample_axis(freqs[0], images.shape[-2]) if same_f else None,
            times_s=resample_axis(times[0], images.shape[-1]) if same_t else None,
            sources=sources,
            meta={"source": "glasgow", "root": str(self.root), "carrier_hz": carriers,
                  "n_skipped": len(skipped), "skipped": [str(e) for e in skipped]},
        )
        return data.validate(self.root)
