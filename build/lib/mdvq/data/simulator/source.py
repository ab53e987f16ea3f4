"""The data source `data=radar`: simulated spectrograms, processed like measured data, cached.

Each example's complex baseband (`scenario.simulate_example`) goes through the shared
static-clutter removal (`mdvq.data.clutter.remove_static_clutter`, the same as for measured
data: mean removal + Butterworth MTI high-pass), then the shared spectrogram pipeline
(`compute_spectrogram`: STFT at `prf_hz`, dB, [0,1]); see docs/data.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from mdvq.data.clutter import remove_static_clutter
from mdvq.data.dataset import SpectrogramSet, load_or_build
from mdvq.data.simulator.scenario import SimConfig, simulate_example
from mdvq.data.spectrogram import STFTConfig, compute_spectrogram, stft_magnitude

#: Bump when a code change alters generated data: it is part of the cache key.
#: 2: planted feet and heel/toe on the floor, falls rest on the floor in front of the radar,
#: static clutter removed.
SIMULATOR_VERSION = 2

#: Native spectrogram: 129 Doppler bins over +-250 Hz (+-6.5 m/s at 5.8 GHz) x 120 frames of
#: 3 s (0.128 s Hann windows, 24 ms hop). Sitting, standing, picking up and drinking stay
#: within about +-60 Hz and falls mostly within +-120 Hz (hand tips up to ~160 Hz); the foot
#: tips of the fastest walks (up to ~8 m/s) go past 250 Hz and are cropped, as in +-6 m/s
#: displays of recorded data.
DEFAULT_STFT = STFTConfig(window="hann", nperseg=128, noverlap=104, nfft=256,
                          dynamic_range_db=60.0, max_doppler_hz=250.0)


def _as_stft(stft) -> STFTConfig:
    """STFTConfig from an STFTConfig, a mapping (Hydra DictConfig) or None (defaults)."""
    if stft is None:
        return DEFAULT_STFT
    if isinstance(stft, STFTConfig):
        return stft
    if isinstance(stft, Mapping):
        fields = {f.name for f in dataclasses.fields(STFTConfig)}
        unknown = sorted(set(stft) - fields)
        if unknown:
            raise ValueError(f"stft: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
        merged = dataclasses.asdict(DEFAULT_STFT) | dict(stft)
        return STFTConfig(**merged)
    raise ValueError(f"stft must be a mapping or STFTConfig, got {type(stft).__name__}")


class RadarSimulatorSource:
    """Data source `data=radar`: a deterministic, cached set of simulated spectrograms.

    Classes interleave (`label = index % num_classes`), `num_per_class` each; example i is
    performed by subject `(i // num_classes) % num_subjects` ("sim-s007"), whose height,
    pace and tempo are fixed. Per example the speed / activity duration, aspect angle,
    range, start phase / start time, clutter-to-signal ratio [dB] and SNR [dB] are drawn.

    Arguments: `**scene`: the scene settings, defined (with defaults and units) once in
    `SimConfig` (classes, num_per_class, seed, carrier_hz, prf_hz, ...); stft: mapping or
    STFTConfig (default DEFAULT_STFT); mean_removal / mti_order / mti_cutoff: the static
    clutter removal (`remove_static_clutter`; mti_order 0 skips the MTI, mti_cutoff is
    relative to prf_hz / 2); cache_dir (None: no cache); progress (tqdm bar while generating).
    """

    def __init__(self, stft: Mapping | STFTConfig | None = None, mean_removal: bool = True,
                 mti_order: int = 4, mti_cutoff: float = 0.0075, cache_dir: str | None = None,
                 progress: bool = True, **scene):
        fields = {f.name for f in dataclasses.fields(SimConfig)}
        unknown = sorted(set(scene) - fields)
        if unknown:
            raise ValueError(f"radar simulator: unknown setting(s) {unknown}; valid scene "
                             f"settings are {sorted(fields)}")
        if isinstance(scene.get("classes"), (list, tuple)):
            scene["classes"] = tuple(scene["classes"])
        self.config = SimConfig(**scene)
        if isinstance(mti_order, bool) or not isinstance(mti_order, (int, np.integer)) \
                or mti_order < 0:
            raise ValueError(f"mti_order must be an integer >= 0, got {mti_order!r}")
        if mti_order and not 0 < float(mti_cutoff) < 1:
            raise ValueError(f"mti_cutoff must lie in (0, 1) (relative to prf_hz / 2), "
                             f"got {mti_cutoff}")
        self.clutter = {"mean_removal": bool(mean_removal), "mti_order": int(mti_order),
                        "mti_cutoff": float(mti_cutoff)}
        self.stft = _as_stft(stft)
        if self.config.num_samples < self.stft.nperseg:
            raise ValueError(
                f"duration_s * prf_hz = {self.config.num_samples} samples is shorter than one "
                f"STFT window (stft.nperseg = {self.stft.nperseg})"
            )
        max_hz = self.stft.max_doppler_hz
        if max_hz is not None and max_hz > self.config.prf_hz / 2:
            raise ValueError(
                f"stft.max_doppler_hz {self.stft.max_doppler_hz} exceeds the Nyquist limit "
                f"prf_hz / 2 = {self.config.prf_hz / 2}"
            )
        self.cache_dir = cache_dir
        self.progress = bool(progress)

    def __len__(self) -> int:
        return len(self.config.classes) * self.config.num_per_class

    def params(self) -> dict:
        """Every setting that determines the data (the cache key), with SIMULATOR_VERSION."""
        p = dataclasses.asdict(self.config)
        p["classes"] = list(p["classes"])
        p["stft"] = dataclasses.asdict(self.stft)
        p["clutter_removal"] = dict(self.clutter)
        p["simulator_version"] = SIMULATOR_VERSION
        return p

    def native_shape(self) -> tuple[int, int]:
        """(F, T) of the spectrograms before any resizing."""
        freqs, times, _ = stft_magnitude(np.zeros(self.config.num_samples, complex),
                                         self.config.prf_hz, self.stft)
        return len(freqs), len(times)

    def slow_time(self, index: int) -> tuple[np.ndarray, dict]:
        """Clutter-removed complex baseband `(N,)` at `prf_hz` of example `index` and its info
        dict (`simulate_example`, then `remove_static_clutter` with this source's settings)."""
        iq, info = simulate_example(self.config, index)
        return remove_static_clutter(iq, **self.clutter), info

    def spectrogram(self, index: int) -> tuple[np.ndarray, dict]:
        """Spectrogram `(F, T)` in [0,1] of example `index` and its info dict."""
        iq, info = self.slow_time(index)
        img, _, _ = compute_spectrogram(iq, self.config.prf_hz, self.stft)
        return img, info

    def build(self) -> SpectrogramSet:
        """Generate every example (no cache), showing a progress bar if `progress`."""
        from tqdm.auto import tqdm

        cfg, n = self.config, len(self)
        f, tt = self.native_shape()
        images = np.empty((n, 1, f, tt), dtype=np.float32)
        for i in tqdm(range(n), desc="simulating radar spectrograms", unit="spec",
                      disable=not self.progress, mininterval=1.0):
            images[i, 0], _ = self.spectrogram(i)
        freqs, times, _ = stft_magnitude(np.zeros(cfg.num_samples, complex), cfg.prf_hz, self.stft)
        idx = np.arange(n)
        labels = idx % len(cfg.classes)
        subjects = np.array([f"sim-s{cfg.subject_of(i):03d}" for i in idx])
        data = SpectrogramSet(images=images, labels=labels, class_names=list(cfg.classes),
                              subjects=subjects, freqs_hz=freqs, times_s=times,
                              sources=np.array([f"sim:{i}" for i in idx]),
                              meta={"source": "radar_simulator",
                                    "simulator_version": SIMULATOR_VERSION})
        return data.validate("radar simulator")

    def load(self) -> SpectrogramSet:
        """The simulated set, from `<cache_dir>/radar-<key>.npz` if present, else built and
        cached there; images `(N, 1, F, T)` in [0,1]."""
        return load_or_build(self.cache_dir, "radar", self.params(), self.build)
