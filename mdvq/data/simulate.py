"""Embedded physics micro-Doppler simulator (DESIGN.md section 3): skeleton -> radar returns.

A CW (slow-time) radar at `radar_pos` sees a body made of ellipsoid scatterers on a human
skeleton (head, torso, upper arms, forearms, thighs, shins, feet). Scatterer k returns
`a_k(t) / R_k(t)^2 * exp(-j 4 pi R_k(t) / lambda)`, with `a_k = sqrt(sigma_k)` from the
aspect-dependent RCS of an ellipsoid (the formula in V. C. Chen's code, after Mahafza) and
`R_k` the range in metres; static clutter and complex white noise at a chosen SNR are added.
Walking follows the Boulic-Thalmann global human walking model as in Chen's *The
Micro-Doppler Effect in Radar* code (leg length `Ht = 0.491 H`, `rv = v / Ht`, cycle
duration `Dc = 1.346 / sqrt(rv)` s, support `Ds = 0.752 Dc - 0.143` s, joint angles as
periodic PCHIP interpolations through the published control points). Other activities
animate the same skeleton with keyframed joint / trunk angle curves (falls: an inverted
pendulum about the ankles). Optional non-human classes: `rotor` (rotating blades) and
`bird` (flapping wings).

Frames: the body frame has x forward, y to the body's left, z up, metres, ground at z=0;
the world frame has the radar at `(0, 0, radar_height_m)`. Doppler is positive for
approaching targets. Everything is deterministic from `(seed, example index)`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import cumulative_trapezoid
from scipy.interpolate import CubicHermiteSpline, PchipInterpolator
from scipy.ndimage import gaussian_filter1d

from mdvq.data.dataset import SpectrogramSet, load_or_build
from mdvq.data.spectrogram import SPEED_OF_LIGHT, STFTConfig, compute_spectrogram, stft_magnitude

#: Bump when a code change alters generated data: it is part of the cache key.
SIMULATOR_VERSION = 1

HUMAN_CLASSES = ("walking", "sitting_down", "standing_up", "picking_up", "drinking", "falling")
EXTRA_CLASSES = ("rotor", "bird")
VALID_CLASSES = HUMAN_CLASSES + EXTRA_CLASSES
DEFAULT_CLASSES = list(HUMAN_CLASSES)

#: Native spectrogram: 129 Doppler bins over +-250 Hz (+-6.5 m/s at 5.8 GHz) x 120 frames of
#: 3 s (0.128 s Hann windows, 24 ms hop). Sitting, standing, picking up and drinking stay
#: within about +-60 Hz and falls within about +-120 Hz; the foot tips of the fastest walks
#: (up to ~8 m/s) go past 250 Hz and are cropped, as in +-6 m/s displays of recorded data.
DEFAULT_STFT = STFTConfig(window="hann", nperseg=128, noverlap=104, nfft=256,
                          dynamic_range_db=60.0, max_doppler_hz=250.0)

GRAVITY = 9.81  # m/s^2

#: Segment lengths as fractions of body height H (Boulic / Chen).
SEGMENT_FRACTIONS = {
    "thigh": 0.245, "shin": 0.246, "upper_arm": 0.188, "forearm": 0.152, "foot": 0.143,
    "torso": 0.288, "head": 0.130, "shoulder_width": 0.259, "hip_width": 0.191,
}
#: Ellipsoid equatorial semi-axes (m) of each segment for a 1.8 m person (Chen's values).
SEGMENT_RADII_1M8 = {
    "head": 0.10, "torso": 0.15, "upper_arm": 0.06, "forearm": 0.05,
    "thigh": 0.07, "shin": 0.06, "foot": 0.05,
}
#: (segment name, proximal joint, distal joint, radius key): the 12 body scatterers.
BODY_SEGMENTS = (
    ("head", "neck", "head_top", "head"),
    ("torso", "pelvis", "neck", "torso"),
    ("upper_arm_l", "shoulder_l", "elbow_l", "upper_arm"),
    ("upper_arm_r", "shoulder_r", "elbow_r", "upper_arm"),
    ("forearm_l", "elbow_l", "hand_l", "forearm"),
    ("forearm_r", "elbow_r", "hand_r", "forearm"),
    ("thigh_l", "hip_l", "knee_l", "thigh"),
    ("thigh_r", "hip_r", "knee_r", "thigh"),
    ("shin_l", "knee_l", "ankle_l", "shin"),
    ("shin_r", "knee_r", "ankle_r", "shin"),
    ("foot_l", "ankle_l", "toe_l", "foot"),
    ("foot_r", "ankle_r", "toe_r", "foot"),
)

#: Bound on a walk's peak limb (toe) speed as a multiple of the walking speed, for the PRF
#: check: measured on this model 3.8-5.6 (largest for slow walks), about 4 at 2 m/s.
LIMB_SPEED_FACTOR = 4.5

#: Activity durations in seconds (lo, hi); a subject's tempo picks where in the range.
ACTIVITY_DURATION_S = {
    "sitting_down": (1.3, 2.3), "standing_up": (1.2, 2.1), "picking_up": (1.5, 2.6),
    "drinking": (1.8, 2.8),
}


# --------------------------------------------------------------------------------------------
# Physics primitives
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Rotations, vectorised over time with time last: angle arrays (N,) -> (3, 3, N)
# (stacks of small matrices multiply ~2x (matrix) / ~10x (vector) faster this way than (N, 3, 3))
# --------------------------------------------------------------------------------------------

def _rotation(a: np.ndarray, axis: int) -> np.ndarray:
    """Right-handed rotations `(3, 3, N)` about body axis 0 (x), 1 (y) or 2 (z) by a [rad]."""
    a = np.asarray(a, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    r = np.zeros((3, 3) + a.shape)
    i, j = [k for k in range(3) if k != axis]
    r[axis, axis] = 1.0
    r[i, i] = r[j, j] = c
    r[i, j], r[j, i] = (-s, s) if axis != 1 else (s, -s)
    return r


def _pitch(a: np.ndarray) -> np.ndarray:
    """Rotation `(3, 3, N)` about the lateral axis that swings a *downward* vector forward by a.

    `[0, 0, -1] -> [sin a, 0, -cos a]` (Chen's y rotation); an upward vector tips backward.
    """
    return _rotation(-np.asarray(a, dtype=np.float64), 1)


def _roll(a: np.ndarray) -> np.ndarray:
    """Rotation `(3, 3, N)` about the forward (x) axis by a [rad] (right-handed)."""
    return _rotation(a, 0)


def _yaw(a: np.ndarray) -> np.ndarray:
    """Rotation `(3, 3, N)` about the vertical (z) axis by a [rad] (right-handed, x towards y)."""
    return _rotation(a, 2)


def _mm(*mats: np.ndarray) -> np.ndarray:
    """Product of rotation stacks `(3, 3, N)`, left to right."""
    out = mats[0]
    for m in mats[1:]:
        out = np.einsum("ijn,jkn->ikn", out, m)
    return out


def _mv(r: np.ndarray, v) -> np.ndarray:
    """Rotation stack `(3, 3, N)` times a fixed vector `(3,)` -> `(3, N)`."""
    return np.einsum("ijn,j->in", r, np.asarray(v, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# Skeleton
# --------------------------------------------------------------------------------------------

def body_dimensions(height: float) -> dict[str, float]:
    """Segment lengths [m] of a person of `height` [m]; key "leg" is `Ht = thigh + shin`."""
    if not 0.5 <= height <= 2.5:
        raise ValueError(f"height must lie in [0.5, 2.5] m, got {height}")
    dims = {k: f * height for k, f in SEGMENT_FRACTIONS.items()}
    dims["leg"] = dims["thigh"] + dims["shin"]
    return dims


@dataclass
class Pose:
    """A skeleton pose over N time samples, in the body frame.

    pelvis: `(N, 3)` metres, the base of the spine (midpoint of the hips).
    angles: joint / trunk angles in radians, each `(N,)` (a missing name means 0):
      pelvis_roll, pelvis_twist, trunk_lean (+ forward), trunk_roll, trunk_twist,
      hip_{l,r} (flexion, + thigh forward), knee_{l,r} (flexion >= 0), ankle_{l,r}
      (+ toes up), shoulder_{l,r} (flexion, + arm forward), abduct_{l,r} (+ arm outward),
      elbow_{l,r} (flexion >= 0), body_pitch (+ whole body tips forward about `pivot`).
    pivot: `(3,)` body-frame point [m] the whole-body pitch rotates about (e.g. the ankles).
    """

    pelvis: np.ndarray
    angles: dict[str, np.ndarray] = field(default_factory=dict)
    pivot: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def angle(self, name: str) -> np.ndarray:
        """The named angle (N,) in radians; zeros if not set."""
        a = self.angles.get(name)
        return np.zeros(len(self.pelvis)) if a is None else a


def skeleton_joints(pose: Pose, height: float) -> dict[str, np.ndarray]:
    """Forward kinematics: joint positions `(N, 3)` [m] in the body frame for `pose`.

    Joints: pelvis, neck, head_top, shoulder/elbow/hand_{l,r}, hip/knee/ankle/toe_{l,r}.
    The lower body hangs from the pelvis (rotated by pelvis roll/twist), the upper body from
    the trunk (lean/roll/twist); the foot points forward from the ankle as in Chen's model.
    """
    d = body_dimensions(height)
    p = np.asarray(pose.pelvis, dtype=np.float64).T  # (3, N) inside, (N, 3) out
    a = pose.angle
    r_pelvis = _mm(_yaw(a("pelvis_twist")), _roll(a("pelvis_roll")))
    r_trunk = _mm(_yaw(a("trunk_twist")), _pitch(-a("trunk_lean")), _roll(a("trunk_roll")))
    j = {"pelvis": p,
         "neck": p + _mv(r_trunk, [0.0, 0.0, d["torso"]]),
         "head_top": p + _mv(r_trunk, [0.0, 0.0, d["torso"] + d["head"]])}
    for side, sgn in (("l", 1.0), ("r", -1.0)):
        hip = p + _mv(r_pelvis, [0.0, sgn * d["hip_width"] / 2, 0.0])
        r_thigh = _mm(r_pelvis, _pitch(a(f"hip_{side}")))
        knee = hip + _mv(r_thigh, [0.0, 0.0, -d["thigh"]])
        r_shin = _mm(r_thigh, _pitch(-a(f"knee_{side}")))
        ankle = knee + _mv(r_shin, [0.0, 0.0, -d["shin"]])
        toe = ankle + _mv(_mm(r_shin, _pitch(a(f"ankle_{side}"))), [d["foot"], 0.0, 0.0])
        shoulder = p + _mv(r_trunk, [0.0, sgn * d["shoulder_width"] / 2, d["torso"]])
        r_upper = _mm(r_trunk, _pitch(a(f"shoulder_{side}")), _roll(sgn * a(f"abduct_{side}")))
        elbow = shoulder + _mv(r_upper, [0.0, 0.0, -d["upper_arm"]])
        hand = elbow + _mv(_mm(r_upper, _pitch(a(f"elbow_{side}"))), [0.0, 0.0, -d["forearm"]])
        j.update({f"hip_{side}": hip, f"knee_{side}": knee, f"ankle_{side}": ankle,
                  f"toe_{side}": toe, f"shoulder_{side}": shoulder, f"elbow_{side}": elbow,
                  f"hand_{side}": hand})
    pitch = a("body_pitch")
    if np.any(pitch != 0):
        rot = _pitch(-pitch)  # tips upward vectors forward
        piv = np.asarray(pose.pivot, dtype=np.float64)[:, None]
        j = {k: piv + np.einsum("ijn,jn->in", rot, v - piv) for k, v in j.items()}
    return {k: v.T for k, v in j.items()}


def body_scatterers(joints: dict[str, np.ndarray], height: float):
    """The 12 segment ellipsoids of a skeleton.

    Returns `(centres (K, N, 3) m, axes (K, N, 3) unit vectors along each segment,
    semi_axes (K, 3) m as (a, b, c))`, K = len(BODY_SEGMENTS); radii scale with height / 1.8.
    """
    d = body_dimensions(height)
    centres, axes, semi = [], [], []
    for _name, j0, j1, key in BODY_SEGMENTS:
        p0, p1 = joints[j0], joints[j1]
        v = p1 - p0
        axes.append(v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9))
        centres.append(0.5 * (p0 + p1))
        r = SEGMENT_RADII_1M8[key] * height / 1.8
        semi.append((r, r, d[key] / 2))
    return np.stack(centres), np.stack(axes), np.asarray(semi)


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


def to_world(points: np.ndarray, start_xy: Sequence[float], heading_rad: float) -> np.ndarray:
    """Body-frame points `(..., 3)` -> world frame: rotate by `heading_rad` about z, then shift
    the body origin to `(start_xy[0], start_xy[1], 0)`."""
    c, s = math.cos(heading_rad), math.sin(heading_rad)
    x, y = points[..., 0], points[..., 1]
    return np.stack([start_xy[0] + c * x - s * y, start_xy[1] + s * x + c * y, points[..., 2]], -1)


def human_returns(pose: Pose, height: float, range_m: float, aspect_deg: float,
                  wavelength: float, radar_height_m: float = 1.0) -> np.ndarray:
    """Complex returns `(N,)` of a human whose body-frame origin starts `range_m` [m] from the
    radar (horizontally, on the world x axis), with its forward axis `aspect_deg` [deg] off the
    direction towards the radar (0 = facing / walking straight at the radar, 180 = away)."""
    joints = skeleton_joints(pose, height)
    centres, axes, semi = body_scatterers(joints, height)
    heading = math.pi + math.radians(aspect_deg)
    centres = to_world(centres, (range_m, 0.0), heading)
    axes = to_world(axes, (0.0, 0.0), heading)
    radar = np.array([0.0, 0.0, radar_height_m])
    amps = ellipsoid_amplitudes(centres, axes, semi, radar)
    return simulate_returns(centres, amps, radar, wavelength)


# --------------------------------------------------------------------------------------------
# Walking: Boulic-Thalmann global human walking model (as in Chen's code)
# --------------------------------------------------------------------------------------------

def _periodic_pchip(xs, ys, u: np.ndarray) -> np.ndarray:
    """Periodic (period 1) PCHIP interpolation through control points (xs, ys) at u in [0, 1)."""
    x = np.mod(np.asarray(xs, dtype=np.float64), 1.0)
    y = np.asarray(ys, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    keep = np.concatenate([[True], np.diff(x) > 1e-6])
    x, y = x[keep], y[keep]
    xx = np.concatenate([x - 1.0, x, x + 1.0])
    return PchipInterpolator(xx, np.tile(y, 3))(u)


def walking_cycle(height: float, speed: float) -> dict[str, float]:
    """Boulic cycle quantities for a walk at `speed` [m/s] by a person of `height` [m].

    Returns Ht [m] (leg length 0.491 H), rv [1/s] (= v / Ht), cycle_length [m]
    (1.346 sqrt(rv) Ht), cycle_s (Dc = 1.346 / sqrt(rv) s), support_s (Ds = 0.752 Dc - 0.143 s)
    and gait ("a" rv < 0.5, "b" rv < 1.3, "c" rv <= 3). Raises ValueError outside 0 < rv <= 3.
    """
    ht = body_dimensions(height)["leg"]
    rv = speed / ht
    if not 0 < rv <= 3.0:
        raise ValueError(
            f"walking speed {speed} m/s at height {height} m gives relative velocity "
            f"rv = v / Ht = {rv:.2f}; the Boulic model covers 0 < rv <= 3"
        )
    dc = 1.346 / math.sqrt(rv)
    gait = "a" if rv < 0.5 else ("b" if rv < 1.3 else "c")
    return {"Ht": ht, "rv": rv, "cycle_length": 1.346 * math.sqrt(rv) * ht, "cycle_s": dc,
            "support_s": 0.752 * dc - 0.143, "gait": gait}


def _walking_angles_deg(u: np.ndarray, rv: float, dsmod: float, gait: str) -> dict[str, np.ndarray]:
    """Boulic joint-angle trajectories [deg] of the right side at cycle phase u in [0, 1)."""
    k = (rv - 1.3) / 1.7  # 0 at the start of gait "c", 1 at rv = 3
    if gait == "a":
        hip = ([-0.1, 0.5, 0.9], [50 * rv, -30 * rv, 50 * rv])
        knee = ([0.17, 0.4, 0.75, 1.0], [3, 3, 140 * rv, 3])
        ankle = ([0, 0.08, 0.5, dsmod, 0.85], [-3, -30 * rv - 3, 22 * rv - 3, -34 * rv - 3, -3])
        elbow = ([0.05, 0.5, 0.9], [6 * rv + 3, 34 * rv + 3, 10 * rv + 3])
    elif gait == "b":
        kb = (rv - 0.5) / 0.8
        hip = ([-0.1, 0.5, 0.9], [25, -15, 25])
        knee = ([0.17, 0.4, 0.75, 1.0], [3, 3, 70, 3])
        ankle = ([0, 0.08, 0.5, dsmod, 0.85], [-3, -18, 8, -20, -3])
        elbow = ([0.05, 0.01 * kb + 0.5, 0.9], [8 * kb + 6, 24 * kb + 20, 9 * kb + 8])
    else:
        hip = ([0.2 * k - 0.1, 0.5, 0.9], [5 * k + 25, -15, 6 * k + 25])
        knee = ([-0.05 * k + 0.17, 0.4, -0.05 * k + 0.75, -0.03 * k + 1.0],
                [22 * k + 3, 3, -5 * k + 70, 3 * k + 3])
        ankle = ([0, 0.08, -0.1 * k + 0.5, dsmod, 0.85],
                 [5 * k - 3, 4 * k - 18, -3 * k + 8, -8 * k - 20, 5 * k - 3])
        elbow = ([0.05, 0.04 * k + 0.51, -0.1 * k + 0.9], [-6 * k + 14, 26 * k + 44, -6 * k + 17])
    thorax = ([0.1, 0.4, 0.6, 0.9], [4 / 3 * rv, -4.5 / 3 * rv, -4 / 3 * rv, 4.5 / 3 * rv])
    ash = 9.88 * rv
    return {
        "hip": _periodic_pchip(*hip, u),
        "knee": _periodic_pchip(*knee, u),
        "ankle": _periodic_pchip(*ankle, u),
        "elbow": _periodic_pchip(*elbow, u),
        "thorax": _periodic_pchip(*thorax, u),
        "shoulder": 3.0 - ash / 2 - ash * np.cos(2 * np.pi * u),
    }


def walking_pose(t: np.ndarray, height: float, speed: float, start_phase: float = 0.0,
                 arm_swing: float = 1.0) -> Pose:
    """Body-frame pose of a steady walk (Boulic-Thalmann) at times `t` [s].

    speed [m/s] along +x; start_phase in cycles [0, 1) (0 = right heel strike); arm_swing
    scales the shoulder swing amplitude (1 = Boulic). Translations are the model's
    oscillations (relative to Ht) on top of the steady progression `speed * t`.
    """
    t = np.asarray(t, dtype=np.float64)
    cyc = walking_cycle(height, speed)
    ht, rv, gait = cyc["Ht"], cyc["rv"], cyc["gait"]
    dsmod = cyc["support_s"] / cyc["cycle_s"]
    u = np.mod(t / cyc["cycle_s"] + start_phase, 1.0)
    # pelvis translations (Appendix A), relative to Ht
    av = 0.015 * rv
    vert = -av + av * np.sin(2 * np.pi * (2 * u - 0.35))
    al = -0.128 * rv**2 + 0.128 * rv if gait == "a" else -0.032
    lat = al * np.sin(2 * np.pi * (u - 0.1))
    aa = -0.084 * rv**2 + 0.084 * rv if gait == "a" else -0.021
    fwd = aa * np.sin(2 * np.pi * (2 * u + 2 * (0.625 - dsmod)))
    # pelvis and trunk rotations (Appendix B) [deg]
    a1 = -8 * rv**2 + 8 * rv if gait == "a" else 2.0
    rot_forback = -a1 + a1 * np.sin(2 * np.pi * (2 * u - 0.1))
    a2 = 0.01 * rv
    rot_lr = np.select(
        [u < 0.15, u < 0.5, u < 0.65],
        [-a2 + a2 * np.cos(2 * np.pi * 10 * u / 3),
         -a2 - a2 * np.cos(2 * np.pi * 10 * (u - 0.15) / 7),
         a2 - a2 * np.cos(2 * np.pi * 10 * (u - 0.5) / 3)],
        a2 + a2 * np.cos(2 * np.pi * 10 * (u - 0.65) / 7))
    torsion = -4 * rv * np.cos(2 * np.pi * u)
    right = _walking_angles_deg(u, rv, dsmod, gait)
    left = _walking_angles_deg(np.mod(u + 0.5, 1.0), rv, dsmod, gait)
    ang = {"pelvis_roll": rot_lr, "pelvis_twist": -torsion, "trunk_lean": -rot_forback,
           "trunk_twist": -right["thorax"]}
    for side, src in (("r", right), ("l", left)):
        ang[f"hip_{side}"] = src["hip"]
        ang[f"knee_{side}"] = src["knee"]
        ang[f"ankle_{side}"] = src["ankle"]
        ang[f"elbow_{side}"] = src["elbow"]
        ang[f"shoulder_{side}"] = arm_swing * src["shoulder"]
    pelvis = np.stack([speed * t + ht * fwd, ht * lat, ht * (1.0 + vert)], -1)
    return Pose(pelvis=pelvis, angles={k: np.radians(v) for k, v in ang.items()})


# --------------------------------------------------------------------------------------------
# Other human activities: keyframed joint-angle curves on the same skeleton
# --------------------------------------------------------------------------------------------

def _keyframes(u: np.ndarray, knots: Sequence[float], values: Sequence[float]) -> np.ndarray:
    """Smooth curve through keyframes (knots ascending), held constant outside them.

    Monotone piecewise-cubic (PCHIP slopes) with zero slope at the first and last knot, so a
    movement starts and stops without a velocity jump (no broadband Doppler lines).
    """
    x, y = np.asarray(knots, dtype=np.float64), np.asarray(values, dtype=np.float64)
    slopes = PchipInterpolator(x, y).derivative()(x)
    slopes[0] = slopes[-1] = 0.0
    return CubicHermiteSpline(x, y, slopes)(np.clip(u, x[0], x[-1]))


def _jitter_knots(knots: Sequence[float], rng: np.random.Generator, amount: float = 0.03):
    """Interior keyframe times moved by up to +-amount, kept ascending (ends stay 0 and 1)."""
    k = np.asarray(knots, dtype=np.float64).copy()
    k[1:-1] += rng.uniform(-amount, amount, len(k) - 2)
    k[1:-1] = np.clip(np.sort(k[1:-1]), 0.02, 0.98)
    for i in range(1, len(k)):  # strictly ascending
        k[i] = max(k[i], k[i - 1] + 1e-3)
    return k


def _planted_pelvis(height: float, knee: np.ndarray, shin_tilt: np.ndarray) -> np.ndarray:
    """Pelvis position `(N, 3)` with both ankles fixed at the body origin on the ground.

    knee: knee flexion [rad]; shin_tilt: forward tilt of the shin [rad] (knee ahead of ankle).
    The thigh angle is then `knee - shin_tilt` and the foot stays flat (ankle = shin_tilt).
    """
    d = body_dimensions(height)
    a_shin, a_thigh = -shin_tilt, knee - shin_tilt  # forward swing of the downward vectors
    x = -d["shin"] * np.sin(a_shin) - d["thigh"] * np.sin(a_thigh)
    z = d["shin"] * np.cos(a_shin) + d["thigh"] * np.cos(a_thigh)
    return np.stack([x, np.zeros_like(x), z], -1)


def _planted_pose(height: float, curves_deg: dict[str, np.ndarray]) -> Pose:
    """Pose from keyframed curves [deg] with the feet planted: "knee", "shin_tilt" (both legs),
    and any Pose angle names (trunk_lean, shoulder_l, elbow_r, ...)."""
    c = {k: np.radians(v) for k, v in curves_deg.items()}
    knee, tilt = c.pop("knee"), c.pop("shin_tilt")
    ang = dict(c)
    for side in ("l", "r"):
        ang[f"knee_{side}"] = knee
        ang[f"hip_{side}"] = knee - tilt
        ang[f"ankle_{side}"] = tilt
    return Pose(pelvis=_planted_pelvis(height, knee, tilt), angles=ang)


def _idle_sway(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small postural sway of the trunk [deg]: two slow sinusoids (< 1 deg, 0.1-0.5 Hz)."""
    f = rng.uniform(0.1, 0.5, 2)
    ph = rng.uniform(0, 2 * np.pi, 2)
    amp = rng.uniform(0.2, 0.6, 2)
    return (amp[0] * np.sin(2 * np.pi * f[0] * t + ph[0])
            + amp[1] * np.sin(2 * np.pi * f[1] * t + ph[1]))


def sitting_down_curves(u: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sit down on a chair: lean forward, hips back and down to knee ~90 deg, sit back [deg]."""
    ks, lm, le = rng.uniform(80, 100), rng.uniform(25, 45), rng.uniform(5, 15)
    sm, em = rng.uniform(10, 35), rng.uniform(20, 45)
    kn = _jitter_knots([0, 0.15, 0.45, 0.8, 1.0], rng)
    return {"knee": _keyframes(u, kn, [0, 3, 0.55 * ks, ks, ks]),
            "shin_tilt": _keyframes(u, kn, [0, 2, 8, 2, 0]),
            "trunk_lean": _keyframes(u, kn, [0, 10, lm, 15, le]),
            "shoulder_l": _keyframes(u, kn, [0, 5, sm, 15, 10]),
            "shoulder_r": _keyframes(u, kn, [0, 5, sm, 15, 10]),
            "elbow_l": _keyframes(u, kn, [5, 10, em, 45, 60]),
            "elbow_r": _keyframes(u, kn, [5, 10, em, 45, 60])}


def standing_up_curves(u: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Stand up from a chair: lean forward over the feet, then extend hips/knees [deg]."""
    ks, lm, le = rng.uniform(80, 100), rng.uniform(30, 50), rng.uniform(5, 15)
    sm = rng.uniform(15, 35)
    kn = _jitter_knots([0, 0.3, 0.55, 0.85, 1.0], rng)
    return {"knee": _keyframes(u, kn, [ks, ks - 5, 0.6 * ks, 8, 0]),
            "shin_tilt": _keyframes(u, kn, [0, 6, 8, 2, 0]),
            "trunk_lean": _keyframes(u, kn, [le, lm, 0.7 * lm, 8, 0]),
            "shoulder_l": _keyframes(u, kn, [10, sm, 20, 5, 0]),
            "shoulder_r": _keyframes(u, kn, [10, sm, 20, 5, 0]),
            "elbow_l": _keyframes(u, kn, [60, 40, 20, 8, 5]),
            "elbow_r": _keyframes(u, kn, [60, 40, 20, 8, 5])}


def picking_up_curves(u: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bend to the floor (stoop .. squat), grasp, and straighten up again [deg]."""
    s = rng.uniform(0, 1)  # 0 = stoop (straight legs, deep trunk bend), 1 = squat
    km, tm, lm = 25 + 75 * s, 8 + 25 * s, 88 - 45 * s
    one = rng.uniform() < 0.5  # one-handed or two-handed reach
    kn = _jitter_knots([0, 0.38, 0.5, 0.62, 1.0], rng)
    reach = [0, lm + 10, lm + 16, lm + 10, 0]
    other = [0, 0.4 * lm, 0.4 * lm, 0.4 * lm, 0] if one else reach
    return {"knee": _keyframes(u, kn, [0, km, km + 5, km, 0]),
            "shin_tilt": _keyframes(u, kn, [0, tm, tm + 2, tm, 0]),
            "trunk_lean": _keyframes(u, kn, [0, lm, lm - 3, lm, 0]),
            "shoulder_r": _keyframes(u, kn, reach),
            "shoulder_l": _keyframes(u, kn, other),
            "elbow_r": _keyframes(u, kn, [5, 10, 20, 10, 5]),
            "elbow_l": _keyframes(u, kn, [5, 10, 15, 10, 5])}


def drinking_curves(u: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Raise a cup to the mouth, hold (sip), lower it again; standing [deg]."""
    side = "r" if rng.uniform() < 0.7 else "l"
    other = "l" if side == "r" else "r"
    sh, el = rng.uniform(25, 45), rng.uniform(120, 145)
    kn = _jitter_knots([0, 0.3, 0.4, 0.6, 0.7, 1.0], rng, 0.02)
    z = np.zeros_like(u)
    return {"knee": z, "shin_tilt": z,
            f"shoulder_{side}": _keyframes(u, kn, [0, sh, sh + 4, sh + 4, sh, 0]),
            f"elbow_{side}": _keyframes(u, kn, [5, el, el + 3, el + 3, el - 5, 5]),
            f"abduct_{side}": _keyframes(u, kn, [0, -10, -12, -12, -10, 0]),
            "trunk_lean": _keyframes(u, kn, [0, 0, -5, -5, 0, 0]),
            f"shoulder_{other}": z + 2.0, f"elbow_{other}": z + 8.0}


ACTIVITY_CURVES = {"sitting_down": sitting_down_curves, "standing_up": standing_up_curves,
                   "picking_up": picking_up_curves, "drinking": drinking_curves}


def activity_pose(activity: str, t: np.ndarray, height: float, start_s: float,
                  duration_s: float, rng: np.random.Generator) -> Pose:
    """Body-frame pose of a keyframed activity (sitting_down, standing_up, picking_up,
    drinking) that runs from `start_s` for `duration_s` seconds; still (with postural sway)
    before and after. Keyframe values and timing are drawn from `rng`."""
    if activity not in ACTIVITY_CURVES:
        raise ValueError(f"activity must be one of {sorted(ACTIVITY_CURVES)}, got {activity!r}")
    t = np.asarray(t, dtype=np.float64)
    u = (t - start_s) / duration_s
    curves = ACTIVITY_CURVES[activity](u, rng)
    curves["trunk_lean"] = curves.get("trunk_lean", np.zeros_like(t)) + _idle_sway(t, rng)
    return _planted_pose(height, curves)


def fall_angle(t_rel: np.ndarray, height: float, theta0: float, omega0: float,
               theta_end: float) -> tuple[np.ndarray, float]:
    """Forward tip angle [rad] of a falling body, an inverted uniform rod of length `height`
    pivoting at the feet: `omega^2 = omega0^2 + 3 g / H (cos theta0 - cos theta)`.

    A loss-of-balance phase of `2 theta0 / omega0` s accelerates uniformly from rest to
    (theta0, omega0); t_rel = 0 is its start. Returns (angle (N,), time of impact [s]).
    """
    t_pre = 2 * theta0 / omega0
    th = np.linspace(theta0, theta_end, 400)
    w = np.sqrt(omega0**2 + 3 * GRAVITY / height * (math.cos(theta0) - np.cos(th)))
    tt = t_pre + cumulative_trapezoid(1.0 / w, th, initial=0.0)
    ang = np.interp(t_rel, tt, th)
    pre = t_rel < t_pre
    ang[pre] = theta0 * (np.clip(t_rel[pre], 0, None) / t_pre) ** 2
    return ang, float(tt[-1])


def falling_pose(t: np.ndarray, height: float, start_s: float, rng: np.random.Generator,
                 ) -> tuple[Pose, float]:
    """Forward fall from standing: the body tips about the ankles to the floor (pendulum),
    knees buckle, arms reach forward, a small rebound at impact, then lying still.

    Returns (pose, fall duration [s] from the loss of balance to impact).
    """
    t = np.asarray(t, dtype=np.float64)
    theta0, omega0 = math.radians(rng.uniform(2, 6)), rng.uniform(0.3, 0.8)
    km, lm, sm = rng.uniform(10, 40), rng.uniform(5, 30), rng.uniform(150, 180)
    theta_end = math.radians(rng.uniform(82, 90) - 0.3 * lm)  # trunk ends ~ flat on the floor
    eff_len = height * rng.uniform(0.85, 1.1)
    pitch, t_fall = fall_angle(t - start_s, eff_len, theta0, omega0, theta_end)
    after = np.clip(t - start_s - t_fall, 0, None)
    bounce = math.radians(rng.uniform(0.5, 1.5)) * np.exp(-after / 0.15) * np.sin(
        2 * np.pi * rng.uniform(2, 4) * after)
    # the floor (a mat) stops the body over ~0.1 s rather than instantly
    dt = float(t[1] - t[0]) if len(t) > 1 else 1.0
    pitch = gaussian_filter1d(pitch - bounce, rng.uniform(0.02, 0.04) / dt, mode="nearest")
    u = (t - start_s) / t_fall
    kn = [0, 0.3, 0.7, 1.0]
    curves = {"knee": _keyframes(u, kn, [0, 0.2 * km, 0.7 * km, km]),
              "shin_tilt": _keyframes(u, kn, [0, 0.2 * km, 0.5 * km, 0.6 * km]),
              "trunk_lean": _keyframes(u, kn, [0, 0.5 * lm, lm, 0.3 * lm]) + _idle_sway(t, rng),
              "shoulder_l": _keyframes(u, kn, [0, 20, 0.7 * sm, sm]),
              "shoulder_r": _keyframes(u, kn, [0, 25, 0.75 * sm, sm]),
              "elbow_l": _keyframes(u, kn, [8, 15, 30, 20]),
              "elbow_r": _keyframes(u, kn, [8, 15, 30, 20])}
    pose = _planted_pose(height, curves)
    pose.angles["body_pitch"] = pitch
    pose.pivot = np.zeros(3)
    return pose, t_fall


# --------------------------------------------------------------------------------------------
# Non-human extras
# --------------------------------------------------------------------------------------------

def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def rotor_returns(t, rng, wavelength: float, prf_hz: float, range_m: float,
                  radar_height_m: float) -> np.ndarray:
    """Returns `(N,)` of a slowly turning rotor (a fan / small turbine: 2-4 blades of radius
    0.6-1.2 m) whose blade tips reach a Doppler of 0.1-0.22 x PRF (below Nyquist); each blade
    is 8 points plus a hub. Its rotation period is long against an STFT window, so the
    spectrogram shows the blades' sinusoidal traces and flashes."""
    nb, r = int(rng.integers(2, 5)), rng.uniform(0.6, 1.2)
    tip_hz = rng.uniform(0.1, 0.22) * prf_hz
    f_rot = tip_hz * wavelength / (4 * np.pi * r) * rng.choice([-1.0, 1.0])  # rev/s
    centre = np.array([range_m, 0.0, rng.uniform(1.5, 3.0)])
    normal = _unit(np.array([rng.normal(0, 0.3), 1.0, rng.normal(0, 0.3)]))  # plane ~ contains LOS
    e1 = _unit(np.cross(normal, [0.0, 0.0, 1.0]))
    e2 = np.cross(normal, e1)
    radii = r * (np.arange(8) + 0.5) / 8
    ang = 2 * np.pi * (f_rot * t[None, :] + np.arange(nb)[:, None] / nb + rng.uniform())
    d = np.cos(ang)[..., None] * e1 + np.sin(ang)[..., None] * e2  # (nb, N, 3)
    pts = centre + radii[None, :, None, None] * d[:, None]  # (nb, 8, N, 3)
    pts = np.concatenate([pts.reshape(-1, len(t), 3), np.broadcast_to(centre, (1, len(t), 3))])
    amps = np.full(len(pts), 0.05)
    amps[-1] = 0.15
    return simulate_returns(pts, amps[:, None], np.array([0.0, 0.0, radar_height_m]), wavelength)


def bird_returns(t, rng, wavelength: float, range_m: float, aspect_deg: float,
                 radar_height_m: float) -> np.ndarray:
    """Returns `(N,)` of a bird flying at 2-6 m/s, flapping at 3-8 Hz (+-30..50 deg) with a
    half span of 0.15-0.35 m (5 points per wing plus the body)."""
    v, f, amp = rng.uniform(2, 6), rng.uniform(3, 8), np.radians(rng.uniform(30, 50))
    span, alt = rng.uniform(0.15, 0.35), rng.uniform(2.0, 5.0)
    flap = amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    body = np.stack([v * t, np.zeros_like(t), alt + 0.02 * np.sin(2 * np.pi * f * t)], -1)
    s = span * (np.arange(5) + 1) / 5
    pts = [body[None]]
    for sgn in (1.0, -1.0):
        wing = np.stack([np.zeros_like(flap) - 0.05 * np.sin(flap),
                         sgn * np.cos(flap), np.sin(flap)], -1)  # (N, 3) unit-ish
        pts.append(body[None] + s[:, None, None] * wing[None])
    pts = np.concatenate(pts)
    towards = abs(aspect_deg) < 90
    start = range_m + (v * t[-1] * math.cos(math.radians(aspect_deg)) if towards else 0.0)
    world = to_world(pts, (start, 0.0), math.pi + math.radians(aspect_deg))
    amps = np.full(len(pts), 0.04)
    amps[0] = 0.1
    return simulate_returns(world, amps[:, None], np.array([0.0, 0.0, radar_height_m]), wavelength)


# --------------------------------------------------------------------------------------------
# Data set configuration, per-example randomisation
# --------------------------------------------------------------------------------------------

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
    """Everything that determines the simulated set (validated; see RadarSimulatorSource)."""

    classes: tuple[str, ...] = tuple(DEFAULT_CLASSES)
    num_per_class: int = 500
    num_subjects: int = 30
    seed: int = 0
    carrier_hz: float = 5.8e9
    prf_hz: float = 1000.0
    duration_s: float = 3.0
    snr_db: tuple[float, float] = (15.0, 35.0)
    clutter_db: tuple[float, float] = (-5.0, 5.0)
    num_clutter: int = 4
    height_m: tuple[float, float] = (1.5, 1.95)
    walk_speed_mps: tuple[float, float] = (0.8, 2.0)
    aspect_deg: tuple[float, float] = (-60.0, 60.0)
    away_prob: float = 0.5
    range_m: tuple[float, float] = (2.0, 6.0)
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
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, index]))
    activity = cfg.class_of(index)
    subject = make_subject(cfg, cfg.subject_of(index))
    n, lam, T = cfg.num_samples, cfg.wavelength, cfg.duration_s
    t = np.arange(n) / cfg.prf_hz
    away = rng.uniform() < cfg.away_prob
    aspect = float(rng.uniform(*cfg.aspect_deg)) + (180.0 if away else 0.0)
    rng_m = float(rng.uniform(*cfg.range_m))
    info = {"index": index, "class": activity, "subject": subject.id,
            "height_m": subject.height_m, "aspect_deg": aspect, "range_m": rng_m}
    h = subject.height_m
    if activity == "walking":
        v = _in_range(cfg.walk_speed_mps, subject.pace, rng)
        phase = float(rng.uniform())
        pose = walking_pose(t, h, v, phase, subject.arm_swing)
        # rng_m is the closest horizontal range: an approaching walk starts farther out
        start = rng_m + (v * T * abs(math.cos(math.radians(aspect))) if not away else 0.0)
        sig = human_returns(pose, h, start, aspect, lam, cfg.radar_height_m)
        info.update(speed_mps=v, start_phase=phase, start_range_m=start)
    elif activity == "falling":
        start_s = float(rng.uniform(0.1, max(0.1, 0.45 * T)))
        pose, t_fall = falling_pose(t, h, start_s, rng)
        sig = human_returns(pose, h, rng_m, aspect, lam, cfg.radar_height_m)
        info.update(start_s=start_s, activity_s=t_fall)
    elif activity in ACTIVITY_CURVES:
        dur = _in_range(ACTIVITY_DURATION_S[activity], 1.0 - subject.tempo, rng)
        start_s = float(rng.uniform(0.0, max(0.0, T - dur)))
        pose = activity_pose(activity, t, h, start_s, dur, rng)
        sig = human_returns(pose, h, rng_m, aspect, lam, cfg.radar_height_m)
        info.update(start_s=start_s, activity_s=dur)
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
    return iq, info


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
    Spectrograms go through `compute_spectrogram` (STFT at `prf_hz`, dB, [0,1]).

    Arguments: classes (subset of VALID_CLASSES), num_per_class, num_subjects, seed
    (non-negative), carrier_hz [Hz], prf_hz [Hz], duration_s [s], snr_db (lo, hi) [dB] of the
    target, clutter_db (lo, hi) [dB] clutter-to-target power, num_clutter (static scatterers),
    height_m, walk_speed_mps, aspect_deg ((lo, hi) deg off the radar line, in [-90, 90]),
    away_prob (probability of moving / facing away), range_m (closest horizontal range) [m],
    radar_height_m, stft (mapping or STFTConfig; defaults DEFAULT_STFT), cache_dir (None: no
    cache), progress (tqdm bar while generating).
    """

    def __init__(self, classes: Sequence[str] = tuple(DEFAULT_CLASSES), num_per_class: int = 500,
                 num_subjects: int = 30, seed: int = 0, carrier_hz: float = 5.8e9,
                 prf_hz: float = 1000.0, duration_s: float = 3.0,
                 snr_db: Sequence[float] = (15.0, 35.0), clutter_db: Sequence[float] = (-5.0, 5.0),
                 num_clutter: int = 4, height_m: Sequence[float] = (1.5, 1.95),
                 walk_speed_mps: Sequence[float] = (0.8, 2.0),
                 aspect_deg: Sequence[float] = (-60.0, 60.0), away_prob: float = 0.5,
                 range_m: Sequence[float] = (2.0, 6.0), radar_height_m: float = 1.0,
                 stft: Mapping | STFTConfig | None = None, cache_dir: str | None = None,
                 progress: bool = True):
        self.config = SimConfig(
            classes=tuple(classes) if not isinstance(classes, str) else classes,
            num_per_class=num_per_class, num_subjects=num_subjects, seed=seed,
            carrier_hz=carrier_hz, prf_hz=prf_hz, duration_s=duration_s, snr_db=snr_db,
            clutter_db=clutter_db, num_clutter=num_clutter, height_m=height_m,
            walk_speed_mps=walk_speed_mps, aspect_deg=aspect_deg, away_prob=away_prob,
            range_m=range_m, radar_height_m=radar_height_m)
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
        p["simulator_version"] = SIMULATOR_VERSION
        return p

    def native_shape(self) -> tuple[int, int]:
        """(F, T) of the spectrograms before any resizing."""
        freqs, times, _ = stft_magnitude(np.zeros(self.config.num_samples, complex),
                                         self.config.prf_hz, self.stft)
        return len(freqs), len(times)

    def spectrogram(self, index: int) -> tuple[np.ndarray, dict]:
        """Spectrogram `(F, T)` in [0,1] of example `index` and its info dict."""
        iq, info = simulate_example(self.config, index)
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
