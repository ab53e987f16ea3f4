"""Spectrogram figures with physical axes (time in seconds, Doppler in Hz)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def spectrogram_extent(shape: tuple[int, int], freqs_hz=None, times_s=None) -> tuple[list[float], str, str]:
    """imshow extent and axis labels for an `(F, T)` array: physical units when axes are known."""
    n_f, n_t = shape
    if times_s is not None and len(times_s) > 1:
        dt = (times_s[-1] - times_s[0]) / (len(times_s) - 1)
        x = [times_s[0] - dt / 2, times_s[-1] + dt / 2]
        xlabel = "time [s]"
    else:
        x, xlabel = [-0.5, n_t - 0.5], "frame"
    if freqs_hz is not None and len(freqs_hz) > 1:
        df = (freqs_hz[-1] - freqs_hz[0]) / (len(freqs_hz) - 1)
        y = [freqs_hz[0] - df / 2, freqs_hz[-1] + df / 2]
        ylabel = "Doppler [Hz]"
    else:
        y, ylabel = [-0.5, n_f - 0.5], "Doppler bin"
    return x + y, xlabel, ylabel


def plot_spectrogram(ax, image: np.ndarray, freqs_hz=None, times_s=None, title: str | None = None):
    """Draw one `(F, T)` spectrogram in [0,1] on `ax`, positive Doppler up; returns the image artist."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    extent, xlabel, ylabel = spectrogram_extent(image.shape[:2], freqs_hz, times_s)
    artist = ax.imshow(image, origin="lower", aspect="auto", extent=extent, cmap="jet",
                       vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    return artist


def spectrogram_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    freqs_hz=None,
    times_s=None,
    ncols: int = 3,
    suptitle: str | None = None,
):
    """A figure with one panel per `(C, F, T)` or `(F, T)` image in [0,1] and a shared colour bar."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows), squeeze=False,
                             constrained_layout=True)
    artist = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        artist = plot_spectrogram(ax, images[i], freqs_hz, times_s, titles[i] if titles else None)
    if artist is not None:
        fig.colorbar(artist, ax=axes, shrink=0.8, label="normalised magnitude [0,1]")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Save `fig` as PNG at `path` (folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sample_grid_figure(images: np.ndarray, labels: np.ndarray, class_names: list[str],
                       freqs_hz=None, times_s=None, per_row: int = 8, suptitle: str | None = None):
    """A figure of samples ``(N, C, F, T)`` in [0, 1] sorted by class, ``per_row`` per row, each
    panel titled with its class; axes in seconds and Hz when known."""
    order = np.argsort(np.asarray(labels), kind="stable")
    counts = {}
    titles = []
    for i in order:
        c = int(labels[i])
        counts[c] = counts.get(c, 0) + 1
        name = class_names[c] if 0 <= c < len(class_names) else f"class {c}"
        titles.append(f"{name} #{counts[c]}")
    return spectrogram_grid([images[i] for i in order], titles, freqs_hz, times_s,
                            ncols=max(1, int(per_row)), suptitle=suptitle)
