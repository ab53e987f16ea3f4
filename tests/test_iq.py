"""Raw I/Q recordings (`data=iq`): every format, labels and ids, bad inputs, split safety."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat, wavfile

from mdvq.core.errors import DataError
from mdvq.data.datamodule import SpectrogramDataModule
from mdvq.data.iq import IQSource, read_iq

FS = 1000.0  # Hz
STFT = {"window": "hann", "nperseg": 128, "noverlap": 96, "nfft": 256}
BIN_HZ = FS / STFT["nfft"]  # 3.9 Hz


def tone(f_hz: float, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A complex tone at `f_hz` on strong static clutter (a constant) plus weak noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FS)) / FS
    noise = 0.01 * (rng.normal(size=t.size) + 1j * rng.normal(size=t.size))
    return np.exp(2j * np.pi * f_hz * t) + 3.0 * (1 + 1j) + noise


def iq_cols(x: np.ndarray) -> np.ndarray:
    return np.stack([x.real, x.imag], axis=1)


def write(path: Path, fmt: str, x: np.ndarray) -> Path:
    """Write recording `x` in format `fmt`; returns the file path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "mat_complex":
        savemat(path.with_suffix(".mat"), {"iq": x[:, None], "fs": FS})
        return path.with_suffix(".mat")
    if fmt == "mat_cols":
        savemat(path.with_suffix(".mat"), {"iq": iq_cols(x)})
        return path.with_suffix(".mat")
    if fmt == "npy_complex":
        np.save(path.with_suffix(".npy"), x.astype(np.complex64))
        return path.with_suffix(".npy")
    if fmt == "npy_cols":
        np.save(path.with_suffix(".npy"), iq_cols(x))
        return path.with_suffix(".npy")
    if fmt == "npz":
        np.savez(path.with_suffix(".npz"), iq=x, fs=FS, fc=5.8e9)
        return path.with_suffix(".npz")
    if fmt == "wav":
        pcm = np.round(iq_cols(x) / np.abs(x).max() * 30000).astype(np.int16)
        wavfile.write(path.with_suffix(".wav"), int(FS), pcm)
        return path.with_suffix(".wav")
    if fmt == "raw_f32_le":
        iq_cols(x).astype("<f4").tofile(path.with_suffix(".bin"))
        return path.with_suffix(".bin")
    if fmt == "raw_i16_be":
        (iq_cols(x) / np.abs(x).max() * 30000).round().astype(">i2").tofile(path.with_suffix(".bin"))
        return path.with_suffix(".bin")
    raise ValueError(fmt)


FORMATS = {  # format -> (IQSource kwargs, needs a sample rate in the config)
    "mat_complex": ({}, False), "mat_cols": ({}, True), "npy_complex": ({}, True),
    "npy_cols": ({}, True), "npz": ({}, False), "wav": ({}, False),
    "raw_f32_le": ({"raw_dtype": "float32", "byte_order": "little"}, True),
    "raw_i16_be": ({"raw_dtype": "int16", "byte_order": "big"}, True),
}


def source(root, **kw) -> IQSource:
    args = {"window_s": 1.0, "hop_s": 0.5, "stft": STFT}
    args.update(kw)
    return IQSource(root, **args)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("f_hz", [125.0, -160.0])
def test_each_format_puts_the_tone_at_its_doppler(tmp_path, fmt, f_hz):
    kwargs, needs_fs = FORMATS[fmt]
    write(tmp_path / "walk" / "rec1", fmt, tone(f_hz))
    data = source(tmp_path, sample_rate_hz=FS if needs_fs else None, **kwargs).load()
    assert data.images.shape[0] == 3  # 2 s, 1 s windows every 0.5 s
    assert data.images.shape[1:3] == (1, 256) and data.class_names == ["walk"]
    assert data.images.min() >= 0 and data.images.max() == pytest.approx(1.0)
    profile = data.images[:, 0].mean(axis=(0, 2))
    peak_hz = data.freqs_hz[int(np.argmax(profile))]
    assert abs(peak_hz - f_hz) <= BIN_HZ, (fmt, peak_hz)
    # static clutter (the constant) is gone: zero Doppler is far below the tone
    assert profile[np.argmin(np.abs(data.freqs_hz))] < 0.6 * profile.max()
    assert data.times_s[0] == pytest.approx(64 / FS) and data.times_s[-1] < 1.0  # s in window
    assert all(s.startswith(str(tmp_path)) and "#" in s for s in data.sources)


def test_file_metadata_sample_rate_and_carrier(tmp_path):
    path = write(tmp_path / "a" / "r", "npz", tone(50.0))
    rec = read_iq(path)
    assert rec.sample_rate_hz == FS and rec.carrier_hz == 5.8e9 and rec.samples.shape == (2000,)
    data = source(tmp_path).load()
    assert data.meta["sample_rate_hz"] == [FS] and data.meta["carrier_hz"] == [5.8e9]


def test_labels_from_pattern_and_csv_with_subjects(tmp_path):
    for i, label in enumerate(["walk", "run", "walk"]):
        write(tmp_path / f"P{i % 2}_{label}_{i}", "npy_complex", tone(40.0 + 30 * i))
    pattern = r"(?P<subject>P\d+)_(?P<label>[a-z]+)_"
    data = source(tmp_path, sample_rate_hz=FS, name_pattern=pattern).load()
    assert data.class_names == ["run", "walk"]
    assert list(np.unique(data.subjects)) == ["P0", "P1"]
    assert (data.labels == 1).sum() == 6 and (data.labels == 0).sum() == 3
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label,subject\nP0_walk_0.npy,a,s1\nP1_run_1.npy,b,\nP0_walk_2.npy,b,s2\n")
    data = source(tmp_path, sample_rate_hz=FS, labels_csv=csv, class_names=["b", "a"]).load()
    assert data.class_names == ["b", "a"]
    assert np.bincount(data.labels).tolist() == [6, 3]
    # a missing subject falls back to the recording, so every window still has a split group
    assert sorted(set(data.subjects)) == ["P1_run_1.npy", "s1", "s2"]


def recorded_set(root: Path, n_classes: int = 4, per_class: int = 5, seconds: float = 3.0):
    """`n_classes` class folders of `per_class` recordings each; class c is a tone at 40c-60 Hz."""
    for c in range(n_classes):
        for r in range(per_class):
            write(root / f"class{c}" / f"rec{r}", "npy_complex",
                  tone(40.0 * c - 60 + 3 * r, seconds, seed=10 * c + r))


def test_windows_of_one_recording_stay_in_one_split(tmp_path):
    recorded_set(tmp_path)
    src = source(tmp_path, sample_rate_hz=FS, hop_s=0.25)  # 9 overlapping windows per recording
    dm = SpectrogramDataModule(src, image_size=(32, 16), batch_size=8, val_fraction=0.2,
                               test_fraction=0.2)
    dm.setup()
    data = src.load()
    recording = np.array([s.split("#")[0] for s in data.sources])
    assert len(np.unique(recording)) == 20 and len(data) == 20 * 9
    owner = {}
    for split, idx in dm.split_indices.items():
        for rec in set(recording[idx]):
            assert owner.setdefault(rec, split) == split, f"{rec} in {owner[rec]} and {split}"
        assert set(data.labels[idx]) == {0, 1, 2, 3}  # every class in every split
    assert sum(dm.split_counts.values()) == len(data)


def test_class_with_too_few_recordings_stops_with_counts(tmp_path):
    recorded_set(tmp_path, n_classes=2, per_class=3)
    for r in range(2):
        write(tmp_path / "class9" / f"rec{r}", "npy_complex", tone(200.0, 3.0, seed=r))
    dm = SpectrogramDataModule(source(tmp_path, sample_rate_hz=FS), image_size=(32, 16))
    with pytest.raises(ValueError, match=r"at least 3 recordings.*class0: 3, class1: 3, class9: 2"
                                         r".*too few: \['class9'\].*test_fraction=0"):
        dm.setup()


@pytest.mark.parametrize("make, kwargs, problem", [
    (lambda p: savemat(p / "c" / "a.mat", {"x": np.ones((2000, 2)), "y": np.ones(3)}),
     {"variable": "iq"}, r"a\.mat: missing variable 'iq'"),
    (lambda p: savemat(p / "c" / "a.mat", {"x": np.ones((2000, 2)), "y": np.ones((5, 2))}),
     {}, r"a\.mat: 2 variables \['x', 'y'\]: set data.variable"),
    (lambda p: np.save(p / "c" / "a.npy", np.ones((2000, 3))), {}, r"a\.npy: .*2 columns.*3 columns"),
    (lambda p: np.save(p / "c" / "a.npy", np.zeros(0, np.complex64)), {}, r"a\.npy: empty recording"),
    (lambda p: np.save(p / "c" / "a.npy", tone(50.0, 0.6)), {}, r"a\.npy: recording too short: 600"),
    (lambda p: np.save(p / "c" / "a.npy", tone(50.0)), {"sample_rate_hz": None},
     r"a\.npy: sample rate missing.*data.sample_rate_hz"),
    (lambda p: np.savez(p / "c" / "a.npz", iq=tone(50.0), fs=0.0), {"sample_rate_hz": None},
     r"a\.npz: sample rate must be positive"),
    (lambda p: np.save(p / "c" / "a.npy", np.where(np.arange(2000) == 7, np.nan, tone(50.0))), {},
     r"a\.npy: 1 NaN or inf samples \(first at sample 7\)"),
    (lambda p: wavfile.write(p / "c" / "a.wav", 1000, np.zeros(2000, np.int16)), {},
     r"a\.wav: .wav must be stereo"),
    (lambda p: (p / "c" / "a.bin").write_bytes(b"\0" * 4002), {},
     r"a\.bin: 4002 bytes is not a whole number of float32 I/Q pairs"),
    (lambda p: (p / "c" / "a.npy").write_bytes(b"\0\1\2\3 numpy?"), {}, r"a\.npy: unreadable .npy"),
    (lambda p: (p / "c" / "a.npy").write_bytes(b"not numpy"), {},
     r"a\.npy: named \.npy but its content is text"),
])
def test_bad_input_names_file_and_problem_and_caches_nothing(tmp_path, make, kwargs, problem):
    (tmp_path / "data" / "c").mkdir(parents=True)
    make(tmp_path / "data")
    cache = tmp_path / "cache"
    args = {"sample_rate_hz": FS, "cache_dir": cache, **kwargs}
    with pytest.raises(DataError, match=problem):
        source(tmp_path / "data", **args).load()
    assert not cache.exists() or all(p.suffix == ".lock" for p in cache.iterdir())  # nothing half-written


def test_bad_config_names_the_key(tmp_path):
    for kwargs, key in (({"sample_rate_hz": -1.0}, "data.sample_rate_hz"),
                        ({"window_s": 0}, "data.window_s"), ({"raw_dtype": "f8"}, "data.raw_dtype"),
                        ({"name_pattern": "("}, "data.name_pattern")):
        with pytest.raises(ValueError, match=re.escape(key)):
            source(tmp_path, **kwargs)
    np.save(tmp_path / "loose.npy", tone(50.0))
    with pytest.raises(DataError, match="not in a class folder"):
        source(tmp_path, sample_rate_hz=FS).load()


def test_skip_bad_files_with_a_warning_and_a_count(tmp_path, caplog):
    recorded_set(tmp_path, n_classes=1, per_class=2)
    np.save(tmp_path / "class0" / "bad.npy", np.ones((100, 5)))
    with caplog.at_level(logging.WARNING):
        data = source(tmp_path, sample_rate_hz=FS, on_error="skip").load()
    assert data.meta["n_skipped"] == 1 and "bad.npy" in data.meta["skipped"][0]
    assert len({s.split("#")[0] for s in data.sources}) == 2
    assert "skipped 1 of 3 files" in caplog.text


def test_cache_is_reused_and_keyed_by_settings(tmp_path):
    recorded_set(tmp_path / "d", n_classes=1, per_class=1)
    a = source(tmp_path / "d", sample_rate_hz=FS, cache_dir=tmp_path / "c").load()
    b = source(tmp_path / "d", sample_rate_hz=FS, cache_dir=tmp_path / "c").load()
    c = source(tmp_path / "d", sample_rate_hz=FS, cache_dir=tmp_path / "c", hop_s=0.25).load()
    assert a.meta["cache_key"] == b.meta["cache_key"] != c.meta["cache_key"]
    np.testing.assert_array_equal(a.images, b.images)
    assert len(list((tmp_path / "c").glob("iq-*.npz"))) == 2


def test_iq_config_composes_and_every_key_is_commented(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[1] / "conf"
    for line in (conf / "data" / "iq.yaml").read_text().splitlines():
        if re.match(r"^\s*[A-Za-z_]+:", line) and not line.strip().startswith(("defaults", "-")):
            assert "#" in line or "${" in line, line
    recorded_set(tmp_path / "rec", n_classes=3, per_class=3)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "data=iq", f"data.root={tmp_path / 'rec'}", "data.sample_rate_hz=1000",
            "data.window_s=1.0", f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.output_dir={tmp_path / 'out'}", "data.image_size=[32,16]"])
    dm = instantiate(cfg.data.datamodule)
    dm.setup()
    assert dm.class_names == ["class0", "class1", "class2"]
    assert dm.freqs_hz[0] < -400 and dm.freqs_hz[-1] > 400  # Hz
    assert 0 < dm.times_s[0] < dm.times_s[-1] < 1.0  # s


def test_empty_mat_file_is_a_named_error_and_skippable(tmp_path):
    recorded_set(tmp_path, n_classes=1, per_class=2)
    (tmp_path / "class0" / "empty.mat").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.mat: empty file \(0 bytes\)"):
        source(tmp_path, sample_rate_hz=FS).load()
    data = source(tmp_path, sample_rate_hz=FS, on_error="skip").load()
    assert data.meta["n_skipped"] == 1 and "empty.mat" in data.meta["skipped"][0]
    assert data.meta["n_recordings"] == 2


@pytest.mark.parametrize("name, make, problem", [
    ("a.npy", lambda p: write(p.with_suffix(""), "wav", tone(50.0)).rename(p),
     r"a\.npy: named \.npy but its content is a WAV file \(RIFF header\)"),
    ("a.bin", lambda p: p.write_text("time,i,q\n" + "0.001,0.5,0.25\n" * 3200),
     (r"a\.bin: named \.bin \(read as raw interleaved I/Q samples\) but its content is text "
      r"\('time,i,q'")),
    ("a.wav", lambda p: write(p.with_suffix(""), "npy_cols", tone(50.0)).rename(p),
     r"a\.wav: named \.wav but its content is a NumPy \.npy array"),
    ("a.mat", lambda p: write(p.with_suffix(""), "npz", tone(50.0)).rename(p),
     r"a\.mat: named \.mat but its content is a zip archive"),
    ("a.bin", lambda p: write(p.with_suffix(""), "mat_cols", tone(50.0)).rename(p),
     r"a\.bin: .*its content is a MATLAB \.mat file"),
])
def test_content_that_does_not_fit_the_suffix_is_named(tmp_path, name, make, problem):
    (tmp_path / "c").mkdir()
    make(tmp_path / "c" / name)
    with pytest.raises(DataError, match=problem):
        source(tmp_path, sample_rate_hz=FS).load()


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    recorded_set(tmp_path, n_classes=3, per_class=2)
    (tmp_path / "class9").mkdir()
    (tmp_path / ".hidden").mkdir()  # hidden folders are not classes
    with pytest.raises(DataError, match=r"class9: empty class folder: no recordings"):
        source(tmp_path, sample_rate_hz=FS).load()
    (tmp_path / "class9").rmdir()
    assert source(tmp_path, sample_rate_hz=FS).load().class_names == ["class0", "class1", "class2"]


def test_recordings_at_different_rates_are_refused_or_resampled(tmp_path):
    for c, fs in enumerate((500, 1000, 2000)):
        (tmp_path / f"class{c}").mkdir()
        for r in range(2):
            t = np.arange(int(3.0 * fs)) / fs
            np.savez(tmp_path / f"class{c}" / f"rec{r}.npz",
                     iq=np.exp(2j * np.pi * 100.0 * t) + 2.0, fs=float(fs))
    with pytest.raises(DataError, match=r"3 different sample rates.*500 Hz \(e\.g\. class0/rec0\.npz\)"
                                        r".*1000 Hz \(e\.g\. class1/rec0\.npz\)"
                                        r".*2000 Hz \(e\.g\. class2/rec0\.npz\).*resample_hz"):
        source(tmp_path).load()
    data = source(tmp_path, resample_hz=FS).load()
    assert data.meta["sample_rate_hz"] == [FS]
    assert data.meta["recorded_sample_rate_hz"] == [500.0, 1000.0, 2000.0]
    assert data.freqs_hz is not None and data.freqs_hz[-1] > 400  # one Doppler axis, +-FS/2
    for c in range(3):  # the 100 Hz tone lands at 100 Hz whatever the recorded rate
        mean = data.images[data.labels == c, 0].mean(axis=(0, 2))
        assert abs(data.freqs_hz[np.argmax(mean)] - 100.0) < 2 * BIN_HZ


@pytest.mark.parametrize("fs, window_s, hop_s, resolution_hz, samples", [
    (1000.0, 0.128, 0.016, 3.90625, {"nperseg": 128, "noverlap": 112, "nfft": 256}),
    (5000.0, 0.064, 0.008, 5.0, {"nperseg": 320, "noverlap": 280, "nfft": 1024}),
])
def test_stft_in_physical_units_equals_the_sample_settings(tmp_path, fs, window_s, hop_s,
                                                           resolution_hz, samples):
    t = np.arange(int(3.0 * fs)) / fs
    (tmp_path / "walk").mkdir()
    np.save(tmp_path / "walk" / "rec.npy", np.exp(2j * np.pi * 150.0 * t) + 2.0)
    sampled = source(tmp_path, sample_rate_hz=fs, stft={"window": "hann", **samples})
    by_samples = sampled.load()
    physical = source(tmp_path, sample_rate_hz=fs, stft={"window": "hann"},
                      stft_window_s=window_s, stft_hop_s=hop_s,
                      doppler_resolution_hz=resolution_hz)
    assert physical.derived(fs)["resolution_hz"] == pytest.approx(fs / samples["nfft"])
    # the same STFT in samples: the same cache key (sets made before the option keep theirs)
    assert physical.params(physical.files()) == sampled.params(sampled.files())
    by_units = physical.load()
    np.testing.assert_array_equal(by_units.images, by_samples.images)
    np.testing.assert_allclose(by_units.freqs_hz, by_samples.freqs_hz)
    np.testing.assert_allclose(by_units.times_s, by_samples.times_s)
    # the rate may come from the file: the STFT is resolved per recording
    np.savez(tmp_path / "walk" / "rec.npz", iq=np.exp(2j * np.pi * 150.0 * t) + 2.0, fs=fs)
    (tmp_path / "walk" / "rec.npy").unlink()
    from_file = source(tmp_path, stft={"window": "hann"}, stft_window_s=window_s,
                       stft_hop_s=hop_s, doppler_resolution_hz=resolution_hz).load()
    np.testing.assert_array_equal(from_file.images, by_samples.images)


def test_stft_quantity_in_both_units_names_both_keys(tmp_path):
    with pytest.raises(ValueError, match=r"data\.stft_window_s=0\.1 and data\.nperseg=128"):
        source(tmp_path, sample_rate_hz=FS, stft_window_s=0.1)
    with pytest.raises(ValueError, match=r"data\.doppler_resolution_hz=2\.0 and data\.nfft=256"):
        source(tmp_path, stft={**STFT, "nperseg": None}, doppler_resolution_hz=2.0)
    with pytest.raises(ValueError, match=r"data\.stft_hop_s=0\.5 s is 500 samples.*128"):
        source(tmp_path, sample_rate_hz=FS, stft={"nperseg": 128}, stft_hop_s=0.5)


def test_user_keys_sit_at_the_top_of_the_iq_config(tmp_path):
    from mdvq.core.compose import build, compose_config
    from mdvq.data.spectrogram import STFTConfig

    recorded_set(tmp_path / "rec", n_classes=3, per_class=3)
    base = ["data=iq", f"data.root={tmp_path / 'rec'}", "data.sample_rate_hz=1000",
            "data.window_s=1.0", f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.output_dir={tmp_path / 'out'}", "data.image_size=[32,16]"]
    cfg = compose_config([*base, "data.max_doppler_hz=250", "data.dynamic_range_db=40",
                          "data.mti_order=4"])
    src = build(cfg.data.datamodule.source)
    # the defaults in seconds and Hz are today's samples at 1 kHz
    assert src.stft == STFTConfig("hann", 128, 112, 256, 40.0, 250.0) and src.mti_order == 4
    cfg = compose_config([*base, "data.stft_window_s=null", "data.stft_hop_s=null",
                          "data.doppler_resolution_hz=null", "data.nperseg=64",
                          "data.noverlap=48", "data.nfft=128"])
    assert build(cfg.data.datamodule.source).stft == STFTConfig("hann", 64, 48, 128)
    with pytest.raises(ValueError, match=r"data\.stft_window_s=0\.128 and data\.nperseg=64"):
        build(compose_config([*base, "data.nperseg=64"]).data.datamodule.source)


def test_the_split_by_recording_is_logged_and_described(tmp_path, caplog):
    recorded_set(tmp_path, n_classes=2, per_class=3)
    dm = SpectrogramDataModule(source(tmp_path, sample_rate_hz=FS), image_size=(32, 16))
    with caplog.at_level(logging.INFO, logger="mdvq.data.datamodule"):
        dm.setup()
    split = dm.describe()["split"]
    assert split["by"] == "recording"
    assert split["groups"] == {s: {"class0": 1, "class1": 1} for s in ("train", "val", "test")}
    assert split["windows"]["train"] == {"class0": 5, "class1": 5}  # 3 s, 1 s windows every 0.5 s
    named = [f for s in ("train", "val", "test") for f in split["manifest"][s]["class0"]]
    assert sorted(named) == ["class0/rec0.npy", "class0/rec1.npy", "class0/rec2.npy"]
    assert split["single"] == {s: ["class0", "class1"] for s in ("train", "val", "test")}
    assert "split by recording (recording-disjoint" in caplog.text
    assert f"test: class0: 1 recording [{split['manifest']['test']['class0'][0]}], 5 windows" \
        in caplog.text
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("the test split holds a single recording of class(es) class0, class1" in m
               for m in warned), warned
    # with more recordings no split of this size is single: no warning for the training split
    recorded_set(tmp_path / "more", n_classes=2, per_class=8)
    caplog.clear()
    dm = SpectrogramDataModule(source(tmp_path / "more", sample_rate_hz=FS), image_size=(32, 16))
    with caplog.at_level(logging.INFO, logger="mdvq.data.datamodule"):
        dm.setup()
    assert "train" not in dm.describe()["split"]["single"]
    assert not any("the train split holds" in r.getMessage() for r in caplog.records)


def test_inspect_and_preview_name_the_derived_settings(tmp_path, capsys):
    from mdvq.core.compose import build, compose_config
    from mdvq.data.preview import write_preview
    from mdvq.run import inspect

    recorded_set(tmp_path / "rec", n_classes=3, per_class=3)  # 3 s tones at 1 kHz
    overrides = ["data=iq", f"data.root={tmp_path / 'rec'}", "data.sample_rate_hz=1000",
                 "data.window_s=1.0", "data.hop_s=0.5", "data.image_size=[32,16]",
                 f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'out'}"]
    cfg = compose_config(["task=inspect", *overrides])
    info = inspect(cfg, overrides)
    text = capsys.readouterr().out
    # by hand: fs / nfft = 1000 / 256 Hz; hop 0.016 s = 16 samples; +-fs/2; 3 s recordings cut
    # into 1 s windows every 0.5 s = 5 windows, covering 3 s each
    assert "frequency resolution 3.90625 Hz (fs / nfft = 1000 / 256)" in text
    assert "time step 0.016 s ((nperseg - noverlap) / fs = (128 - 112) / 1000)" in text
    assert "Doppler span +-500 Hz" in text
    assert "class1: 3 recordings, 15 windows, 9 s" in text
    assert "recording-disjoint split: yes" in text and "split by recording:" in text
    assert "optimiser steps per epoch: 1 (15 training windows / batch 32)" in text
    min_steps = cfg.callbacks.training_budget.min_steps
    assert info["stages"]["klvae"]["min_steps"] == min_steps
    assert f"klvae: batch 32, 1 steps/epoch, max_epochs 8, budget {min_steps} steps" in text
    assert (tmp_path / "out" / "inspect.json").exists()
    # too few recordings for three splits: still inspected, and the verdict says so
    for r in range(3):
        (tmp_path / "rec" / "class2" / f"rec{r}.npy").unlink(missing_ok=r == 2)
    write(tmp_path / "rec" / "class2" / "rec0", "npy_complex", tone(10.0, 3.0))
    info = inspect(compose_config(["task=inspect", *overrides]), overrides)
    assert info["recording_disjoint"]["too_few"] == ["class2"]
    assert "recording-disjoint split: NO" in capsys.readouterr().out
    # the preview prints the same settings beside its picture, at 5 kHz too
    t = np.arange(3 * 5000) / 5000.0
    for c in range(2):
        (tmp_path / "rec5" / f"class{c}").mkdir(parents=True)
        for r in range(3):
            np.save(tmp_path / "rec5" / f"class{c}" / f"rec{r}.npy",
                    np.exp(2j * np.pi * (300.0 + 100 * c) * t) + 2.0)
    dm = build(compose_config(["data=iq", f"data.root={tmp_path / 'rec5'}",
                               "data.sample_rate_hz=5000", *overrides[3:]]).data.datamodule)
    png = write_preview(dm, tmp_path / "preview.png")
    side = png.with_suffix(".txt").read_text()
    assert "frequency resolution 2.44141 Hz (fs / nfft = 5000 / 2048)" in side  # next 2^k >= 1280
    assert "Doppler span +-2500 Hz" in side and "train: 10 windows" in side
