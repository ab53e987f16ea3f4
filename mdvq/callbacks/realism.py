"""`ReconstructionRealism`: how close reconstructions look to real data, at every validation.

Two figures, from the ``"target"`` / ``"recon"`` images in [0, 1] that phase-1 validation and
test steps return (the model is not run again):

- ``{stage}/speckle_distance`` (judge-free, always): for each class, the 1-D Wasserstein-1
  distance between the distributions of *local standard deviation* (over ``window x window``
  pixels, in [0, 1] image units) of the real and of the reconstructed images, averaged over the
  classes present. Pixel losses average speckle and fine texture away, which shifts the
  reconstructions' local-deviation distribution towards 0; 0 means the same texture statistics.
  The distributions are histograms (``bins`` bins on [0, 0.5], the largest possible standard
  deviation of [0, 1] values), summed over batches and DDP ranks before the distance, so a
  2-process run reports the figure of a 1-process run.
- ``{stage}/recon_fd`` (when ``judge`` names an in-domain classifier): the Frechet distance
  between the judge's penultimate features of the reconstructions and of the real images
  (:mod:`mdvq.evaluation.frechet`), in squared feature units.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from torch import nn

from mdvq.callbacks.reporting import log_epoch_value

STAGES = ("val", "test")
MAX_STD = 0.5
"""Upper end of the histograms: the largest standard deviation of values in [0, 1]."""


def local_std(images01: torch.Tensor, window: int) -> torch.Tensor:
    """Local standard deviation ``(B, C, F - w + 1, T - w + 1)`` over ``window x window``
    neighbourhoods of ``(B, C, F, T)`` images in [0, 1] (population deviation, [0, 1] units)."""
    x = images01.float()
    mean = F.avg_pool2d(x, window, stride=1)
    mean_sq = F.avg_pool2d(x * x, window, stride=1)
    return (mean_sq - mean * mean).clamp_min(0).sqrt()


def class_histograms(images01: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     window: int, bins: int) -> torch.Tensor:
    """Counts ``(num_classes, bins)`` (int64) of :func:`local_std` values on ``[0, 0.5]`` per
    class of each image (``labels`` ``(B,)`` int in ``[0, num_classes)``)."""
    std = local_std(images01, window).flatten(1)  # (B, P)
    idx = (std / MAX_STD * bins).long().clamp_(0, bins - 1)
    idx = idx + labels.long().to(idx.device)[:, None] * bins
    return torch.bincount(idx.flatten(), minlength=num_classes * bins).reshape(num_classes, bins)


def wasserstein_1d(counts_a: torch.Tensor, counts_b: torch.Tensor, bin_width: float) -> float:
    """Wasserstein-1 distance between two histograms on the same bins (units of the binned
    variable): ``sum |CDF_a - CDF_b| * bin_width``."""
    a = counts_a.double().cumsum(0) / counts_a.sum()
    b = counts_b.double().cumsum(0) / counts_b.sum()
    return float((a - b).abs().sum() * bin_width)


def speckle_distance(real: torch.Tensor, recon: torch.Tensor) -> float | None:
    """Mean over the classes with both real and reconstructed counts of
    :func:`wasserstein_1d` between the rows of two ``(classes, bins)`` histograms on [0, 0.5];
    None when no class has both."""
    bin_width = MAX_STD / real.shape[1]
    found = [wasserstein_1d(r, f, bin_width) for r, f in zip(real, recon, strict=True)
             if r.sum() > 0 and f.sum() > 0]
    return sum(found) / len(found) if found else None


class ReconstructionRealism(Callback):
    """Logs ``{stage}/speckle_distance`` and, with a judge, ``{stage}/recon_fd`` (module
    docstring) for stage in val, test, from each step's ``"target"``/``"recon"`` and the batch's
    labels.

    Args:
        window: side (pixels) of the local-deviation neighbourhood (speckle grain: 3-5).
        bins: histogram bins on [0, 0.5] (resolution ``0.5 / bins``).
        judge: an in-domain classifier (an ``experiment=classifier`` run folder, its
            summary.json or .ckpt; or a module with ``features(x)`` and ``feature_dim``) for the
            Frechet distance; None: no FD. Trained on the same image size.
    """

    def __init__(self, window: int = 3, bins: int = 500, judge=None):
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"callbacks.realism.window must be an integer >= 2, got {window!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"callbacks.realism.bins must be an integer >= 2, got {bins!r}")
        self.window, self.bins = window, bins
        self.judge = judge
        self._extractor: nn.Module | None = None
        self._fd = {}
        self._counts: dict[str, list[torch.Tensor] | None] = {s: None for s in STAGES}

    # ------------------------------------------------------------------------------ judge
    def setup(self, trainer, pl_module, stage: str) -> None:
        """Load the judge (once) and check its image size against the model's."""
        if self.judge is None or self._extractor is not None:
            return
        from mdvq.evaluation.frechet import ClassifierFeatures

        model = self.judge
        if isinstance(model, (str, os.PathLike)):
            from mdvq.core.artifacts import load_module, resolve_artifact
            from mdvq.models.classifier import SpectrogramClassifier

            key = "callbacks.realism.judge"
            artifact = resolve_artifact(model, "classifier", key)
            size = getattr(pl_module.hparams, "image_size", None) if hasattr(pl_module, "hparams") \
                else None
            if artifact.image_size and size and list(artifact.image_size) != list(size):
                raise ValueError(f"{key}={model}: the judge was trained on images of "
                                 f"{list(artifact.image_size)} pixels, this model sees "
                                 f"{list(size)}; give a judge trained on the same data.image_size")
            model = load_module(SpectrogramClassifier, artifact.path, key)
        self._extractor = ClassifierFeatures(model)

    def _fd_metric(self, stage: str, device):
        from torchmetrics.image.fid import FrechetInceptionDistance

        if stage not in self._fd:
            self._fd[stage] = FrechetInceptionDistance(feature=self._extractor, normalize=True)
        metric = self._fd[stage]
        if metric.device != device:
            metric.to(device)
        return metric

    # ------------------------------------------------------------------------------ updates
    def _update(self, trainer, stage: str, outputs, batch) -> None:
        if not (isinstance(outputs, dict) and "target" in outputs and "recon" in outputs):
            return
        target, recon = outputs["target"].detach().float(), outputs["recon"].detach().float()
        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule else None
        labels = batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        if names and labels is not None and labels.dim() == 1:
            num_classes = len(names)
        else:  # no class labels: one pool
            num_classes, labels = 1, torch.zeros(len(target), dtype=torch.long)
        real = class_histograms(target, labels, num_classes, self.window, self.bins)
        fake = class_histograms(recon, labels, num_classes, self.window, self.bins)
        counts = self._counts[stage]
        self._counts[stage] = [real, fake] if counts is None else [counts[0] + real,
                                                                    counts[1] + fake]
        if self._extractor is not None:
            metric = self._fd_metric(stage, target.device)
            metric.update(target, real=True)
            metric.update(recon, real=False)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        self._update(trainer, "val", outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(trainer, "test", outputs, batch)

    # ------------------------------------------------------------------------------ report
    def _report(self, trainer, pl_module, stage: str) -> None:
        counts, self._counts[stage] = self._counts[stage], None
        if counts is None:
            return
        real, fake = (trainer.strategy.reduce(c, reduce_op="sum") for c in counts)
        value = speckle_distance(real, fake)
        if value is not None:
            log_epoch_value(pl_module, f"{stage}/speckle_distance", value)
        metric = self._fd.get(stage)
        if metric is not None:
            n_real = int(metric.real_features_num_samples)
            if n_real >= 2:
                log_epoch_value(pl_module, f"{stage}/recon_fd", float(metric.compute()))
            metric.reset()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module, "test")
