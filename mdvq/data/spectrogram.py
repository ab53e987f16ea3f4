"""The one spectrogram pipeline every data source uses: STFT -> magnitude -> dB -> [0,1].

Conventions (docs/data.md): a spectrogram array is `(F, T)` (or `(C, F, T)`), rows are
Doppler bins in *ascending* frequency (row 0 = most negative Doppler, zero Doppler in the
middle), so plotting with `origin="lower"` draws approaching targets (positive Doppler) upward.
Images written for people put positive Doppler at the top (see `mdvq.utils.pixels.to_image_rows`).
"""

from __future__ import annotations

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
