"""Static-clutter removal on slow-time radar signals: one implementation for every source.

Measured data (the Glasgow reader, raw I/Q recordings) and the embedded simulator all pass
their complex slow-time signal through `remove_static_clutter` before the STFT, so the
zero-Doppler line and its window sidelobes do not hide slow body motion.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def remove_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Subtract the mean along `axis` (slow time): removes the DC (zero-Doppler) component of
    perfectly static clutter."""
    return x - x.mean(axis=axis, keepdims=True)


def mti_filter(x: np.ndarray, order: int = 4, cutoff: float = 0.0075, axis: int = -1) -> np.ndarray:
    """Moving-target indication: Butterworth high-pass along slow time (`axis`, default last).

    `scipy.signal.butter(order, cutoff, "high")` with `cutoff` relative to the Nyquist
    frequency (PRF/2; 0.0075 at a 1 kHz PRF is 3.75 Hz), applied causally with `lfilter` like
    the Glasgow reference's MATLAB `filter`. `order=0` returns the input unfiltered.
    """
    if order == 0:
        return x
    if not 0 < cutoff < 1:
        raise ValueError(f"mti cutoff must lie in (0, 1) (relative to PRF/2), got {cutoff}")
    b, a = signal.butter(order, cutoff, "high")
    return signal.lfilter(b, a, x, axis=axis)


def remove_static_clutter(
    x: np.ndarray, mean_removal: bool = True, mti_order: int = 4, mti_cutoff: float = 0.0075,
    axis: int = -1,
) -> np.ndarray:
    """Mean removal (optional) then the MTI high-pass (`mti_order=0` skips it) along slow time.

    x: complex slow-time signal, any shape, slow time on `axis`. Returns an array of the same
    shape (complex128 when filtered).
    """
    if mti_order < 0:
        raise ValueError(f"mti_order must be >= 0, got {mti_order}")
    if mean_removal:
        x = remove_mean(x, axis=axis)
    return mti_filter(x, mti_order, mti_cutoff, axis=axis)
