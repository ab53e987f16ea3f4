"""Radar scattering primitives of the simulator: wavelength, ellipsoid RCS, point returns, noise.

A CW (slow-time) radar at `radar_pos` sees K point scatterers; scatterer k returns
`a_k(t) / R_k(t)^2 * exp(-j 4 pi R_k(t) / lambda)` with `a_k = sqrt(sigma_k)` (the
aspect-dependent RCS of an ellipsoid, Mahafza's formula as in V. C. Chen's code) and `R_k`
in metres. Doppler is positive for approaching targets (docs/data.md).
"""

from __future__ import annotations

import math

import numpy as np

from mdvq.data.spectrogram import SPEED_OF_LIGHT


def wavelength_m(carrier_hz: float) -> float:
    """Radar wavelength in metres for a carrier frequency in Hz."""
    return SPEED_OF_LIGHT / float(carrier_hz)


def ellipsoid_rcs(a, b, c, theta, phi):
    """Backscatter RCS [m^2] of an ellipsoid with semi-axes a, b, c [m] (c along its axis).

    theta: angle [rad] between the ellipsoid's c axis and the line of sight; phi: azimuth
    [rad] of the line of sight about that axis. `sigma = pi a^2 b^2 c^2 / (a^2 sin^2(theta)
    cos^2(phi) + b^2 sin^2(theta) sin^2(phi) + c^2 cos^2(theta))^2` (Mahafza, as in Chen's
    `rcsellipsoid`): broadside to a spheroid (a=b) gives `pi c^2`, end-on `pi a^4 / c^2`.
    Broadcasts over array arguments.
    """
    st2 = np.sin(theta) ** 2
    den = a**2 * st2 * np.cos(phi) ** 2 + b**2 * st2 * np.sin(phi) ** 2 + c**2 * np.cos(theta) ** 2
    return np.pi * a**2 * b**2 * c**2 / den**2


def simulate_returns(positions, amplitudes, radar_pos, wavelength: float,
                     spreading: bool = True) -> np.ndarray:
    """Complex baseband (slow time) of K point scatterers seen by a monostatic CW radar.

    positions: `(K, N, 3)` metres (K scatterers, N pulses); amplitudes: `(K, N)` (or
    broadcastable), the square root of each scatterer's RCS; radar_pos: `(3,)` metres;
    wavelength in metres. Returns complex128 `(N,)`:
    `sum_k amp_k / R_k^2 * exp(-j 4 pi R_k / lambda)` (without `1/R^2` if `spreading` is False).
    A scatterer closing in on the radar has a positive Doppler `2 v / lambda`.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError(f"positions must be (K, N, 3), got shape {pos.shape}")
    rel = pos - np.asarray(radar_pos, dtype=np.float64)
    rng = np.sqrt(np.einsum("knj,knj->kn", rel, rel))
    amp = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), rng.shape)
    if spreading:
        amp = amp / rng**2
    return np.sum(amp * np.exp(-1j * (4.0 * np.pi / wavelength) * rng), axis=0)


def add_noise(signal: np.ndarray, snr_db: float, rng: np.random.Generator,
              reference_power: float | None = None) -> np.ndarray:
    """Add circular complex white Gaussian noise at `snr_db` [dB] below the reference power.

    reference_power: the signal power the SNR refers to (default: mean |signal|^2).
    """
    p = float(np.mean(np.abs(signal) ** 2)) if reference_power is None else reference_power
    sigma = math.sqrt(p / 10.0 ** (snr_db / 10.0) / 2.0)
    noise = rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape)
    return signal + sigma * noise

def ellipsoid_amplitudes(centres, axes, semi_axes, radar_pos) -> np.ndarray:
    """`sqrt(RCS)` `(K, N)` of ellipsoids at `centres` with c axes along unit `axes` (K, N, 3).

    theta is the angle between the ellipsoid axis and the direction to the radar, phi the
    azimuth of the radar seen from the ellipsoid, `asin(los_y / |los_xy|)` (as in Chen's
    code); `ellipsoid_rcs` evaluated through squared sines, without the inverse trig calls.
    """
    los = np.asarray(radar_pos, dtype=np.float64) - centres
    los2 = np.maximum(np.einsum("knj,knj->kn", los, los), 1e-18)
    cos2_t = np.einsum("knj,knj->kn", los, axes) ** 2 / los2
    sin2_t = np.clip(1.0 - cos2_t, 0.0, 1.0)
    sin2_p = los[..., 1] ** 2 / np.maximum(los[..., 0] ** 2 + los[..., 1] ** 2, 1e-18)
    s = np.asarray(semi_axes, dtype=np.float64)
    a2, b2, c2 = (s[:, i, None] ** 2 for i in range(3))
    den = a2 * sin2_t * (1.0 - sin2_p) + b2 * sin2_t * sin2_p + c2 * (1.0 - sin2_t)
    return np.sqrt(np.pi * a2 * b2 * c2) / den

