"""Picture folders: grayscale, colour-mapped and RGB pictures, the row flip, and bad inputs."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from PIL import Image

from mdvq.core.errors import DataError
from mdvq.data.images import ImageFolderSource, colormap_table


def save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


def gradient(h=12, w=20):
    """uint8 picture whose top row is brightest (positive Doppler up), varying along time too."""
    rows = np.linspace(255, 0, h)[:, None]
    cols = np.linspace(0, 40, w)[None, :]
    return np.clip(np.round(rows - cols), 0, 255).astype(np.uint8)


def test_grayscale_read_as_intensity_with_rows_flipped(tmp_path):
    pic = gradient()
    save(tmp_path / "b_walk" / "x1.png", pic)
    save(tmp_path / "b_walk" / "x2.PNG", pic[::-1])
    save(tmp_path / "a_fall" / "y.png", np.zeros_like(pic))
    (tmp_path / "a_fall" / "notes.txt").write_text("not an image")
    data = ImageFolderSource(tmp_path).load()
    assert data.class_names == ["a_fall", "b_walk"]
    assert list(data.labels) == [0, 1, 1]
    assert data.images.shape == (3, 1, 12, 20) and data.images.dtype == np.float32
    # row 0 of the array is the picture's bottom row (most negative Doppler)
    np.testing.assert_allclose(data.images[1, 0], pic[::-1] / 255.0, atol=1e-7)
    assert data.images[1, 0, -1, 0] == 1.0 and data.images[1, 0, 0, 0] == 0.0
    np.testing.assert_allclose(data.images[2, 0], pic / 255.0, atol=1e-7)
    assert data.subjects is None and data.freqs_hz is None


@pytest.mark.parametrize("cmap", ["jet", "viridis"])
def test_colormapped_rgb_round_trip(tmp_path, cmap):
    rng = np.random.default_rng(0)
    intensity = rng.uniform(size=(16, 24))
    intensity[:, 0] = np.linspace(1, 0, 16)  # a known gradient: brightest at the top
    idx = np.round(intensity * 255).astype(int)
    rgb = np.round(colormap_table(cmap)[idx] * 255)
    save(tmp_path / "walk" / "a.png", rgb)
    data = ImageFolderSource(tmp_path, colormap=cmap).load()
    got = data.images[0, 0]
    np.testing.assert_allclose(got, (idx / 255.0)[::-1], atol=3 / 255)
    assert np.all(np.diff(got[:, 0]) > 0)  # after the flip: ascending Doppler


def test_rgb_luminance_and_channels3(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[0] = [255, 0, 0]
    rgb[1] = [0, 255, 0]
    rgb[2] = [0, 0, 255]
    rgb[3] = [255, 255, 255]
    save(tmp_path / "c" / "a.png", rgb)
    gray = ImageFolderSource(tmp_path).load().images[0, 0]
    np.testing.assert_allclose(gray[:, 0], [1.0, 0.114, 0.587, 0.299], atol=1e-6)  # flipped rows
    colour = ImageFolderSource(tmp_path, channels=3).load().images[0]
    assert colour.shape == (3, 4, 6)
    np.testing.assert_array_equal(colour, np.moveaxis(rgb[::-1], -1, 0) / 255.0)


def test_sizes_differ_error_or_resize(tmp_path):
    save(tmp_path / "c" / "a.png", gradient(12, 20))
    save(tmp_path / "c" / "b.png", gradient(10, 20))
    with pytest.raises(DataError, match=r"b\.png.*\(1, 10, 20\) differs from \(1, 12, 20\)"):
        ImageFolderSource(tmp_path).load()
    data = ImageFolderSource(tmp_path, image_size=(8, 16)).load()
    assert data.images.shape == (2, 1, 8, 16)
    assert data.images.min() >= 0 and data.images.max() <= 1


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="missing.*image root not found"):
        ImageFolderSource(tmp_path / "missing").load()
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "a.png", gradient())
    with pytest.raises(DataError, match="flat.*no class subfolders"):
        ImageFolderSource(tmp_path / "flat").load()

    root = tmp_path / "root"
    save(root / "walk" / "a.png", gradient())
    (root / "sit").mkdir()
    with pytest.raises(DataError, match="sit.*empty class folder"):
        ImageFolderSource(root).load()
    (root / "sit" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"broken\.png.*unreadable or corrupt image"):
        ImageFolderSource(root).load()
    (root / "sit" / "broken.png").unlink()
    save(root / "sit" / "g.png", gradient())
    with pytest.raises(DataError, match=r"g\.png.*grayscale image but channels=3"):
        ImageFolderSource(root, channels=3).load()
    with pytest.raises(DataError, match=r"g\.png.*grayscale image but colormap='jet'"):
        ImageFolderSource(root, colormap="jet").load()

    photo = tmp_path / "photo"
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 255, 255  # magenta is far from every jet colour
    save(photo / "walk" / "m.png", rgb)
    with pytest.raises(DataError, match=r"m\.png.*do not fit colormap 'jet'"):
        ImageFolderSource(photo, colormap="jet").load()
    with pytest.raises(ValueError, match="colormap 'no_such_map'"):
        ImageFolderSource(photo, colormap="no_such_map")
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ImageFolderSource(photo, channels=2)


def test_skip_corrupt_image_with_warning(tmp_path, caplog):
    save(tmp_path / "walk" / "a.png", gradient())
    save(tmp_path / "walk" / "b.jpg", gradient())
    (tmp_path / "sit").mkdir()
    save(tmp_path / "sit" / "c.png", gradient())
    (tmp_path / "sit" / "d.png").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        data = ImageFolderSource(tmp_path, on_error="skip").load()
    assert len(data) == 3 and list(data.labels) == [0, 1, 1]
    assert re.search(r"skipping .*d\.png: unreadable or corrupt image", caplog.text)
    assert "skipped 1 of 4 files" in caplog.text and data.meta["n_skipped"] == 1


def test_recording_ids_from_pattern_and_physical_axes(tmp_path):
    pic = gradient(h=8, w=10)
    for cls in ("fall", "walk"):
        for rec in ("r1", "r2"):
            for w in range(2):
                save(tmp_path / cls / f"{rec}_w{w}.png", pic)
    data = ImageFolderSource(tmp_path, id_pattern=r"^(?P<recording>[^_]+)_",
                             doppler_hz=[-200, 200], duration_s=2.0).load()
    assert list(data.subjects) == ["fall/r1"] * 2 + ["fall/r2"] * 2 + ["walk/r1"] * 2 + [
        "walk/r2"] * 2
    # cell centres: 8 rows over [-200, 200] Hz (50 Hz each), 10 columns over 2 s (0.2 s each)
    np.testing.assert_allclose(data.freqs_hz, np.arange(-175, 200, 50))
    np.testing.assert_allclose(data.times_s, np.arange(10) * 0.2 + 0.1)
    resized = ImageFolderSource(tmp_path, image_size=(4, 5), doppler_hz=[-200, 200],
                                duration_s=2.0).load()
    np.testing.assert_allclose(resized.freqs_hz, [-150, -50, 50, 150])
    assert resized.subjects is None
    save(tmp_path / "walk" / "odd.png", pic)
    with pytest.raises(DataError, match=r"odd\.png: name does not match data.id_pattern"):
        ImageFolderSource(tmp_path, id_pattern=r"^(r\d)_").load()
    for kwargs, key in (({"doppler_hz": [5, 1]}, "data.doppler_hz"),
                        ({"duration_s": 0}, "data.duration_s"), ({"id_pattern": "("}, "data.id_pattern")):
        with pytest.raises(ValueError, match=re.escape(key)):
            ImageFolderSource(tmp_path, **kwargs)


def test_no_ids_warning_names_the_folder_sources_key(tmp_path, caplog):
    from mdvq.data.datamodule import SpectrogramDataModule

    for cls in ("fall", "walk"):
        for rec in range(5):
            save(tmp_path / cls / f"r{rec}_w0.png", gradient())
    with caplog.at_level(logging.WARNING):
        SpectrogramDataModule(ImageFolderSource(tmp_path), image_size=(8, 8)).setup()
    assert "no recording or subject ids" in caplog.text
    assert "data.id_pattern" in caplog.text and "name_pattern" not in caplog.text
