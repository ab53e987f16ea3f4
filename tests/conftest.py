"""Shared test fixtures: tiny in-memory spectrogram sources."""

from __future__ import annotations

import numpy as np
import pytest

from mdvq.data.dataset import SpectrogramSet


class InMemorySource:
    """A source returning a fixed SpectrogramSet and counting how often it was loaded."""

    def __init__(self, data: SpectrogramSet):
        self.data = data
        self.loads = 0

    def load(self) -> SpectrogramSet:
        self.loads += 1
        return self.data


def make_set(n_classes=3, per_class=20, n_subjects=None, size=(16, 24), seed=0) -> SpectrogramSet:
    """Random [0,1] spectrograms whose class shows as a horizontal ridge at a class-specific row."""
    rng = np.random.default_rng(seed)
    n = n_classes * per_class
    labels = np.repeat(np.arange(n_classes), per_class)
    images = rng.uniform(0, 0.2, size=(n, 1, *size)).astype(np.float32)
    for i, c in enumerate(labels):
        images[i, 0, 2 + 3 * c, :] = 1.0
    subjects = None
    if n_subjects:
        subjects = np.array([f"s{i % n_subjects:02d}" for i in range(n)])
    return SpectrogramSet(
        images=images, labels=labels, class_names=[f"class{c}" for c in range(n_classes)],
        subjects=subjects, freqs_hz=np.linspace(-500, 500, size[0]),
        times_s=np.linspace(0.05, 2.95, size[1]),
    )


@pytest.fixture
def small_set() -> SpectrogramSet:
    return make_set(n_subjects=10)
