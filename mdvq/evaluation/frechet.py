"""Frechet distance between two sets of spectrograms on the in-domain classifier's features.

Inception weights cannot be downloaded here (docs/metrics.md), so the distance is
torchmetrics' ``FrechetInceptionDistance`` with a custom feature extractor: the classifier's
penultimate features. torchmetrics accepts any ``nn.Module`` as ``feature`` that maps a batch
to ``(N, d)``; with ``normalize=True`` it passes float images through unchanged (with
``False`` it would build a uint8 probe image), and a ``num_features`` attribute spares it the
probe forward pass. The feature sums and covariances are accumulated in float64; the
extractor returns float64 so the distance is not rounded back to float32.

    FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))    (squared feature units)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from mdvq.utils.pixels import to_model


class ClassifierFeatures(nn.Module):
    """Feature extractor for torchmetrics' FID: images ``(B, C, F, T)`` in [0, 1] -> ``(B, d)``.

    ``model`` is any module with ``features(x)`` taking model-space images in [-1, 1] (e.g.
    :class:`mdvq.models.classifier.SpectrogramClassifier`) and ``feature_dim`` (d). The model
    is kept in eval mode (BatchNorm running statistics, no dropout) whatever ``train()`` asks.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.num_features = int(model.feature_dim)

    def train(self, mode: bool = True) -> ClassifierFeatures:
        """Stay in eval mode (the extractor is frozen)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, d)`` float64 of ``images01`` ``(B, C, F, T)`` in [0, 1]."""
        return self.model.features(to_model(images01.float())).double()


def _as_tensor(images) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    return images


def frechet_distance(
    extractor: nn.Module, real01, fake01, batch_size: int = 256, device: str | torch.device = "cpu"
) -> float:
    """Frechet distance between the features of two image sets ``(N, C, F, T)`` in [0, 1].

    ``extractor`` maps ``(B, C, F, T)`` float images in [0, 1] to ``(B, d)`` features
    (:class:`ClassifierFeatures`). Each set needs at least 2 images. Arrays (numpy or torch) are
    processed in batches of ``batch_size`` on ``device``. Returns the distance in squared
    feature units (0 for identical sets up to rounding; symmetric in its two sets).
    """
    real01, fake01 = _as_tensor(real01), _as_tensor(fake01)
    for name, x in (("real", real01), ("fake", fake01)):
        if x.dim() != 4 or len(x) < 2:
            raise ValueError(f"{name} images must be (N >= 2, C, F, T), got {tuple(x.shape)}")
    metric = FrechetInceptionDistance(feature=extractor, normalize=True).to(device)
    for x, real in ((real01, True), (fake01, False)):
        for start in range(0, len(x), batch_size):
            metric.update(x[start:start + batch_size].to(device, torch.float32), real=real)
    return float(metric.compute())
