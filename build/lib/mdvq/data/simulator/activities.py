"""Activities on the skeleton: in-place movements, the fall, and the non-human extras.

Sitting down, standing up, picking up and drinking animate the skeleton with keyframed
joint / trunk angle curves, feet planted flat on the floor. A fall tips the body above the
feet forward about the ankles (an inverted pendulum) and rests it on the floor
(`fall_joints`). Optional non-human classes: `rotor` (rotating blades) and `bird`
(flapping wings). Angles in degrees unless named `_rad`; lengths in metres; times in s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.integrate import cumulative_trapezoid
from scipy.interpolate import CubicHermiteSpline, PchipInterpolator
from scipy.ndimage import gaussian_filter1d

from mdvq.data.simulator.kinematics import Pose, body_dimensions, skeleton_joints, to_world
from mdvq.data.simulator.physics import simulate_returns

GRAVITY = 9.81  # m/s^2

#: Activity durations in seconds (lo, hi); a subject's tempo picks where in the range.
ACTIVITY_DURATION_S = {
    "sitting_down": (1.3, 2.3), "standing_up": (1.2, 2.1), "picking_up": (1.5, 2.6),
    "drinking": (1.8, 2.8),
}


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
    """Pelvis position `(N, 3)` with both ankles fixed above the body origin (heels on the floor).

    knee: knee flexion [rad]; shin_tilt: forward tilt of the shin [rad] (knee ahead of ankle).
    The thigh angle is then `knee - shin_tilt` and the foot stays flat (ankle = shin_tilt).
    """
    d = body_dimensions(height)
    a_shin, a_thigh = -shin_tilt, knee - shin_tilt  # forward swing of the downward vectors
    x = -d["shin"] * np.sin(a_shin) - d["thigh"] * np.sin(a_thigh)
    z = d["ankle_height"] + d["shin"] * np.cos(a_shin) + d["thigh"] * np.cos(a_thigh)
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


def fall_joints(t: np.ndarray, height: float, start_s: float, rng: np.random.Generator,
                ) -> tuple[dict[str, np.ndarray], float]:
    """Body-frame joint tracks `(N, 3)` [m] of a forward fall (`falling_pose`) resting on the
    floor: wherever a joint would go below the floor (knees, hands, head at impact) the whole
    body is lifted so that the lowest joint touches it, the floor taking the body's weight
    smoothly (over ~30 ms). Returns (joints, fall duration [s])."""
    t = np.asarray(t, dtype=np.float64)
    pose, t_fall = falling_pose(t, height, start_s, rng)
    j = skeleton_joints(pose, height)
    sink = np.clip(-np.min(np.stack([v[:, 2] for v in j.values()]), axis=0), 0.0, None)
    if np.any(sink > 0):
        dt = float(t[1] - t[0]) if len(t) > 1 else 1.0
        smooth = gaussian_filter1d(sink, max(1.0, 0.03 / dt), mode="nearest")
        sink = np.maximum(smooth, sink)
    lift = sink[:, None] * np.array([0.0, 0.0, 1.0])
    return {k: v + lift for k, v in j.items()}, t_fall


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

