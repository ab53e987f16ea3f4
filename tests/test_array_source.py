"""Ready-made arrays: .npz and .npy + labels, value scales, axes, and bad inputs."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from mdvq.core.errors import DataError
from mdvq.data.arrays import ArraySource, resample_axis


def unit_images(n=4, f=6, t=5, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, f, t)).astype(np.float32)


def test_npz_with_optional_keys(tmp_path):
    images = unit_images()
    freqs = np.linspace(-100, 100, 6)
    path = tmp_path / "set.npz"
    np.savez(path, images=images, labels=np.array([1, 0, 2, 1]),
             subjects=np.array(["a", "b", "a", "c"]), class_names=np.array(["sit", "walk", "fall"]),
             freqs_hz=freqs, times_s=np.arange(5) * 0.1)
    data = ArraySource(path).load()
    assert data.images.shape == (4, 1, 6, 5) and data.images.dtype == np.float32
    np.testing.assert_array_equal(data.images[:, 0], images)
    assert data.class_names == ["sit", "walk", "fall"] and list(data.labels) == [1, 0, 2, 1]
    assert list(data.subjects) == ["a", "b", "a", "c"]
    np.testing.assert_array_equal(data.freqs_hz, freqs)
    assert list(data.sources) == [f"{path}:{i}" for i in range(4)]
    # class_names argument overrides the file's
    assert ArraySource(path, class_names=["x", "y", "z"]).load().class_names == ["x", "y", "z"]


def test_npy_with_labels_4d_and_string_labels(tmp_path):
    images = np.random.default_rng(1).uniform(size=(3, 2, 4, 4))
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", np.array(["walk", "fall", "walk"]))
    data = ArraySource(tmp_path / "x.npy", labels_path=tmp_path / "y.npy").load()
    assert data.images.shape == (3, 2, 4, 4)
    assert data.class_names == ["fall", "walk"] and list(data.labels) == [1, 0, 1]
    np.save(tmp_path / "y.npy", np.array([0, 2, 1]))
    data = ArraySource(tmp_path / "x.npy", labels_path=tmp_path / "y.npy").load()
    assert data.class_names == ["0", "1", "2"] and data.freqs_hz is None and data.subjects is None


def test_scale_modes_hand_checked(tmp_path):
    db = np.array([[[0.0, -20.0], [-40.0, -80.0]]])
    np.savez(tmp_path / "db.npz", images=db, labels=[0])
    got = ArraySource(tmp_path / "db.npz", scale="db", dynamic_range_db=40).load().images[0, 0]
    np.testing.assert_allclose(got, [[1.0, 0.5], [0.0, 0.0]])
    # dB relative to the example's own peak: a constant offset changes nothing
    np.savez(tmp_path / "db2.npz", images=db + 17.0, labels=[0])
    got2 = ArraySource(tmp_path / "db2.npz", scale="db", dynamic_range_db=40).load().images[0, 0]
    np.testing.assert_allclose(got2, got)
    mag = np.array([[[1.0, 0.1], [0.01, 0.001]]])  # 0, -20, -40, -60 dB
    np.savez(tmp_path / "mag.npz", images=mag, labels=[0])
    source = ArraySource(tmp_path / "mag.npz", scale="magnitude", dynamic_range_db=40)
    got = source.load().images[0, 0]
    np.testing.assert_allclose(got, [[1.0, 0.5], [0.0, 0.0]], atol=1e-6)
    with pytest.raises(DataError, match=r"db\.npz.*example 0 span \[-80, 0\], outside \[0,1\]"):
        ArraySource(tmp_path / "db.npz").load()
    with pytest.raises(ValueError, match="scale must be one of"):
        ArraySource(tmp_path / "db.npz", scale="log")


def test_resize_resamples_axes(tmp_path):
    freqs = np.linspace(-100, 100, 8)
    np.savez(tmp_path / "a.npz", images=unit_images(2, 8, 6), labels=[0, 1], freqs_hz=freqs,
             times_s=np.arange(6) * 0.5)
    data = ArraySource(tmp_path / "a.npz", image_size=[4, 3]).load()
    assert data.images.shape == (2, 1, 4, 3)
    # new pixel i at old position (i + 0.5) * 8 / 4 - 0.5 = 0.5, 2.5, 4.5, 6.5; step 200/7 Hz
    np.testing.assert_allclose(data.freqs_hz, -100 + np.array([0.5, 2.5, 4.5, 6.5]) * 200 / 7)
    np.testing.assert_allclose(data.times_s, [0.25, 1.25, 2.25])
    np.testing.assert_array_equal(resample_axis(freqs, 8), freqs)


@pytest.mark.parametrize(
    "arrays, problem",
    [
        ({"images": np.zeros((3, 4)), "labels": [0, 1, 2]},
         re.escape("expected images of shape (N, F, T) or (N, C, F, T), got (3, 4)")),
        ({"images": np.zeros((3, 4, 4)), "labels": [0, 1]}, "2 labels for 3 images"),
        ({"images": np.zeros((3, 4, 4))}, "missing key 'labels'"),
        ({"images": np.zeros((2, 4, 4)), "labels": [0, 1], "freqs_hz": np.zeros(5)},
         re.escape("expected freqs_hz of shape (4,), got (5,)")),
        ({"images": np.zeros((2, 4, 4)), "labels": [0, 1], "subjects": np.array(["a"])},
         re.escape("expected subjects of shape (2,), got (1,)")),
        ({"images": np.stack([np.zeros((4, 4)), np.full((4, 4), np.nan)]), "labels": [0, 1]},
         "NaN or inf values in example 1"),
        ({"images": np.stack([np.zeros((4, 4)), np.zeros((4, 4)), np.full((4, 4), 1.5)]),
          "labels": [0, 1, 0]}, re.escape("example 2 span [1.5, 1.5], outside [0,1]")),
        ({"images": np.zeros((2, 4, 4)), "labels": [0, 3], "class_names": np.array(["a", "b"])},
         re.escape("label 3 of example 1 is not one of ['a', 'b']")),
    ],
)
def test_bad_npz_raise_naming_file_and_problem(tmp_path, arrays, problem):
    path = tmp_path / "bad_set.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"bad_set\.npz.*" + problem):
        ArraySource(path).load()


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.npz.*array file not found"):
        ArraySource(tmp_path / "nothing.npz").load()
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match=r"x\.npy.*need labels_path"):
        ArraySource(tmp_path / "x.npy").load()
    np.save(tmp_path / "y.npy", np.zeros((2, 2), int))
    problem = "y.npy: expected labels of shape (N,) = (2,), got (2, 2)"
    with pytest.raises(DataError, match=re.escape(problem)):
        ArraySource(tmp_path / "x.npy", labels_path=tmp_path / "y.npy").load()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk\.npz.*unreadable \.npz"):
        ArraySource(tmp_path / "junk.npz").load()


def test_skip_bad_examples(tmp_path, caplog):
    images = unit_images(4)
    images[2, 0, 0] = np.inf
    np.savez(tmp_path / "s.npz", images=images, labels=[0, 1, 0, 1],
             subjects=np.array(list("abcd")))
    with caplog.at_level(logging.WARNING):
        data = ArraySource(tmp_path / "s.npz", on_error="skip").load()
    assert len(data) == 3 and list(data.subjects) == ["a", "b", "d"]
    np.testing.assert_array_equal(data.images[2, 0], images[3])
    assert "NaN or inf values in example 2" in caplog.text and "skipped 1 of 4" in caplog.text


def test_recording_ids_from_a_named_key(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, images=unit_images(), labels=np.array([0, 1, 0, 1]),
             recordings=np.array(["r1", "r1", "r2", "r3"]))
    assert ArraySource(path).load().subjects is None  # default key "subjects" is optional
    assert list(ArraySource(path, subjects_key="recordings").load().subjects) == [
        "r1", "r1", "r2", "r3"]
    with pytest.raises(DataError, match=r"set\.npz: missing ids key 'rec'"):
        ArraySource(path, subjects_key="rec").load()
