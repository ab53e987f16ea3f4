"""Tests of the physics micro-Doppler simulator (mdvq.data.simulator)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mdvq.data import simulator as sim
from mdvq.data.dataset import SpectrogramSet
from mdvq.data.simulator import source as sim_source
from mdvq.data.spectrogram import STFTConfig, stft_magnitude

PRF = 1000.0
LAM = sim.wavelength_m(5.8e9)  # 0.051688 m
STFT = sim.DEFAULT_STFT
BIN_HZ = PRF / STFT.nfft  # 3.906 Hz


def at(joints: dict, range_m: float, aspect_deg: float) -> dict:
    """Body-frame joints placed `range_m` along the world x axis, facing `aspect_deg` off the
    radar direction (the radar at the origin)."""
    heading = math.pi + math.radians(aspect_deg)
    return {k: sim.to_world(v, (range_m, 0.0), heading) for k, v in joints.items()}


def ridge_hz(iq: np.ndarray, stft: STFTConfig = STFT) -> tuple[np.ndarray, np.ndarray]:
    """(frame times, Doppler of the strongest bin in each frame) of a baseband signal."""
    freqs, times, mag = stft_magnitude(iq, PRF, stft)
    return times, freqs[np.argmax(mag, axis=0)]


def test_wavelength_is_c_over_f():
    assert sim.wavelength_m(5.8e9) == pytest.approx(0.0516884, rel=1e-5)


@pytest.mark.parametrize("direction", [+1.0, -1.0])  # +1 approaching, -1 receding
def test_point_scatterer_at_constant_radial_velocity_peaks_at_2v_over_lambda(direction):
    v = 1.3  # m/s -> 2 v / lambda = 50.30 Hz
    t = np.arange(3000) / PRF
    x = 8.0 - direction * v * t  # along the x axis, radar at the origin, same height
    pos = np.stack([x, np.zeros_like(t), np.zeros_like(t)], -1)[None]
    iq = sim.simulate_returns(pos, np.ones((1, len(t))), np.zeros(3), LAM)
    _, f = ridge_hz(iq)
    expected = direction * 2 * v / LAM
    assert expected == pytest.approx(direction * 50.30, abs=0.01)
    assert np.all(np.abs(f - expected) <= BIN_HZ)


def test_simulate_returns_amplitude_and_spreading():
    pos = np.array([[[3.0, 4.0, 0.0]]])  # R = 5 m
    with_spreading = sim.simulate_returns(pos, [[2.0]], np.zeros(3), LAM)
    without = sim.simulate_returns(pos, [[2.0]], np.zeros(3), LAM, spreading=False)
    assert abs(without[0]) == pytest.approx(2.0)
    assert abs(with_spreading[0]) == pytest.approx(2.0 / 25.0)
    assert np.angle(without[0]) == pytest.approx(np.angle(np.exp(-4j * np.pi * 5.0 / LAM)))
    with pytest.raises(ValueError, match="positions must be"):
        sim.simulate_returns(np.zeros((4, 3)), np.ones(4), np.zeros(3), LAM)


def test_rotating_scatterer_traces_sinusoid_of_peak_2_omega_r_over_lambda():
    r, omega = 0.3, 2 * np.pi * 1.0  # tip speed 1.885 m/s -> 72.94 Hz
    t = np.arange(3000) / PRF
    centre = np.array([5.0, 0.0, 0.0])
    pos = centre + r * np.stack([np.cos(omega * t), np.sin(omega * t), np.zeros_like(t)], -1)
    iq = sim.simulate_returns(pos[None], np.ones((1, len(t))), np.zeros(3), LAM)
    times, f = ridge_hz(iq)
    peak = 2 * omega * r / LAM
    assert peak == pytest.approx(72.94, abs=0.01)
    assert f.max() == pytest.approx(peak, abs=2 * BIN_HZ)
    assert f.min() == pytest.approx(-peak, abs=2 * BIN_HZ)
    # the ridge follows the radial velocity: -(d|p|/dt) ~ r omega sin(omega t) at range >> r
    predicted = peak * np.sin(omega * times)
    assert np.median(np.abs(f - predicted)) <= 2 * BIN_HZ


def test_ellipsoid_rcs_hand_values():
    # a sphere: pi r^2 at every aspect
    for theta, phi in [(0.0, 0.0), (0.7, 1.1), (np.pi / 2, 0.3)]:
        assert sim.ellipsoid_rcs(0.2, 0.2, 0.2, theta, phi) == pytest.approx(np.pi * 0.04)
    # a spheroid a=b=0.1, c=0.4: broadside pi c^2, end-on pi a^4 / c^2
    assert sim.ellipsoid_rcs(0.1, 0.1, 0.4, np.pi / 2, 0.0) == pytest.approx(np.pi * 0.16)
    assert sim.ellipsoid_rcs(0.1, 0.1, 0.4, 0.0, 0.0) == pytest.approx(np.pi * 1e-4 / 0.16)


def test_ellipsoid_amplitudes_match_rcs_formula():
    centres = np.array([[[2.0, 1.0, 0.5]]])
    axis = np.array([0.3, -0.2, 0.9])
    axes = (axis / np.linalg.norm(axis))[None, None]
    semi = np.array([[0.08, 0.05, 0.2]])
    radar = np.array([0.0, 0.0, 1.0])
    los = radar - centres[0, 0]
    theta = np.arccos(los @ axes[0, 0] / np.linalg.norm(los))
    phi = np.arcsin(los[1] / np.hypot(los[0], los[1]))
    expected = np.sqrt(sim.ellipsoid_rcs(0.08, 0.05, 0.2, theta, phi))
    assert sim.ellipsoid_amplitudes(centres, axes, semi, radar)[0, 0] == pytest.approx(expected)


def test_standing_skeleton_geometry():
    h = 1.8
    hip = (0.491 + 0.039) * h  # leg + ankle height: standing on the floor
    pose = sim.Pose(pelvis=np.array([[0.0, 0.0, hip]]))
    j = sim.skeleton_joints(pose, h)
    assert j["head_top"][0] == pytest.approx([0, 0, hip + (0.288 + 0.130) * h])
    assert j["ankle_l"][0] == pytest.approx([0, 0.191 * h / 2, 0.039 * h])
    assert j["heel_l"][0] == pytest.approx([0, 0.191 * h / 2, 0.0])
    toe_x = math.sqrt(0.143**2 - 0.039**2) * h  # toe 0.143 H from the ankle, on the floor
    assert j["toe_r"][0] == pytest.approx([toe_x, -0.191 * h / 2, 0.0])
    assert j["hand_r"][0] == pytest.approx([0, -0.259 * h / 2, hip + (0.288 - 0.188 - 0.152) * h])
    # flexing the hip by 90 degrees puts the knee straight ahead at hip height
    pose.angles["hip_l"] = np.array([np.pi / 2])
    assert sim.skeleton_joints(pose, h)["knee_l"][0] == pytest.approx(
        [0.245 * h, 0.191 * h / 2, hip])
    centres, axes, semi = sim.body_scatterers(j, h)
    assert centres.shape == (12, 1, 3) and axes.shape == (12, 1, 3) and semi.shape == (12, 3)
    assert np.linalg.norm(axes, axis=-1) == pytest.approx(np.ones((12, 1)))


def test_boulic_cycle_quantities():
    c = sim.walking_cycle(1.8, 1.4)
    assert c["Ht"] == pytest.approx(0.8838)
    assert c["rv"] == pytest.approx(1.4 / 0.8838)
    assert c["cycle_s"] == pytest.approx(1.346 / math.sqrt(1.4 / 0.8838))  # 1.0695 s
    assert c["cycle_s"] == pytest.approx(1.0695, abs=1e-4)
    assert c["support_s"] == pytest.approx(0.752 * 1.0695 - 0.143, abs=1e-4)
    assert c["cycle_length"] == pytest.approx(1.4 * c["cycle_s"])  # v * Dc
    assert c["gait"] == "c" and sim.walking_cycle(1.8, 0.8)["gait"] == "b"
    with pytest.raises(ValueError, match="rv"):
        sim.walking_cycle(1.5, 2.5)


def test_walking_pose_is_periodic_and_progresses_at_speed():
    h, v = 1.75, 1.2
    dc = sim.walking_cycle(h, v)["cycle_s"]
    t = np.array([0.3, 0.3 + dc, 0.3 + 2 * dc])
    pose = sim.walking_pose(t, h, v, start_phase=0.25)
    for name in ("hip_r", "knee_l", "ankle_r", "elbow_l", "shoulder_r"):
        assert pose.angles[name][1] == pytest.approx(pose.angles[name][0], abs=1e-9)
    assert pose.pelvis[1] - pose.pelvis[0] == pytest.approx([v * dc, 0, 0], abs=1e-9)
    # left and right legs are half a cycle apart
    half = sim.walking_pose(np.array([0.3, 0.3 + dc / 2]), h, v, start_phase=0.25)
    assert half.angles["hip_l"][1] == pytest.approx(half.angles["hip_r"][0], abs=1e-9)


@pytest.mark.parametrize("aspect", [25.0, 160.0])
def test_walk_torso_line_at_walking_speed_doppler(aspect):
    h, v = 1.75, 1.4
    t = np.arange(3000) / PRF
    # far enough that the line-of-sight angle hardly changes over the 4.2 m walked
    iq = sim.human_returns(at(sim.walking_joints(t, h, v, start_phase=0.1), 20.0, aspect),
                           h, LAM, radar_height_m=1.0)
    freqs, _, mag = stft_magnitude(iq, PRF, STFT)
    f = freqs[np.argmax(mag, axis=0)]
    expected = 2 * v * math.cos(math.radians(aspect)) / LAM  # +49.1 Hz / -50.9 Hz
    # the strongest bin is mostly the torso (stance thighs pull it down by up to ~2 bins)
    assert np.median(f) == pytest.approx(expected, abs=2.5 * BIN_HZ)
    # the power-weighted mean Doppler of the whole body is the body's mean radial velocity
    power = mag**2
    centroid = np.sum(freqs[:, None] * power) / np.sum(power)
    assert centroid == pytest.approx(expected, abs=BIN_HZ)
    # limbs spread the signature well beyond the torso line (within 40 dB of each frame's peak)
    db = 20 * np.log10(mag / mag.max(axis=0, keepdims=True) + 1e-12)
    extent = np.abs(freqs[:, None] * (db > -40)).max()
    assert extent > 2.5 * abs(expected)


def test_falling_towards_radar_is_a_positive_burst_then_still():
    t = np.arange(3000) / PRF
    rng = np.random.default_rng(0)
    joints, t_fall = sim.fall_joints(t, 1.75, 0.5, rng)
    assert 0.6 < t_fall < 1.6
    for aspect, sign in ((0.0, 1.0), (180.0, -1.0)):
        iq = sim.human_returns(at(joints, 4.0, aspect), 1.75, LAM)
        freqs, times, mag = stft_magnitude(iq, PRF, STFT)
        during = (times > 0.5) & (times < 0.5 + t_fall)
        p = mag[:, during] ** 2
        pos, neg = p[freqs > 20].sum(), p[freqs < -20].sum()
        assert (pos > 5 * neg) if sign > 0 else (neg > 5 * pos)
        after = times > 0.5 + t_fall + 0.4  # lying still: energy near zero Doppler
        p_after = mag[:, after] ** 2
        assert p_after[np.abs(freqs) > 20].sum() < 0.01 * p_after.sum()


@pytest.mark.parametrize("activity", ["sitting_down", "standing_up", "picking_up", "drinking"])
def test_activities_move_only_inside_their_interval(activity):
    h, t = 1.7, np.arange(3000) / PRF
    pose = sim.activity_pose(activity, t, h, start_s=0.8, duration_s=1.5,
                             rng=np.random.default_rng(1))
    j = sim.skeleton_joints(pose, h)
    speed = {k: np.linalg.norm(np.gradient(v, axis=0) * PRF, axis=1) for k, v in j.items()}
    fastest = np.max(np.stack(list(speed.values())), axis=0)
    inside = (t > 0.8) & (t < 2.3)
    assert fastest[inside].max() > 0.5  # m/s: a real movement
    assert fastest[~inside].max() < 0.05  # only postural sway outside
    assert np.all(j["heel_l"][:, 2] == pytest.approx(0.0, abs=1e-9))  # feet stay planted
    assert np.all(j["toe_r"][:, 2] == pytest.approx(0.0, abs=1e-9))
    assert np.ptp(j["toe_r"], axis=0) == pytest.approx(np.zeros(3), abs=1e-9)


# --------------------------------------------------------------------------------------------
# The data source
# --------------------------------------------------------------------------------------------

def small_source(**kw) -> sim.RadarSimulatorSource:
    kw.setdefault("num_per_class", 2)
    kw.setdefault("num_subjects", 3)
    kw.setdefault("progress", False)
    return sim.RadarSimulatorSource(**kw)


@pytest.fixture(scope="module")
def small_set() -> SpectrogramSet:
    return small_source(num_per_class=4).load()


def test_set_shapes_ranges_and_balance(small_set):
    d = small_set
    f, t = small_source().native_shape()
    assert (f, t) == (129, 120)
    assert d.images.shape == (24, 1, f, t) and d.images.dtype == np.float32
    assert np.all(np.isfinite(d.images)) and d.images.min() >= 0 and d.images.max() == 1.0
    assert d.class_names == list(sim.HUMAN_CLASSES)
    assert np.bincount(d.labels).tolist() == [4] * 6
    assert d.freqs_hz[0] == pytest.approx(-250) and d.freqs_hz[-1] == pytest.approx(250)
    assert np.all(np.diff(d.freqs_hz) > 0) and np.all(np.diff(d.times_s) > 0)
    assert d.times_s[-1] < 3.0
    assert d.sources[:3].tolist() == ["sim:0", "sim:1", "sim:2"]


def test_subjects_are_pooled_and_do_every_class(small_set):
    d = small_set
    assert sorted(set(d.subjects)) == ["sim-s000", "sim-s001", "sim-s002"]
    for s in set(d.subjects):
        assert set(d.labels[d.subjects == s]) == set(range(6))
    cfg = small_source().config
    a, b = sim.make_subject(cfg, 0), sim.make_subject(cfg, 1)
    assert a == sim.make_subject(cfg, 0) and a.height_m != b.height_m
    assert 1.5 <= a.height_m <= 1.95 and a.id == "sim-s000"
    _, info0 = sim.simulate_example(cfg, 0)
    _, info6 = sim.simulate_example(cfg, 6)  # next walk: subject 1
    assert (info0["subject"], info6["subject"]) == ("sim-s000", "sim-s001")
    assert info0["height_m"] == a.height_m and 0.8 <= info0["speed_mps"] <= 2.0


def test_same_seed_is_bit_identical_and_independent_of_chunking(small_set):
    again = small_source(num_per_class=2).load()
    np.testing.assert_array_equal(again.images, small_set.images[:12])
    img7, info7 = small_source().spectrogram(7)
    np.testing.assert_array_equal(img7, small_set.images[7, 0])
    assert info7["class"] == "sitting_down"
    other = small_source(seed=1).load()
    assert not np.array_equal(other.images, small_set.images[:12])


def test_cache_roundtrip_and_keys(tmp_path: Path, monkeypatch):
    src = small_source(num_per_class=1, cache_dir=str(tmp_path))
    first = src.load()
    files = list(tmp_path.glob("radar-*.npz"))
    assert len(files) == 1

    def no_build():
        raise AssertionError("should have read the cache")

    monkeypatch.setattr(src, "build", no_build)
    second = src.load()
    np.testing.assert_array_equal(first.images, second.images)
    assert second.subjects.tolist() == first.subjects.tolist()
    assert second.meta["params"]["simulator_version"] == sim.SIMULATOR_VERSION
    p = src.params()
    assert p["stft"]["nperseg"] == 128 and p["snr_db"] == (15.0, 35.0)
    names = {files[0].name}
    for change in ({"stft": {"nperseg": 64, "noverlap": 48}}, {"snr_db": (10.0, 30.0)},
                   {"seed": 3}):
        other = small_source(num_per_class=1, cache_dir=str(tmp_path), **change)
        assert other.params() != p
        other.load()
        names = {f.name for f in tmp_path.glob("radar-*.npz")}
    assert len(names) == 4


def test_version_is_part_of_the_cache_key(monkeypatch):
    src = small_source()
    before = src.params()
    monkeypatch.setattr(sim_source, "SIMULATOR_VERSION", sim.SIMULATOR_VERSION + 1)
    assert src.params() != before


def test_extra_non_human_classes():
    d = small_source(classes=["walking", "rotor", "bird"], num_per_class=1).load()
    assert d.class_names == ["walking", "rotor", "bird"]
    assert np.all(np.isfinite(d.images)) and d.images.max() == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"classes": ["walking", "jumping"]}, r"unknown class 'jumping'.*'walking'"),
    ({"classes": []}, "classes must be a non-empty"),
    ({"classes": ["walking", "walking"]}, "duplicates"),
    ({"num_per_class": 0}, "num_per_class must be >= 1"),
    ({"num_subjects": 0}, "num_subjects"),
    ({"seed": -1}, "seed"),
    ({"prf_hz": 100.0}, "prf_hz 100.0 is too low"),
    ({"walk_speed_mps": (0.8, 2.6)}, "Boulic"),
    ({"snr_db": (30.0, 10.0)}, "snr_db"),
    ({"snr_db": "loud"}, "snr_db"),
    ({"height_m": (1.5, 3.0)}, "height_m"),
    ({"duration_s": 0.05}, "nperseg"),
    ({"duration_s": -1.0}, "duration_s"),
    ({"stft": {"hop": 3}}, r"stft: unknown key\(s\) \['hop'\]"),
    ({"stft": {"max_doppler_hz": 800.0}}, "max_doppler_hz"),
    ({"stft": {"noverlap": 128}}, "noverlap"),
    ({"snr": 3}, r"unknown setting\(s\) \['snr'\]"),
    ({"mti_order": -1}, "mti_order"),
    ({"mti_cutoff": 1.5}, "mti_cutoff"),
])
def test_bad_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_source(**kwargs)


def test_low_prf_warns_about_limb_aliasing():
    with pytest.warns(UserWarning, match="alias"):
        small_source(prf_hz=300.0, stft={"nfft": 128, "max_doppler_hz": None})


# --------------------------------------------------------------------------------------------
# Physical invariants (SIMULATOR_VERSION 2)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scenes():
    """World joints and info of the first 4 examples of every class (default settings)."""
    cfg = small_source().config
    return [(sim.example_joints(cfg, i), sim.simulate_example(cfg, i)[1]) for i in range(24)]


def test_no_point_below_the_floor(scenes):
    for joints, info in scenes:
        lowest = min(v[:, 2].min() for v in joints.values())
        assert lowest >= -1e-9, (info["class"], lowest)
    # the extremes of the walking model too (slowest tall, fastest short walker)
    t = np.arange(3000) / PRF
    for h, v in ((1.95, 0.8), (1.5, 2.0)):
        j = sim.walking_joints(t, h, v, 0.3)
        assert min(p[:, 2].min() for p in j.values()) >= -1e-9
        # a foot is on the floor at every instant
        assert np.min([j[n][:, 2] for n in sim.CONTACT_JOINTS], axis=0) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("h, v", [(1.95, 0.8), (1.8, 1.4), (1.5, 2.0)])
def test_walking_planted_foot_is_still_and_speed_kept(h, v):
    t = np.arange(3000) / PRF
    j = sim.walking_joints(t, h, v, 0.3)
    # the supporting point (the lowest heel / toe) does not slide: before the fix the stance
    # ankle moved at 0.2 m/s on average, up to 1.8 m/s
    pts = np.stack([j[n] for n in sim.CONTACT_JOINTS], 1)
    low = np.argmin(pts[..., 2], axis=1)
    vel = np.gradient(pts[..., :2], axis=0) * PRF
    speed = np.linalg.norm(vel[np.arange(len(t)), low], axis=1)
    assert np.median(speed) < 0.005 and np.percentile(speed, 90) < 0.05
    # the body still walks at the requested speed (Boulic progression kept)
    walked = (j["pelvis"][-1, 0] - j["pelvis"][0, 0]) / t[-1]
    assert walked == pytest.approx(v, rel=0.03)


def test_fall_reach_stays_inside_the_range(scenes):
    radar = np.array([0.0, 0.0, 1.0])
    for joints, info in scenes:
        if info["class"] == "walking":
            continue
        closest = min(np.hypot(p[:, 0], p[:, 1]).min() for p in joints.values())
        assert closest == pytest.approx(info["range_m"], abs=0.01)
        assert closest >= 2.0
        if info["class"] == "falling":  # the body rests on the floor in front of the radar
            end = {k: v[-1] for k, v in joints.items()}
            assert np.linalg.norm(end["head_top"] - radar) > 1.9


def test_clutter_removed_in_place_activities_stand_out_of_the_clutter_band():
    src = small_source(num_per_class=1)
    raw = small_source(num_per_class=1, mean_removal=False, mti_order=0)
    for i, cls in enumerate(src.config.classes):
        if cls in ("walking", "falling"):
            continue
        iq, info = src.slow_time(i)
        freqs, times, mag = stft_magnitude(iq, PRF, STFT)
        p = mag**2
        noise = p[np.abs(freqs) > 200].mean()
        half = STFT.nperseg / PRF / 2
        moving = (times + half > info["start_s"]) & (
            times - half < info["start_s"] + info["activity_s"])
        band = (np.abs(freqs) > 15) & (np.abs(freqs) < 100)
        motion_db = 10 * np.log10(p[band][:, moving].mean(0).max() / noise)
        assert motion_db > 6, (cls, motion_db)
        # the zero-Doppler line (static scatterers, still body) is much weaker than without
        # clutter removal (what remains is the body's slow sway and the MTI's start)
        _, _, mag_raw = stft_magnitude(raw.slow_time(i)[0], PRF, STFT)
        zero = np.abs(freqs) < 2
        assert (mag_raw[zero] ** 2).sum() > 3 * (mag[zero] ** 2).sum()


# ---- values of the noise, clutter and non-human returns ------------------------------------
@pytest.mark.parametrize("snr_db", [0.0, 20.0])
def test_noise_is_circular_white_at_the_requested_snr(snr_db):
    rng = np.random.default_rng(0)
    signal = 3.0 * np.exp(2j * np.pi * 0.01 * np.arange(200_000))  # power 9
    noise = sim.add_noise(signal, snr_db, rng) - signal
    assert np.mean(np.abs(noise) ** 2) == pytest.approx(9.0 / 10 ** (snr_db / 10), rel=0.02)
    assert np.var(noise.real) == pytest.approx(np.var(noise.imag), rel=0.03)  # circular
    assert abs(np.mean(noise.real * noise.imag)) < 0.01 * np.var(noise.real)
    lag1 = np.mean(noise[1:] * noise[:-1].conj()) / np.mean(np.abs(noise) ** 2)
    assert abs(lag1) < 0.01  # white
    # the reference power, not the signal's own, sets the level when given
    noise = sim.add_noise(np.zeros(100_000, complex), 10.0, rng, reference_power=4.0)
    assert np.mean(np.abs(noise) ** 2) == pytest.approx(0.4, rel=0.02)


def test_clutter_is_static_at_the_drawn_clutter_to_signal_ratio():
    """One clutter scatterer: a constant phasor whose power is clutter_db above the body's."""
    common = {"classes": ["walking"], "num_per_class": 1, "num_subjects": 1,
              "snr_db": (300.0, 300.0), "clutter_db": (3.0, 3.0)}
    clean, _ = sim.simulate_example(sim.SimConfig(**common, num_clutter=0), 0)
    cluttered, info = sim.simulate_example(sim.SimConfig(**common, num_clutter=1), 0)
    clutter = cluttered - clean  # the noise is 300 dB down: the difference is the clutter
    assert info["clutter_db"] == 3.0
    assert np.std(clutter) < 1e-9 * np.abs(clutter).mean()  # static: one value, zero Doppler
    ratio_db = 10 * np.log10(np.abs(clutter[0]) ** 2 / np.mean(np.abs(clean) ** 2))
    assert ratio_db == pytest.approx(3.0, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_rotor_blade_tips_reach_the_drawn_tip_doppler(seed):
    t = np.arange(3000) / PRF
    draws = np.random.default_rng(seed)  # the draws of rotor_returns, in its order
    draws.integers(2, 5), draws.uniform(0.6, 1.2)
    tip_hz = draws.uniform(0.1, 0.22) * PRF
    iq = sim.rotor_returns(t, np.random.default_rng(seed), LAM, PRF, 5.0, 1.0)
    freqs, _, mag = stft_magnitude(iq, PRF, STFTConfig(nperseg=128, noverlap=96, nfft=256))
    lit = (20 * np.log10(mag / mag.max() + 1e-12) > -25).any(axis=1)
    extent = np.abs(freqs[lit]).max()
    # the outer blade point is at 15/16 of the radius, the blade plane tilted from the LOS
    assert 0.8 * tip_hz - BIN_HZ <= extent <= tip_hz + 2 * BIN_HZ
    assert freqs[lit].min() < -0.5 * tip_hz and freqs[lit].max() > 0.5 * tip_hz  # both signs


@pytest.mark.parametrize("aspect", [20.0, 160.0])
def test_bird_body_line_follows_its_radial_velocity(aspect):
    t = np.arange(3000) / PRF
    draws = np.random.default_rng(0)
    v, _, _, _, alt = (draws.uniform(*lim) for lim in [(2, 6), (3, 8), (30, 50), (0.15, 0.35),
                                                        (2, 5)])
    iq = sim.bird_returns(t, np.random.default_rng(0), LAM, 8.0, aspect, 1.0)
    start = 8.0 + (v * t[-1] * math.cos(math.radians(aspect)) if aspect < 90 else 0.0)
    body = sim.to_world(np.stack([v * t, 0 * t, alt + 0 * t], -1), (start, 0.0),
                        math.pi + math.radians(aspect))
    doppler = -2 / LAM * np.gradient(np.linalg.norm(body - [0, 0, 1.0], axis=-1), t)
    times, ridge = ridge_hz(iq)
    assert np.sign(np.median(ridge)) == (1 if aspect < 90 else -1)  # approaching: positive
    assert np.median(np.abs(ridge - np.interp(times, t, doppler))) <= 1.5 * BIN_HZ
