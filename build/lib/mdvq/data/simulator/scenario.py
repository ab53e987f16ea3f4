"""Scenario: the simulated set's settings (`SimConfig`), subjects and one example's draws.

Everything is deterministic from `(seed, example index)`. The world frame has the radar at
`(0, 0, radar_height_m)`; a person stands / walks on the floor z = 0. A walk towards the
radar ends, and one away from it starts, `range_m` from it along the world x axis; any other
activity is placed so that the closest any joint comes to the radar (horizontally, over the
whole window) is `range_m` (so a fall towards the radar ends in front of it, never on or
past it).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from mdvq.data.simulator.activities import (
    ACTIVITY_DURATION_S,
    activity_pose,
    bird_returns,
    fall_joints,
    rotor_returns,
)
from mdvq.data.simulator.kinematics import (
    body_dimensions,
    body_scatterers,
    skeleton_joints,
    to_world,
    walking_joints,
)
from mdvq.data.simulator.physics import (
    add_noise,
    ellipsoid_amplitudes,
    simulate_returns,
    wavelength_m,
)

HUMAN_CLASSES = ("walking", "sitting_down", "standing_up", "picking_up", "drinking", "falling")
EXTRA_CLASSES = ("rotor", "bird")
VALID_CLASSES = HUMAN_CLASSES + EXTRA_CLASSES
DEFAULT_CLASSES = list(HUMAN_CLASSES)

#: Bound on a walk's peak limb (toe) speed as a multiple of the walking speed, for the PRF
#: check: measured on this model 3.8-5.6 (largest for slow walks), about 4 at 2 m/s.
LIMB_SPEED_FACTOR = 4.5



def _pair(name: str, value, lo_min: float | None = None, hi_max: float | None = None):
    """A (lo, hi) range from a pair or a single number; ValueError naming `name` if bad."""
    if isinstance(value, (int, float)):
        value = (value, value)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a pair [lo, hi], got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a finite range with lo <= hi, got [{lo}, {hi}]")
    if lo_min is not None and lo < lo_min:
        raise ValueError(f"{name} must be >= {lo_min}, got [{lo}, {hi}]")
    if hi_max is not None and hi > hi_max:
        raise ValueError(f"{name} must be <= {hi_max}, got [{lo}, {hi}]")
    return (lo, hi)


@dataclass(frozen=True)
class SimConfig:
    """Every setting of the simulated scene, validated; the single definition of these
    parameters (`RadarSimulatorSource(**kwargs)` and `conf/data/radar.yaml` pass them here).

    Ranges are `(lo, hi)` pairs (a single number means lo = hi); per example a value is
    drawn uniformly (speeds and activity durations near the subject's own preference).
    """

    #: activity classes, a subset of VALID_CLASSES; example i has class `i % len(classes)`
    classes: tuple[str, ...] = tuple(DEFAULT_CLASSES)
    #: examples per class
    num_per_class: int = 500
    #: simulated people (height, pace, tempo) shared across classes
    num_subjects: int = 30
    #: simulation seed (>= 0): same seed, same data
    seed: int = 0
    #: radar carrier frequency [Hz]
    carrier_hz: float = 5.8e9
    #: pulse repetition frequency = slow-time sample rate [Hz]
    prf_hz: float = 1000.0
    #: window length [s]
    duration_s: float = 3.0
    #: target signal-to-noise ratio [dB] (relative to the body's mean return power)
    snr_db: tuple[float, float] = (15.0, 35.0)
    #: static clutter power relative to the body's return [dB]
    clutter_db: tuple[float, float] = (-5.0, 5.0)
    #: static clutter scatterers (at 1-15 m)
    num_clutter: int = 4
    #: subject height [m], in [0.5, 2.5]
    height_m: tuple[float, float] = (1.5, 1.95)
    #: walking speed [m/s] (Boulic model: v / (0.491 height) <= 3)
    walk_speed_mps: tuple[float, float] = (0.8, 2.0)
    #: angle of the body's forward axis off the radar line of sight [deg], in [-90, 90]
    aspect_deg: tuple[float, float] = (-60.0, 60.0)
    #: probability of facing / moving away from the radar (negative Doppler)
    away_prob: float = 0.5
    #: walks: horizontal distance [m] where an approaching walk ends / a receding one starts;
    #: other activities: closest horizontal distance of any joint to the radar
    range_m: tuple[float, float] = (2.0, 6.0)
    #: radar antenna height above the floor [m]
    radar_height_m: float = 1.0

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        classes = [self.classes] if isinstance(self.classes, str) else list(self.classes)
        if not classes:
            raise ValueError(f"classes must be a non-empty list of {list(VALID_CLASSES)}")
        for c in classes:
            if c not in VALID_CLASSES:
                raise ValueError(
                    f"classes: unknown class {c!r}; valid classes are {list(VALID_CLASSES)}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes has duplicates: {classes}")
        put("classes", tuple(str(c) for c in classes))
        for name in ("num_per_class", "num_subjects", "num_clutter", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {v!r}")  # noqa: TRY004
            put(name, int(v))
        if self.num_per_class < 1:
            raise ValueError(f"num_per_class must be >= 1, got {self.num_per_class}")
        if self.num_subjects < 1:
            raise ValueError(f"num_subjects must be >= 1, got {self.num_subjects}")
        if self.num_clutter < 0:
            raise ValueError(f"num_clutter must be >= 0, got {self.num_clutter}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        for name in ("carrier_hz", "prf_hz", "duration_s"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
            put(name, v)
        put("snr_db", _pair("snr_db", self.snr_db))
        put("clutter_db", _pair("clutter_db", self.clutter_db))
        put("height_m", _pair("height_m", self.height_m, 0.5, 2.5))
        put("walk_speed_mps", _pair("walk_speed_mps", self.walk_speed_mps, 0.05))
        put("aspect_deg", _pair("aspect_deg", self.aspect_deg, -90.0, 90.0))
        put("range_m", _pair("range_m", self.range_m, 0.5))
        if not 0.0 <= float(self.away_prob) <= 1.0:
            raise ValueError(f"away_prob must lie in [0, 1], got {self.away_prob}")
        put("away_prob", float(self.away_prob))
        put("radar_height_m", float(self.radar_height_m))
        if "walking" in self.classes:
            rv_max = self.walk_speed_mps[1] / body_dimensions(self.height_m[0])["leg"]
            if rv_max > 3.0:
                raise ValueError(
                    f"walk_speed_mps max {self.walk_speed_mps[1]} at height_m min "
                    f"{self.height_m[0]} gives rv = {rv_max:.2f} > 3, outside the Boulic model"
                )
            torso_hz = 2 * self.walk_speed_mps[1] / self.wavelength
            if torso_hz >= self.prf_hz / 2:
                raise ValueError(
                    f"prf_hz {self.prf_hz} is too low: walking at {self.walk_speed_mps[1]} m/s "
                    f"gives a torso Doppler of {torso_hz:.0f} Hz above the Nyquist limit "
                    f"{self.prf_hz / 2:.0f} Hz"
                )
            if LIMB_SPEED_FACTOR * torso_hz >= self.prf_hz / 2:
                warnings.warn(
                    f"prf_hz {self.prf_hz}: limb Doppler of walks up to "
                    f"{LIMB_SPEED_FACTOR * torso_hz:.0f} Hz exceeds the Nyquist limit "
                    f"{self.prf_hz / 2:.0f} Hz and will alias", stacklevel=3)

    @property
    def wavelength(self) -> float:
        """Wavelength in metres."""
        return wavelength_m(self.carrier_hz)

    @property
    def num_samples(self) -> int:
        """Slow-time samples per example (`round(duration_s * prf_hz)`)."""
        return round(self.duration_s * self.prf_hz)

    def class_of(self, index: int) -> str:
        """Class of example `index` (classes interleave: index % num_classes)."""
        return self.classes[index % len(self.classes)]

    def subject_of(self, index: int) -> int:
        """Subject number of example `index`: each subject repeats every class in turn."""
        return (index // len(self.classes)) % self.num_subjects


@dataclass(frozen=True)
class Subject:
    """A simulated person: height [m], pace / tempo in [0, 1] (where in the speed / duration
    ranges they usually are: 1 = fast) and arm_swing (scale of the walking arm swing)."""

    index: int
    height_m: float
    pace: float
    tempo: float
    arm_swing: float

    @property
    def id(self) -> str:
        """Subject id string, e.g. "sim-s007"."""
        return f"sim-s{self.index:03d}"


def make_subject(cfg: SimConfig, index: int) -> Subject:
    """Subject `index` of the pool, drawn from `(seed, 0, index)` only."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0, index]))
    return Subject(index=index, height_m=float(rng.uniform(*cfg.height_m)),
                   pace=float(rng.uniform()), tempo=float(rng.uniform()),
                   arm_swing=float(rng.uniform(0.7, 1.3)))


def _in_range(lo_hi, centre: float, rng: np.random.Generator, spread: float = 0.15) -> float:
    """A value in [lo, hi] near the fraction `centre` of the range (subject preference)."""
    lo, hi = lo_hi
    return lo + (hi - lo) * float(np.clip(centre + rng.normal(0, spread), 0, 1))


def simulate_example(cfg: SimConfig, index: int) -> tuple[np.ndarray, dict]:
    """Complex baseband `(cfg.num_samples,)` at `cfg.prf_hz` of example `index` and its draws.

    The example's randomness comes from `SeedSequence([seed, 1, index])` only, so every
    example is the same whatever order or chunking generates it. The info dict holds the
    class, subject id and every drawn parameter (height, speed, aspect, range, SNR, ...).
    """
    sig, info = _scene(cfg, index)[1:]
    return sig, info


def example_joints(cfg: SimConfig, index: int) -> dict[str, np.ndarray] | None:
    """World-frame joint tracks `(N, 3)` [m] of example `index` (None for rotor / bird):
    the body `simulate_example` renders (floor z = 0, radar at (0, 0, radar_height_m))."""
    return _scene(cfg, index)[0]


def _scene(cfg: SimConfig, index: int):
    """(world joints or None, noisy complex baseband (N,), info) of example `index`."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, index]))
    activity = cfg.class_of(index)
    subject = make_subject(cfg, cfg.subject_of(index))
    n, lam = cfg.num_samples, cfg.wavelength
    t = np.arange(n) / cfg.prf_hz
    away = rng.uniform() < cfg.away_prob
    aspect = float(rng.uniform(*cfg.aspect_deg)) + (180.0 if away else 0.0)
    rng_m = float(rng.uniform(*cfg.range_m))
    info = {"index": index, "class": activity, "subject": subject.id,
            "height_m": subject.height_m, "aspect_deg": aspect, "range_m": rng_m}
    joints = None
    h = subject.height_m
    if activity in HUMAN_CLASSES:
        joints, draws = _human_joints(cfg, activity, subject, rng, t)
        if activity == "walking":  # range_m: where an approaching walk ends / a receding starts
            walked = float(joints["pelvis"][-1, 0] - joints["pelvis"][0, 0])
            start = rng_m + (walked * abs(math.cos(math.radians(aspect))) if not away else 0.0)
            heading = math.pi + math.radians(aspect)
            joints = {k: to_world(v, (start, 0.0), heading) for k, v in joints.items()}
            info["start_range_m"] = start
        else:
            joints = place_body(joints, rng_m, aspect)
        sig = human_returns(joints, h, lam, cfg.radar_height_m)
        info.update(draws)
    elif activity == "rotor":
        sig = rotor_returns(t, rng, lam, cfg.prf_hz, rng_m + 2.0, cfg.radar_height_m)
    elif activity == "bird":
        sig = bird_returns(t, rng, lam, rng_m + 5.0, aspect, cfg.radar_height_m)
    else:  # pragma: no cover - SimConfig validates classes
        raise ValueError(f"unknown class {activity!r}")
    p_sig = float(np.mean(np.abs(sig) ** 2))
    csr = float(rng.uniform(*cfg.clutter_db))
    snr = float(rng.uniform(*cfg.snr_db))
    if cfg.num_clutter > 0:  # static scatterers: random ranges, shared clutter-to-signal ratio
        w = rng.uniform(0.2, 1.0, cfg.num_clutter)
        w *= math.sqrt(p_sig * 10 ** (csr / 10) / np.sum(w**2))
        ranges = rng.uniform(1.0, 15.0, cfg.num_clutter)
        sig = sig + np.sum(w * np.exp(-1j * 4 * np.pi * ranges / lam))
    iq = add_noise(sig, snr, rng, reference_power=p_sig)
    info.update(snr_db=snr, clutter_db=csr if cfg.num_clutter else None)
    return joints, iq, info


def _human_joints(cfg: SimConfig, activity: str, subject: Subject, rng: np.random.Generator,
                  t: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Body-frame joint tracks of a human activity and the drawn parameters."""
    h, T = subject.height_m, cfg.duration_s
    if activity == "walking":
        v = _in_range(cfg.walk_speed_mps, subject.pace, rng)
        phase = float(rng.uniform())
        return walking_joints(t, h, v, phase, subject.arm_swing), {
            "speed_mps": v, "start_phase": phase}
    if activity == "falling":
        start_s = float(rng.uniform(0.1, max(0.1, 0.45 * T)))
        joints, t_fall = fall_joints(t, h, start_s, rng)
        return joints, {"start_s": start_s, "activity_s": t_fall}
    dur = _in_range(ACTIVITY_DURATION_S[activity], 1.0 - subject.tempo, rng)
    start_s = float(rng.uniform(0.0, max(0.0, T - dur)))
    pose = activity_pose(activity, t, h, start_s, dur, rng)
    return skeleton_joints(pose, h), {"start_s": start_s, "activity_s": dur}


def place_body(joints: dict[str, np.ndarray], range_m: float,
               aspect_deg: float) -> dict[str, np.ndarray]:
    """Body-frame joint tracks -> world frame, the body's forward axis `aspect_deg` [deg] off
    the direction towards the radar (0 = facing / moving straight at it, 180 = away), and
    placed along the world x axis so that the closest horizontal distance of any joint to the
    radar over the window is `range_m` [m]."""
    heading = math.pi + math.radians(aspect_deg)
    body = np.stack(list(joints.values()))  # (J, N, 3)
    x0 = range_m
    for _ in range(3):  # the closest distance grows ~1:1 with the offset; converges fast
        w = to_world(body, (x0, 0.0), heading)
        x0 += range_m - float(np.sqrt(w[..., 0] ** 2 + w[..., 1] ** 2).min())
    w = to_world(body, (x0, 0.0), heading)
    return dict(zip(joints, w, strict=True))


def human_returns(joints: dict[str, np.ndarray], height: float, wavelength: float,
                  radar_height_m: float = 1.0) -> np.ndarray:
    """Complex returns `(N,)` of the 12 segment ellipsoids of a skeleton given by world-frame
    joint tracks `(N, 3)` [m], radar at `(0, 0, radar_height_m)`."""
    centres, axes, semi = body_scatterers(joints, height)
    radar = np.array([0.0, 0.0, radar_height_m])
    amps = ellipsoid_amplitudes(centres, axes, semi, radar)
    return simulate_returns(centres, amps, radar, wavelength)

