"""Human kinematics: the skeleton, forward kinematics, the Boulic walk and ground contact.

Frames: the body frame has x forward, y to the body's left, z up, metres, floor at z=0.
The skeleton follows Boulic / Chen (segment lengths as fractions of the height H) with a
foot that stands on the floor: the ankle sits `ankle_height` above the floor, the heel
directly below it and the toe `foot` from the ankle, both on the floor when standing.
Walking follows the Boulic-Thalmann global human walking model as in Chen's *The
Micro-Doppler Effect in Radar* code (leg length `Ht = 0.491 H`, `rv = v / Ht`, cycle
duration `Dc = 1.346 / sqrt(rv)` s, support `Ds = 0.752 Dc - 0.143` s, joint angles as
periodic PCHIP interpolations through the published control points); the body's
translation comes from ground contact (`plant_feet`): the lowest heel / toe carries the
body, stays on the floor and does not slide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import gaussian_filter1d, maximum_filter1d

#: Segment lengths as fractions of body height H (Boulic / Chen); "foot" is ankle -> toe,
#: "ankle_height" the ankle joint above the floor (Winter's anthropometric table: 0.039 H).
SEGMENT_FRACTIONS = {
    "thigh": 0.245, "shin": 0.246, "upper_arm": 0.188, "forearm": 0.152, "foot": 0.143,
    "torso": 0.288, "head": 0.130, "shoulder_width": 0.259, "hip_width": 0.191,
    "ankle_height": 0.039,
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
#: The foot points that can touch the floor.
CONTACT_JOINTS = ("heel_l", "toe_l", "heel_r", "toe_r")
#: Joints of the feet (they stay on the floor when a fall tips the rest of the body).
FOOT_JOINTS = ("ankle_l", "heel_l", "toe_l", "ankle_r", "heel_r", "toe_r")


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
    """Segment lengths [m] of a person of `height` [m]; key "leg" is `Ht = thigh + shin`
    (Boulic's leg length), "hip_height" the hip above the floor when standing
    (`leg + ankle_height`)."""
    if not 0.5 <= height <= 2.5:
        raise ValueError(f"height must lie in [0.5, 2.5] m, got {height}")
    dims = {k: f * height for k, f in SEGMENT_FRACTIONS.items()}
    dims["leg"] = dims["thigh"] + dims["shin"]
    dims["hip_height"] = dims["leg"] + dims["ankle_height"]
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

    Joints: pelvis, neck, head_top, shoulder/elbow/hand_{l,r}, hip/knee/ankle/heel/toe_{l,r}.
    The lower body hangs from the pelvis (rotated by pelvis roll/twist), the upper body from
    the trunk (lean/roll/twist). The foot (rotated by the ankle angle) has its heel
    `ankle_height` below the ankle and its toe `foot` from the ankle, forward and down to the
    heel's level. `body_pitch` tips everything but the feet (FOOT_JOINTS) about `pivot`:
    the feet stay flat on the floor.
    """
    d = body_dimensions(height)
    toe_ahead = math.sqrt(d["foot"] ** 2 - d["ankle_height"] ** 2)
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
        r_foot = _mm(r_shin, _pitch(a(f"ankle_{side}")))
        heel = ankle + _mv(r_foot, [0.0, 0.0, -d["ankle_height"]])
        toe = ankle + _mv(r_foot, [toe_ahead, 0.0, -d["ankle_height"]])
        shoulder = p + _mv(r_trunk, [0.0, sgn * d["shoulder_width"] / 2, d["torso"]])
        r_upper = _mm(r_trunk, _pitch(a(f"shoulder_{side}")), _roll(sgn * a(f"abduct_{side}")))
        elbow = shoulder + _mv(r_upper, [0.0, 0.0, -d["upper_arm"]])
        hand = elbow + _mv(_mm(r_upper, _pitch(a(f"elbow_{side}"))), [0.0, 0.0, -d["forearm"]])
        j.update({f"hip_{side}": hip, f"knee_{side}": knee, f"ankle_{side}": ankle,
                  f"heel_{side}": heel, f"toe_{side}": toe, f"shoulder_{side}": shoulder, f"elbow_{side}": elbow,
                  f"hand_{side}": hand})
    pitch = a("body_pitch")
    if np.any(pitch != 0):
        rot = _pitch(-pitch)  # tips upward vectors forward
        piv = np.asarray(pose.pivot, dtype=np.float64)[:, None]
        j = {k: v if k in FOOT_JOINTS else piv + np.einsum("ijn,jn->in", rot, v - piv)
             for k, v in j.items()}
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

def to_world(points: np.ndarray, start_xy: Sequence[float], heading_rad: float) -> np.ndarray:
    """Body-frame points `(..., 3)` -> world frame: rotate by `heading_rad` about z, then shift
    the body origin to `(start_xy[0], start_xy[1], 0)`."""
    c, s = math.cos(heading_rad), math.sin(heading_rad)
    x, y = points[..., 0], points[..., 1]
    return np.stack([start_xy[0] + c * x - s * y, start_xy[1] + s * x + c * y, points[..., 2]], -1)

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



def plant_feet(joints: dict[str, np.ndarray],
               contacts: Sequence[str] = CONTACT_JOINTS) -> dict[str, np.ndarray]:
    """Translate a skeleton so that its lowest contact point stands still on the floor.

    joints: body-frame joint tracks `(N, 3)` [m] whose translation is to be replaced (e.g. a
    pose with the pelvis at a fixed place). At every sample the lowest of `contacts` (heels
    and toes) is the supporting point: the whole body is shifted vertically so that it is at
    z = 0, and horizontally so that it does not move while it stays the lowest (the body's
    progression is then what the supporting leg pushes, like a planted foot rolling from heel
    to toe). Returns new tracks; the first sample keeps its horizontal position.
    """
    pts = np.stack([joints[n] for n in contacts], 1)  # (N, P, 3)
    n = len(pts)
    low = np.argmin(pts[..., 2], axis=1)
    i = np.arange(n)
    step = pts[i[1:], low[:-1], :2] - pts[i[:-1], low[:-1], :2]  # support point's own motion
    shift = np.zeros((n, 3))
    shift[1:, :2] = -np.cumsum(step, axis=0)
    shift[:, 2] = -pts[i, low, 2]
    return {k: v + shift for k, v in joints.items()}



def _stance_offsets(points: np.ndarray, support: np.ndarray, swing_n: float) -> np.ndarray:
    """Offsets `(N, 3)` [m] that hold a foot still while it supports the body.

    points: `(N, 2, 3)` heel and toe tracks of one foot as the joint angles put them;
    support: `(N,)` bool, the foot's support phase; swing_n: swing duration in samples. In
    each support run the lower of heel / toe stays where it was (the offset cancels its
    motion, so the foot rolls over heel then toe); during the swing the offset returns to
    zero along a raised cosine, so the next heel strike starts from the free trajectory.
    """
    n = len(points)
    i = np.arange(n)
    low = np.argmin(points[..., 2], axis=1)
    step = points[i[1:], low[:-1]] - points[i[:-1], low[:-1]]
    step[~(support[:-1] & support[1:])] = 0.0
    cs = np.concatenate([np.zeros((1, 3)), -np.cumsum(step, axis=0)])
    start = support & np.concatenate([[True], ~support[:-1]])
    run0 = np.maximum.accumulate(np.where(start, i, 0))
    off = np.where(support[:, None], cs - cs[run0], 0.0)
    # swing: decay from the offset at toe-off
    last = np.maximum.accumulate(np.where(support, i, -1))
    seen = last >= 0
    swing = ~support & seen
    s = np.clip((i - last) / max(swing_n, 1.0), 0.0, 1.0)
    w = 0.5 * (1.0 + np.cos(np.pi * s))
    off[swing] = off[last[swing]] * w[swing, None]
    return off


def _move_foot(j: dict[str, np.ndarray], side: str, ankle: np.ndarray, d: dict) -> None:
    """Move one foot (ankle, heel, toe) so its ankle is at `ankle` `(N, 3)`, in place, and
    re-solve the knee (`_leg_ik`; an unreachable ankle is pulled in)."""
    knee, new = _leg_ik(j[f"hip_{side}"], ankle, d["thigh"], d["shin"])
    shift = new - j[f"ankle_{side}"]
    j[f"knee_{side}"], j[f"ankle_{side}"] = knee, new
    j[f"heel_{side}"] = j[f"heel_{side}"] + shift
    j[f"toe_{side}"] = j[f"toe_{side}"] + shift


def _leg_ik(hip: np.ndarray, ankle: np.ndarray, thigh: float, shin: float):
    """Knee `(N, 3)` and (possibly pulled-in) ankle `(N, 3)` of a leg from hip to ankle.

    The knee bends forward (+x of the body frame); an ankle out of reach is moved towards the
    hip to 0.999 of the leg length (returned as the new ankle).
    """
    d = ankle - hip
    dist = np.linalg.norm(d, axis=1, keepdims=True)
    reach = 0.999 * (thigh + shin)
    too_far = dist > reach
    ankle = np.where(too_far, hip + d / dist * reach, ankle)
    dist = np.minimum(dist, reach)
    u = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    fwd = np.array([1.0, 0.0, 0.0]) - u[:, :1] * u
    fwd /= np.maximum(np.linalg.norm(fwd, axis=1, keepdims=True), 1e-9)
    cos_a = np.clip((thigh**2 + dist**2 - shin**2) / (2 * thigh * dist), -1.0, 1.0)
    knee = hip + thigh * (cos_a * u + np.sqrt(1.0 - cos_a**2) * fwd)
    return knee, ankle


def walking_joints(t: np.ndarray, height: float, speed: float, start_phase: float = 0.0,
                   arm_swing: float = 1.0) -> dict[str, np.ndarray]:
    """Body-frame joint tracks `(N, 3)` [m] of a steady Boulic walk with planted feet.

    Starts from `walking_pose` (Boulic angles and pelvis translation, so the progression,
    gait frequency and torso line are the model's). Each foot, during its support phase
    (`Ds` from its heel strike), then stays where it touched down, rolling from heel to toe
    (`_stance_offsets`); the knee follows by two-link inverse kinematics (`_leg_ik`), and
    the whole body is shifted vertically so that the lowest heel / toe is on the floor.
    """
    t = np.asarray(t, dtype=np.float64)
    cyc = walking_cycle(height, speed)
    d = body_dimensions(height)
    pose = walking_pose(t, height, speed, start_phase, arm_swing)
    j = skeleton_joints(pose, height)
    dc, ds = cyc["cycle_s"], cyc["support_s"]
    u = np.mod(t / dc + start_phase, 1.0)
    dt = float(t[1] - t[0]) if len(t) > 1 else 1.0
    support = {side: np.mod(u - lag, 1.0) < ds / dc for side, lag in (("r", 0.0), ("l", 0.5))}
    for side in ("r", "l"):
        feet = np.stack([j[f"heel_{side}"], j[f"toe_{side}"]], 1)
        off = _stance_offsets(feet, support[side], (dc - ds) / dt)
        _move_foot(j, side, j[f"ankle_{side}"] + off, d)
    # the floor is under the supporting feet; a swinging foot that would dip below it is raised
    low = {s: np.minimum(j[f"heel_{s}"][:, 2], j[f"toe_{s}"][:, 2]) for s in ("r", "l")}
    floor = np.min([np.where(support[s], low[s], np.inf) for s in ("r", "l")], axis=0)
    floor = np.where(np.isfinite(floor), floor, np.minimum(low["r"], low["l"]))
    for side in ("r", "l"):
        dip = np.where(support[side], 0.0, np.clip(floor - low[side], 0.0, None))
        if np.any(dip > 0):
            win = max(1, round(0.03 / dt))
            dip = gaussian_filter1d(maximum_filter1d(dip, 4 * win + 1), win, mode="nearest")
            _move_foot(j, side, j[f"ankle_{side}"] + dip[:, None] * np.array([0.0, 0.0, 1.0]), d)
    floor = np.min(np.stack([j[n][:, 2] for n in CONTACT_JOINTS]), axis=0)
    return {k: v - floor[:, None] * np.array([0.0, 0.0, 1.0]) for k, v in j.items()}
