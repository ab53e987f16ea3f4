"""The one spectrogram pipeline every data source uses: STFT -> magnitude -> dB -> [0,1].

Conventions (docs/data.md): a spectrogram array is `(F, T)` (or `(C, F, T)`), rows are
Doppler bins in *ascending* frequency (row 0 = most negative Doppler, zero Doppler in the
middle), so plotting with `origin="lower"` draws approaching targets (positive Doppler) upward.
Images written for people put positive Doppler at the top (see `mdvq.utils.pixels.to_image_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import signal

SPEED_OF_LIGHT = 299_792_458.0  # m/s


@dataclass(frozen=True)
class STFTConfig:
    """Short-time Fourier transform settings.

    window: scipy window name ("hann", "hamming", ...); nperseg: window length in samples;
    noverlap: overlap in samples; nfft: FFT length (>= nperseg); dynamic_range_db: the range
    in dB kept below each spectrogram's peak; max_doppler_hz: if set, rows outside
    [-max, +max] Hz are dropped.
    """

    window: str = "hann"
    nperseg: int = 128
    noverlap: int = 112
    nfft: int = 128
    dynamic_range_db: float = 60.0
    max_doppler_hz: float | None = None

    def __post_init__(self):
        if self.nperseg <= 0:
            raise ValueError(f"stft.nperseg must be positive, got {self.nperseg}")
        if not 0 <= self.noverlap < self.nperseg:
            raise ValueError(
                f"stft.noverlap must be in [0, nperseg={self.nperseg}), got {self.noverlap}"
            )
        if self.nfft < self.nperseg:
            raise ValueError(f"stft.nfft ({self.nfft}) must be >= stft.nperseg ({self.nperseg})")
        if self.dynamic_range_db <= 0:
            raise ValueError(f"stft.dynamic_range_db must be positive, got {self.dynamic_range_db}")


def next_power_of_two(n: float) -> int:
    """The smallest power of two >= `n` (>= 1)."""
    whole = max(1, math.ceil(n - 1e-9))
    return 1 << (whole - 1).bit_length()


#: STFT quantity -> (key in physical units, key in samples); the names errors use
STFT_UNIT_KEYS = {
    "window": ("data.stft_window_s", "data.nperseg"),
    "hop": ("data.stft_hop_s", "data.noverlap"),
    "resolution": ("data.doppler_resolution_hz", "data.nfft"),
}


@dataclass(frozen=True)
class STFTUnits:
    """STFT window and hop in seconds and the Doppler resolution in Hz, turned into an
    `STFTConfig` in samples once the sample rate is known (`at`).

    window_s: STFT window length [s] (nperseg = round(window_s * fs)); hop_s: step between
    STFT frames [s] (noverlap = nperseg - round(hop_s * fs)); resolution_hz: the Doppler bin
    wanted [Hz] (nfft = the next power of two >= fs / resolution_hz, and at least nperseg, so
    the bin is resolution_hz or finer). Each may be None: then the sample key of the same
    quantity (`nperseg`, `noverlap`, `nfft` of the `stft` settings) is used; giving both for
    one quantity is a ValueError naming both keys (`STFT_UNIT_KEYS`).
    """

    window_s: float | None = None
    hop_s: float | None = None
    resolution_hz: float | None = None

    def __post_init__(self):
        for (name, (key, _)), value in zip(STFT_UNIT_KEYS.items(),
                                           (self.window_s, self.hop_s, self.resolution_hz),
                                           strict=True):
            if value is not None and not float(value) > 0:
                raise ValueError(f"{key} must be positive or null (the STFT {name}), got {value}")

    def given(self) -> bool:
        """Whether any setting is in physical units (so the sample rate is needed)."""
        return any(v is not None for v in (self.window_s, self.hop_s, self.resolution_hz))

    def check(self, stft: Mapping) -> None:
        """ValueError naming both keys when `stft` sets in samples what is also set here."""
        for value, (phys, samples) in zip((self.window_s, self.hop_s, self.resolution_hz),
                                          STFT_UNIT_KEYS.values(), strict=True):
            sample_key = samples.split(".")[-1]
            if value is not None and stft.get(sample_key) is not None:
                raise ValueError(
                    f"{phys}={value} and {samples}={stft[sample_key]} both set the same STFT "
                    f"quantity; set one of them to null ({phys} is in physical units, "
                    f"{samples} in samples)")

    def at(self, fs: float | None, stft: Mapping | None = None) -> STFTConfig:
        """The `STFTConfig` in samples at sample rate `fs` [Hz] (None: only sample keys allowed).

        stft: the other settings (`window`, `dynamic_range_db`, `max_doppler_hz`) and the sample
        keys `nperseg`, `noverlap`, `nfft` (None or missing: nperseg 128, noverlap 7/8 of
        nperseg, nfft the next power of two >= nperseg).
        """
        stft = {k: v for k, v in dict(stft or {}).items()}
        self.check(stft)
        if self.given() and fs is None:
            raise ValueError("the STFT is set in physical units (data.stft_window_s, "
                             "data.stft_hop_s, data.doppler_resolution_hz) but the sample rate "
                             "is unknown")
        nperseg = stft.get("nperseg")
        if self.window_s is not None:
            nperseg = round(self.window_s * fs)
            if nperseg < 2:
                raise ValueError(f"data.stft_window_s={self.window_s} s is {nperseg} samples at "
                                 f"{fs:g} Hz; an STFT window needs at least 2")
        nperseg = int(nperseg) if nperseg is not None else 128
        noverlap = stft.get("noverlap")
        if self.hop_s is not None:
            hop = round(self.hop_s * fs)
            if not 1 <= hop <= nperseg:
                raise ValueError(f"data.stft_hop_s={self.hop_s} s is {hop} samples at {fs:g} Hz;"
                                 f" it must be 1 to the STFT window ({nperseg} samples)")
            noverlap = nperseg - hop
        noverlap = int(noverlap) if noverlap is not None else nperseg * 7 // 8
        nfft = stft.get("nfft")
        if self.resolution_hz is not None:
            nfft = next_power_of_two(fs / self.resolution_hz)
        nfft = max(int(nfft), nperseg) if self.resolution_hz is not None else (
            int(nfft) if nfft is not None else next_power_of_two(nperseg))
        stft.update(nperseg=nperseg, noverlap=noverlap, nfft=nfft)
        return STFTConfig(**stft)


def derived_axes(fs: float, stft: STFTConfig) -> dict:
    """The axes an STFT setting gives at sample rate `fs` [Hz]: `resolution_hz` (Doppler bin,
    fs / nfft), `time_step_s` (frame step, (nperseg - noverlap) / fs), `stft_window_s`
    (nperseg / fs) and `doppler_span_hz` (the +- Doppler kept: max_doppler_hz, else fs / 2)."""
    span = fs / 2 if stft.max_doppler_hz is None else min(stft.max_doppler_hz, fs / 2)
    return {"sample_rate_hz": fs, "resolution_hz": fs / stft.nfft,
            "time_step_s": (stft.nperseg - stft.noverlap) / fs, "stft_window_s": stft.nperseg / fs,
            "doppler_span_hz": span, "nperseg": stft.nperseg, "noverlap": stft.noverlap,
            "nfft": stft.nfft}


def stft_magnitude(
    iq: np.ndarray, fs: float, cfg: STFTConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-sided STFT magnitude of complex baseband along the last axis.

    iq: complex array `(..., N)` sampled at `fs` Hz (slow time / PRF for radar).
    Returns `(freqs_hz (F,), times_s (T,), magnitude (..., F, T))` with frequencies ascending
    (zero Doppler in the middle) and times at the frame centres in seconds.
    """
    iq = np.asarray(iq)
    if iq.shape[-1] < cfg.nperseg:
        raise ValueError(
            f"signal has {iq.shape[-1]} samples, fewer than one STFT window (nperseg={cfg.nperseg})"
        )
    freqs, times, z = signal.stft(
        iq,
        fs=fs,
        window=cfg.window,
        nperseg=cfg.nperseg,
        noverlap=cfg.noverlap,
        nfft=cfg.nfft,
        return_onesided=False,
        boundary=None,
        padded=False,
        detrend=False,
        axis=-1,
    )
    rows = np.fft.fftshift(np.arange(len(freqs)))  # ascending-frequency order of the FFT bins
    if cfg.max_doppler_hz is not None:  # crop before taking magnitudes: less work
        rows = rows[np.abs(freqs[rows]) <= cfg.max_doppler_hz]
    return freqs[rows], times, np.abs(z[..., rows, :])


def magnitude_to_unit(mag: np.ndarray, dynamic_range_db: float = 60.0, eps: float = 1e-12) -> np.ndarray:
    """Magnitude -> dB -> [0,1], normalised to the array's own peak over the last two axes.

    `dB = 20*log10(|S| + eps)`; `x = clip((dB - max(dB) + D) / D, 0, 1)` with D the dynamic
    range in dB, so the peak maps to 1 and everything D dB or more below it to 0. Returns
    float32 of the input's shape. Raises ValueError on NaN/inf input.
    """
    mag = np.asarray(mag, dtype=np.float64)
    if not np.all(np.isfinite(mag)):
        raise ValueError("spectrogram magnitude contains NaN or inf")
    db = 20.0 * np.log10(np.abs(mag) + eps)
    peak = db.max(axis=(-2, -1), keepdims=True)
    return np.clip((db - peak + dynamic_range_db) / dynamic_range_db, 0.0, 1.0).astype(np.float32)


def compute_spectrogram(
    iq: np.ndarray, fs: float, cfg: STFTConfig, sum_axes: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Complex baseband -> normalised spectrogram in [0,1].

    iq: `(..., N)` complex at `fs` Hz. If `sum_axes` is given, STFT magnitudes are summed over
    those leading axes first (e.g. range bins of an FMCW recording). Returns
    `(image float32 (..., F, T) in [0,1], freqs_hz, times_s)`.
    """
    freqs, times, mag = stft_magnitude(iq, fs, cfg)
    if sum_axes:
        mag = mag.sum(axis=sum_axes)
    return magnitude_to_unit(mag, cfg.dynamic_range_db), freqs, times


def doppler_to_velocity(freqs_hz: np.ndarray, carrier_hz: float) -> np.ndarray:
    """Doppler frequency [Hz] -> radial velocity [m/s]: `v = f * c / (2 * fc)` (positive approaching)."""
    return np.asarray(freqs_hz) * SPEED_OF_LIGHT / (2.0 * carrier_hz)


def resize_spectrogram(spec: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize `(..., F, T)` to `(..., size[0], size[1])` by area-weighted (anti-aliased) interpolation.

    Values in [0,1] stay in [0,1]. Returns float32; the input is returned unchanged (as float32)
    when it already has the requested size.
    """
    import torch
    import torch.nn.functional as F

    spec = np.asarray(spec, dtype=np.float32)
    size = (int(size[0]), int(size[1]))
    if spec.shape[-2:] == size:
        return spec
    lead = spec.shape[:-2]
    t = torch.from_numpy(np.ascontiguousarray(spec)).reshape(-1, 1, *spec.shape[-2:])
    out = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.clamp_(0.0, 1.0).reshape(*lead, *size).numpy()
