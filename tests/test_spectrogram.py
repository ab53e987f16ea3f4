import numpy as np
import pytest

from mdvq.data.spectrogram import (
    STFTConfig,
    compute_spectrogram,
    doppler_to_velocity,
    magnitude_to_unit,
    resize_spectrogram,
    stft_magnitude,
)
from mdvq.utils.pixels import to_image_rows


def test_tone_peaks_at_its_frequency_with_sign():
    fs, f0 = 1000.0, 125.0
    t = np.arange(2000) / fs
    cfg = STFTConfig(nperseg=128, noverlap=96, nfft=256)
    for sign in (+1, -1):
        freqs, times, mag = stft_magnitude(np.exp(2j * np.pi * sign * f0 * t), fs, cfg)
        assert np.all(np.diff(freqs) > 0), "rows must be in ascending Doppler"
        peak = freqs[mag.mean(axis=1).argmax()]
        assert abs(peak - sign * f0) <= fs / cfg.nfft
        assert times[0] == pytest.approx(cfg.nperseg / 2 / fs)


def test_magnitude_to_unit_hand_values():
    # peak 1.0 -> 0 dB -> 1; 0.1 -> -20 dB -> (60-20)/60; 1e-4 -> -80 dB -> clipped to 0
    mag = np.array([[1.0, 0.1], [1e-4, 0.01]])
    out = magnitude_to_unit(mag, dynamic_range_db=60.0)
    np.testing.assert_allclose(out, [[1.0, 40 / 60], [0.0, 20 / 60]], atol=1e-6)
    assert out.dtype == np.float32


def test_magnitude_to_unit_normalises_each_example_to_its_own_peak():
    mag = np.stack([np.full((2, 2), 5.0), np.full((2, 2), 0.5)])
    mag[0, 0, 0] = 50.0
    out = magnitude_to_unit(mag, 20.0)
    assert out[0, 0, 0] == 1.0 and out[0, 1, 1] == pytest.approx(0.0)
    assert np.all(out[1] == 1.0)


def test_nan_is_rejected():
    with pytest.raises(ValueError, match="NaN or inf"):
        magnitude_to_unit(np.array([[1.0, np.nan]]))


def test_compute_spectrogram_sums_over_range_bins_and_crops():
    # two range bins holding different tones: +50 Hz at amplitude 1, -120 Hz at amplitude 0.5
    fs = 1000.0
    t = np.arange(1000) / fs
    iq = np.stack([np.exp(2j * np.pi * 50 * t), 0.5 * np.exp(-2j * np.pi * 120 * t)])
    cfg = STFTConfig(nperseg=100, noverlap=50, nfft=200, max_doppler_hz=200.0)
    img, freqs, _ = compute_spectrogram(iq, fs, cfg, sum_axes=(0,))
    assert img.ndim == 2 and img.shape[0] == len(freqs)
    assert freqs.min() >= -200 and freqs.max() <= 200
    # both bins show in the sum, each at its own Doppler, the second 6.02 dB (20 log10 2) lower
    profile = img.mean(axis=1)
    row = {f: int(np.argmin(np.abs(freqs - f))) for f in (50.0, -120.0)}
    assert profile[row[50.0]] == pytest.approx(1.0, abs=1e-6)
    assert profile[row[-120.0]] == pytest.approx(1 - 20 * np.log10(2) / 60, abs=1e-3)
    # the sum is of magnitudes: it equals the per-bin STFT magnitudes added, then normalised
    _, _, mag = stft_magnitude(iq, fs, cfg)
    np.testing.assert_allclose(img, magnitude_to_unit(mag.sum(axis=0), 60.0), atol=1e-6)


@pytest.mark.parametrize("kwargs, key", [
    ({"noverlap": 128}, "noverlap"), ({"nfft": 64}, "nfft"), ({"dynamic_range_db": 0}, "dynamic_range_db"),
])
def test_bad_stft_config(kwargs, key):
    with pytest.raises(ValueError, match=key):
        STFTConfig(**kwargs)


def test_short_signal_error():
    with pytest.raises(ValueError, match="fewer than one STFT window"):
        stft_magnitude(np.ones(10, complex), 1000.0, STFTConfig())


def test_velocity_and_image_rows():
    assert doppler_to_velocity(np.array([2 * 5.8e9 / 299_792_458.0]), 5.8e9)[0] == pytest.approx(1.0)
    a = np.arange(6).reshape(3, 2)
    np.testing.assert_array_equal(to_image_rows(a), a[::-1])
    np.testing.assert_array_equal(to_image_rows(to_image_rows(a)), a)


def test_resize_keeps_range_and_shape():
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 128, 90)).astype(np.float32)
    out = resize_spectrogram(x, (64, 64))
    assert out.shape == (5, 1, 64, 64) and out.min() >= 0 and out.max() <= 1
    assert abs(out.mean() - x.mean()) < 0.01  # area-weighted: the mean is preserved
    np.testing.assert_array_equal(resize_spectrogram(out, (64, 64)), out)  # same size: unchanged
    # a row-constant image (one Doppler profile over time) keeps its profile when T shrinks
    rows = np.repeat(np.array([[0.2], [0.6], [1.0], [0.0]], np.float32), 8, axis=1)
    np.testing.assert_allclose(resize_spectrogram(rows, (4, 3)), rows[:, :3], atol=1e-6)


def test_pixel_conventions():
    """[0,1] <-> [-1,1] for numpy and torch alike; uint8 pixels put positive Doppler on top."""
    import torch

    from mdvq.utils.pixels import to_model, to_pixels, to_unit

    x = np.array([0.0, 0.25, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(to_model(x), [-1.0, -0.5, 1.0])
    np.testing.assert_array_equal(to_unit(to_model(x)), x)
    assert torch.equal(to_unit(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([0.0, 0.5, 1.0]))
    img = np.array([[0.0, 0.0], [1.0, 1.0]], dtype=np.float32)  # row 1: higher Doppler
    np.testing.assert_array_equal(to_pixels(img), [[255, 255], [0, 0]])
