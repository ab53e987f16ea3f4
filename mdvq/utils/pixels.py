"""The two pixel conventions and the conversions between them.

Data and figures hold spectrograms in [0, 1] ("unit"); the networks see [-1, 1] ("model").
Arrays hold rows in ascending Doppler; pictures for people put positive Doppler at the top.
Each function works on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

import numpy as np


def to_model(x01):
    """[0, 1] -> [-1, 1]: ``x * 2 - 1``."""
    return x01 * 2 - 1


def to_unit(x):
    """[-1, 1] -> [0, 1]: ``(x + 1) / 2`` (not clamped)."""
    return (x + 1) / 2


def to_image_rows(spec: np.ndarray) -> np.ndarray:
    """Array rows (ascending Doppler) -> image rows (positive Doppler at the top), and back."""
    return np.flip(spec, axis=-2).copy()


def to_pixels(image01: np.ndarray) -> np.ndarray:
    """One `(F, T)` image in [0, 1] (array rows) -> uint8 pixels, positive Doppler at the top."""
    return np.round(to_image_rows(image01) * 255).astype(np.uint8)
