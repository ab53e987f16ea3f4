"""Synthetic raw I/Q recordings at 5 kHz: a small "own recordings" set for `data=iq` benchmarks.

Writes `classes x per_class` recordings of `seconds` each as `.npz` files (complex baseband
`iq`, sample rate `fs` [Hz], carrier `fc` [Hz]) into class folders, like the set of issue 26
(4 classes x 3 recordings x 10 s at 5 kHz, another radar and rate than the default data).
Class c is a walking-like target: a torso line at Doppler `torso_hz[c]` and two limb returns
whose Doppler swings sinusoidally around it at cadence `cadence_hz[c]` with amplitude
`swing_hz[c]` (opposite phase), on static clutter and complex white noise; each recording
jitters the torso Doppler and cadence by a few percent (a different walker), so the split by
recording is meaningful.

    python experiments/bench/iq_recordings.py outputs/iq5k        # then data=iq data.root=outputs/iq5k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TORSO_HZ = (150.0, -250.0, 400.0, 60.0)
"""Torso (centroid) Doppler of each class [Hz]."""
CADENCE_HZ = (1.8, 1.2, 2.5, 0.8)
"""Limb swing (gait) frequency of each class [Hz]."""
SWING_HZ = (500.0, 300.0, 800.0, 150.0)
"""Peak limb Doppler excursion around the torso of each class [Hz]."""


def recording(c: int, fs: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One complex recording of class `c` (len `fs * seconds`), sample rate `fs` [Hz]."""
    t = np.arange(round(fs * seconds)) / fs
    torso = TORSO_HZ[c] * (1 + 0.05 * rng.normal())
    cadence = CADENCE_HZ[c] * (1 + 0.05 * rng.normal())
    swing = SWING_HZ[c]
    phase0 = rng.uniform(0, 2 * np.pi)
    x = np.exp(2j * np.pi * torso * t)  # torso: a line at `torso` Hz
    for sign, amp in ((1.0, 0.5), (-1.0, 0.35)):  # two limbs in opposite phase
        # instantaneous Doppler torso + sign * swing * sin(2 pi cadence t + phase0)
        inst_phase = 2 * np.pi * torso * t - sign * swing / cadence * np.cos(
            2 * np.pi * cadence * t + phase0)
        x = x + amp * np.exp(1j * inst_phase)
    noise = 0.05 * (rng.normal(size=t.size) + 1j * rng.normal(size=t.size))
    return (x + 2.0 * (1 + 1j) + noise).astype(np.complex64)


def write_set(root: str | Path, fs: float = 5000.0, classes: int = 4, per_class: int = 3,
              seconds: float = 10.0, seed: int = 0) -> Path:
    """Write the set under `root/class<c>/rec<r>.npz`; returns `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for r in range(per_class):
            np.savez(folder / f"rec{r}.npz", iq=recording(c % len(TORSO_HZ), fs, seconds, rng),
                     fs=fs, fc=24e9)
    return root


def main() -> None:
    """Parse arguments and write the set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="output folder")
    parser.add_argument("--fs", type=float, default=5000.0, help="sample rate [Hz]")
    parser.add_argument("--per-class", type=int, default=3, help="recordings per class")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each recording [s]")
    args = parser.parse_args()
    print(write_set(args.root, args.fs, per_class=args.per_class, seconds=args.seconds))


if __name__ == "__main__":
    main()
