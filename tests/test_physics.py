"""Tests of the judge-free physical fidelity: kinematic extractors on spectrograms with known
answers (mdvq.evaluation.physics) and the per-class distributions, DTW and sifting
(mdvq.evaluation.physical_fidelity)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mdvq.data.spectrogram import magnitude_to_unit
from mdvq.evaluation.physical_fidelity import (
    Sifter,
    dtw_nearest,
    format_route_cell,
    physical_fidelity,
    physics_settings,
    route_summary,
    wasserstein_ratios,
)
from mdvq.evaluation.physics import (
    SUMMARY_KEYS,
    above_noise,
    centroid_bandwidth,
    envelopes,
    extract_features,
    to_linear_power,
)

F, T, D = 64, 64, 60.0
FREQS = -250.0 + (np.arange(F) + 0.5) * 500.0 / F  # bin centres, 7.8125 Hz apart
TIMES = (np.arange(T) + 0.5) * 3.0 / T  # 3 s
BIN = FREQS[1] - FREQS[0]


def image(power: np.ndarray) -> np.ndarray:
    """The data convention's [0,1] dB image of a power spectrogram (docs/data.md)."""
    return magnitude_to_unit(np.sqrt(power), D)


def walker_like(n: int, rng: np.random.Generator, shift_hz: float = 0.0) -> np.ndarray:
    """`n` synthetic walk-like spectrograms `(n, 1, F, T)` in [0,1]: a torso line at 20-60 Hz
    and a limb line swinging 40-90 Hz around it at 1.6-2.2 Hz, over a random noise floor."""
    out = np.empty((n, 1, F, T), np.float32)
    for i in range(n):
        torso = rng.uniform(20, 60) + shift_hz
        limb = torso + rng.uniform(40, 90) * np.sin(2 * np.pi * rng.uniform(1.6, 2.2) * TIMES
                                                  + rng.uniform(0, 2 * np.pi))
        p = (np.exp(-0.5 * ((FREQS[:, None] - torso) / 8) ** 2)
             + 0.1 * np.exp(-0.5 * ((FREQS[:, None] - limb[None]) / 10) ** 2)
             + 1e-4 * rng.exponential(size=(F, T)))
        out[i, 0] = image(p)
    return out


# --------------------------------------------------------------------------- extractors
def test_linear_power_inverts_the_db_image_down_to_the_dynamic_range():
    power = np.array([[1.0, 1e-2], [1e-4, 1e-9]])  # 0, -20, -40, -90 dB (below the 60 dB range)
    back = to_linear_power(image(4.0 * power), D)  # relative to the peak, whatever its scale
    np.testing.assert_allclose(back, [[1.0, 1e-2], [1e-4, 1e-6]], rtol=1e-5)
    with pytest.raises(ValueError, match="physics.dynamic_range_db"):
        to_linear_power(back, 0.0)


def test_a_single_tone_has_its_frequency_as_centroid_and_near_zero_bandwidth():
    p = np.full((F, T), 1e-9)
    p[40] = 1.0
    feats = extract_features(image(p)[None, None], FREQS, TIMES, D)
    f0 = FREQS[40]
    np.testing.assert_allclose(feats.centroid, f0, atol=0.05 * BIN)
    assert np.all(feats.bandwidth < 0.2 * BIN)  # the -60 dB floor of 63 other bins: 1.3 Hz
    assert np.all(np.abs(feats.upper - f0) <= BIN / 2) and np.all(np.abs(feats.lower - f0) <= BIN / 2)
    # exact on linear power without a floor
    p[p < 1] = 0.0
    cen, bw = centroid_bandwidth(p, FREQS)
    np.testing.assert_allclose(cen, f0)
    np.testing.assert_allclose(bw, 0.0, atol=1e-9)


def test_the_envelopes_of_a_band_are_its_edges_within_a_bin():
    p = np.full((F, T), 1e-9)
    p[20:45] = 1.0  # bins 20..44 lit
    f1, f2 = FREQS[20] - BIN / 2, FREQS[44] + BIN / 2  # the band's edges [Hz]
    up, low = envelopes(to_linear_power(image(p), D), FREQS, percentile=0.01)
    np.testing.assert_allclose(up, f2 - 0.01 * (f2 - f1), atol=0.05)  # interpolated crossing
    np.testing.assert_allclose(low, f1 + 0.01 * (f2 - f1), atol=0.05)
    up3, low3 = envelopes(p, FREQS, percentile=0.03)
    assert np.all(np.abs(up3 - f2) < BIN) and np.all(np.abs(low3 - f1) < BIN)
    with pytest.raises(ValueError, match="physics.percentile"):
        envelopes(p, FREQS, percentile=0.5)


def test_noise_only_frames_have_no_motion_unless_the_noise_is_kept():
    rng = np.random.default_rng(0)
    p = 1e-5 * rng.exponential(size=(F, T))  # noise about 50 dB below the line
    p[20:45, : T // 2] = 1.0  # a band in the first half of the window only
    up, low = envelopes(above_noise(p, 10.0), FREQS, 0.01)
    f1, f2 = FREQS[20] - BIN / 2, FREQS[44] + BIN / 2
    assert np.all(np.abs(up[: T // 2] - f2) < BIN) and np.all(np.abs(low[: T // 2] - f1) < BIN)
    np.testing.assert_array_equal(up[T // 2:], 0.0)  # nothing above the noise: 0 Hz
    np.testing.assert_array_equal(centroid_bandwidth(above_noise(p, 10.0), FREQS)[1][T // 2:], 0.0)
    up_all, low_all = envelopes(above_noise(p, None), FREQS, 0.01)
    assert np.all(up_all[T // 2:] > 200) and np.all(low_all[T // 2:] < -200)  # the band edges


@pytest.mark.parametrize("scale", ["db", "linear"])
def test_a_sinusoidal_doppler_modulation_at_2_hz_has_cadence_2_hz(scale):
    fd = 50 + 60 * np.sin(2 * np.pi * 2.0 * TIMES + 0.3)
    p = np.exp(-0.5 * ((FREQS[:, None] - fd[None]) / 8) ** 2) + 1e-6  # a Gaussian line, 8 Hz
    feats = extract_features(image(p)[None, None], FREQS, TIMES, D, cadence_scale=scale)
    assert feats.cadence[0] == pytest.approx(2.0, rel=0.03)
    # the 1 % / 99 % points of the line: its centre -+ 2.326 sigma, at 50 +- 60 Hz at the extremes
    assert feats.upper.max() == pytest.approx(110 + 2.326 * 8, abs=BIN / 2)
    assert feats.lower.min() == pytest.approx(-10 - 2.326 * 8, abs=BIN / 2)
    with pytest.raises(ValueError, match="physics.cadence_scale"):
        extract_features(image(p)[None, None], FREQS, TIMES, D, cadence_scale="log")


# --------------------------------------------------------------------------- distributions
def test_wasserstein_ratio_of_a_shift_is_hand_checked():
    rng = np.random.default_rng(0)
    train, test = {"x": rng.normal(size=400)}, {"x": rng.normal(size=400)}
    from scipy.stats import wasserstein_distance

    out = wasserstein_ratios({"x": test["x"] + 7.0}, train, test, repeats=1, rng=rng)["x"]
    assert out["distance"] == pytest.approx(7.0)  # W of a shifted copy is the shift
    assert out["floor"] == pytest.approx(wasserstein_distance(train["x"], test["x"]))
    assert out["ratio"] == pytest.approx(7.0 / out["floor"])


def test_dtw_is_zero_for_a_copy_a_constant_offset_for_a_shifted_level_and_forgives_a_delay():
    t = np.linspace(0, 3, 64)
    a = np.sin(2 * np.pi * t)
    assert dtw_nearest(a[None], a[None])[0] == pytest.approx(0.0)
    flat = np.zeros(64)
    assert dtw_nearest(flat[None], (flat + 5.0)[None])[0] == pytest.approx(5.0)  # no warp helps
    assert dtw_nearest(a[None], (a + 5.0)[None])[0] <= 5.0  # warping may match peaks to troughs
    delayed = np.sin(2 * np.pi * (t - 0.1))
    assert dtw_nearest(a[None], delayed[None])[0] < 0.25 * np.mean(np.abs(a - delayed))
    # the nearest of several references
    refs = np.stack([flat + 3.0, flat + 1.0, flat - 2.0])
    np.testing.assert_allclose(dtw_nearest(np.stack([flat, flat + 1.0]), refs, chunk=2), [1.0, 0.0])


def test_dtw_matches_the_textbook_recursion():
    def textbook(a, b):  # D[i,j] = min(D[i-1,j] + c, D[i,j-1] + c, D[i-1,j-1] + 2c), / 2T
        n = len(a)
        d = np.full((n + 1, n + 1), np.inf)
        d[0, 0] = 0.0
        for i in range(1, n + 1):
            for j in range(1, n + 1):
                c = abs(a[i - 1] - b[j - 1])
                d[i, j] = min(d[i - 1, j] + c, d[i, j - 1] + c, d[i - 1, j - 1] + 2 * c)
        return d[n, n] / (2 * n)

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 12)), rng.normal(size=(5, 12))
    expected = [min(textbook(x, y) for y in b) for x in a]
    np.testing.assert_allclose(dtw_nearest(a, b, chunk=3), expected, rtol=1e-12)


def test_sifter_threshold_passes_the_quantile_of_real_test():
    rng = np.random.default_rng(1)
    cov = np.diag([9.0, 1.0, 0.25])
    train, test = rng.multivariate_normal(np.zeros(3), cov, 2000), rng.multivariate_normal(np.zeros(3), cov, 400)
    sifter = Sifter(components=3, quantile=0.95).fit(train, test)
    assert np.mean(sifter.passes(test)) == pytest.approx(0.95, abs=0.003)
    # Mahalanobis: 3 std along any axis is the same distance (in units of the train median)
    d = sifter.distance(np.array([[9.0, 0, 0], [0, 3.0, 0], [0, 0, 1.5]]))
    np.testing.assert_allclose(d, d[0], rtol=0.06)
    assert d[0] == pytest.approx(3.0 / np.sqrt(2.366), rel=0.06)  # median of chi2(3) = 2.366
    assert not sifter.passes(np.array([[0.0, 0.0, 3.0]]))[0]  # 6 std along the thin axis
    # two kept axes: a departure along the dropped one still fails (the residual part)
    two = Sifter(components=2, quantile=0.95).fit(train, test)
    assert np.mean(two.passes(test)) >= 0.95
    assert not two.passes(np.array([[0.0, 0.0, 2.0]]))[0]  # 4 std off the kept plane


@pytest.fixture(scope="module")
def real_set():
    """600 walk-like spectrograms of 2 classes (the second shifted by -80 Hz), split 300/150/150."""
    rng = np.random.default_rng(0)
    images = np.concatenate([walker_like(300, rng), walker_like(300, rng, shift_hz=-80.0)])
    labels = np.repeat([0, 1], 300)
    order = rng.permutation(600)
    images, labels = images[order], labels[order]
    return {"train": (images[:300], labels[:300]), "test": (images[300:450], labels[300:450]),
            "other": (images[450:], labels[450:])}


SMALL = {"dtw_references": 40, "dtw_samples": 40, "figures": True}


def run_physics(samples, real_set, tmp_path=None):
    return physical_fidelity(samples, real_set["train"], real_set["test"], ["a", "b"], FREQS,
                             TIMES, D, physics_settings(**SMALL), seed=0, out_dir=tmp_path)


def test_real_against_real_is_about_one_and_passes_sifting_and_a_shift_is_far_off(real_set, tmp_path):
    same = run_physics(real_set["other"], real_set, tmp_path)
    for name in ("a", "b"):
        ratios = [same["per_class"][name]["wasserstein"][k]["ratio"] for k in SUMMARY_KEYS]
        assert all(0.3 < r < 3.0 for r in ratios), ratios
        assert same["per_class"][name]["real_test_pass_rate"] >= 0.95
    assert 0.6 < same["median_ratio"] < 1.7
    assert same["pass_rate"] > 0.85
    assert 0.7 < same["dtw_ratio"] < 1.4
    assert same["real_test_pass_rate"] == pytest.approx(0.95, abs=0.02)
    assert sorted(same["figures"]) == ["physics/a.png", "physics/b.png"]
    assert (tmp_path / "physics" / "a.png").stat().st_size > 1000

    x, y = real_set["other"]
    shifted = np.roll(x, 10, axis=2)  # +78 Hz: every Doppler feature moves, cadence does not
    off = run_physics((shifted, y), real_set)
    for name in ("a", "b"):
        w = off["per_class"][name]["wasserstein"]
        for key in ("max_upper_hz", "min_lower_hz", "mean_centroid_hz"):
            assert w[key]["ratio"] > 10, (name, key, w[key])
        assert w["cadence_hz"]["ratio"] < 3  # the shift keeps the cadence
        assert off["per_class"][name]["pass_rate"] < 0.25
    assert off["median_ratio"] > 10


def test_noise_images_fail_sifting(real_set):
    rng = np.random.default_rng(3)
    noise = rng.uniform(0, 1, (100, 1, F, T)).astype(np.float32)
    out = run_physics((noise, np.arange(100) % 2), real_set)
    assert out["pass_rate"] < 0.05
    assert out["median_ratio"] > 5
    assert route_summary({"metrics": {"physics_median_ratio": 12.0, "physics_pass_rate": 0.0}}) \
        == {"physics_median_ratio": 12.0, "physics_pass_rate": 0.0}
    assert format_route_cell({"physics_median_ratio": 1.234, "physics_pass_rate": 0.9}) \
        == "ratio 1.23, pass 0.90"


def test_physics_settings_come_from_conf_and_bad_keys_are_named():
    s = physics_settings()
    assert 0 < s["percentile"] < 0.5 and s["sift_quantile"] == 0.95
    assert physics_settings(percentile=0.05)["percentile"] == 0.05
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['percentil'\].*physics/default.yaml"):
        physics_settings(percentil=0.05)
    with pytest.raises(ValueError, match="physics.sift_quantile"):
        physics_settings(sift_quantile=1.5)


def test_physics_yaml_is_commented_and_matches_the_extractor_defaults():
    import inspect
    import re

    from mdvq.core.compose import config_dir

    text = (config_dir() / "physics" / "default.yaml").read_text()
    for line in text.splitlines():
        if re.match(r"^[A-Za-z_]+:", line):
            assert "#" in line, f"conf/physics/default.yaml: no comment on {line!r}"
    defaults = inspect.signature(extract_features).parameters
    s = physics_settings()
    for key, arg in (("percentile", "percentile"), ("cadence_min_hz", "cadence_min_hz"),
                     ("cadence_max_hz", "cadence_max_hz"), ("cadence_scale", "cadence_scale"),
                     ("noise_margin_db", "noise_margin_db")):
        assert s[key] == defaults[arg].default, key


def test_dynamic_range_comes_from_the_source_or_the_setting():
    from types import SimpleNamespace

    from mdvq.evaluation.physical_fidelity import dynamic_range_of

    stft = SimpleNamespace(source=SimpleNamespace(stft=SimpleNamespace(dynamic_range_db=60.0)))
    arrays = SimpleNamespace(source=SimpleNamespace(dynamic_range_db=40.0))
    folder = SimpleNamespace(source=SimpleNamespace(root="pics"))
    assert dynamic_range_of(stft) == 60.0 and dynamic_range_of(arrays) == 40.0
    assert dynamic_range_of(folder, 50) == 50.0
    with pytest.raises(ValueError, match="physics.dynamic_range_db"):
        dynamic_range_of(folder)


def test_evaluate_parses_physics_overrides():
    from mdvq.evaluate import parse_args
    from mdvq.utils.cli import UsageError

    options, trainer, data = parse_args(["classifier=c", "samples=s", "out=o",
                                         "physics.percentile=0.05", "trainer.max_epochs=2"])
    assert options["physics"] == {"percentile": 0.05} and trainer == {"max_epochs": 2}
    assert data == []
    with pytest.raises(UsageError, match="physics.KEY=VALUE"):
        parse_args(["classifier=c", "samples=s", "out=o", "physics=false"])


def test_evaluate_refuses_a_bad_physics_key_before_loading_anything(tmp_path, capsys):
    from mdvq.evaluate import main
    from mdvq.utils.cli import run

    code = run(main, [f"classifier={tmp_path / 'none'}", f"samples={tmp_path / 'none'}",
                      f"out={tmp_path / 'out'}", "physics.percentil=0.05"])
    assert code == 2
    assert "unknown key(s) ['percentil']" in capsys.readouterr().err


# --------------------------------------------------------------------------- mdvq.evaluate
@pytest.fixture(scope="module")
def classifier_run(classifier_dir):
    from mdvq.evaluation.classifier_run import load_classifier_run

    return load_classifier_run(classifier_dir)


def test_generation_metrics_gain_the_physical_fidelity(classifier_run, tmp_path):
    from mdvq.core.samples import write_samples
    from mdvq.evaluation.generation import evaluate_generation

    dm = classifier_run.datamodule
    x, y = dm.datasets["val"].tensors  # real held-out images as "samples"
    samples = write_samples(tmp_path / "s", ((x + 1) / 2).numpy(), y.numpy(),
                            {"class_names": dm.class_names, "freqs_hz": dm.freqs_hz.tolist(),
                             "times_s": dm.times_s.tolist()}, pictures=False)
    from mdvq.core.samples import load_samples

    result = evaluate_generation(classifier_run, load_samples(samples), tmp_path / "eval",
                                 tstr=False, physics={"dtw_references": 20, "dtw_samples": 20})
    phys = result["physical_fidelity"]
    assert set(phys["per_class"]) == set(dm.class_names)
    assert phys["dynamic_range_db"] == 60.0  # read from the simulator's STFT settings
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert m["physics_pass_rate"] == phys["pass_rate"] is not None
    assert route_summary(result) == {k: m[k] for k in ("physics_median_ratio", "physics_pass_rate")}
    md = (tmp_path / "eval" / "metrics.md").read_text()
    assert "## Physical fidelity" in md and "W ratio cadence_hz" in md
    assert (tmp_path / "eval" / "physics" / f"{dm.class_names[0]}.png").is_file()
    off = evaluate_generation(classifier_run, load_samples(samples), tmp_path / "eval2",
                              tstr=False, physics={"enabled": False})
    assert off["physical_fidelity"] == {"skipped": "physics.enabled=false"}
    assert off["metrics"]["physics_pass_rate"] is None
