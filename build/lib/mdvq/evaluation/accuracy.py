"""Class predictions of the in-domain classifier and the accuracy figures built on them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict(
    model: nn.Module, images, batch_size: int = 256, device: str | torch.device = "cpu",
    model_space: bool = False,
) -> np.ndarray:
    """Top-1 class ``(N,)`` int64 of images ``(N, C, F, T)`` (numpy or torch) by ``model``.

    Images are in [0, 1] (converted to the model's [-1, 1]) unless ``model_space`` is True
    (already in [-1, 1], as datamodule batches are). ``model`` returns logits ``(B, K)`` and is
    put in eval mode.
    """
    model = model.eval().to(device)
    x = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    out = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size].to(device, torch.float32)
        if not model_space:
            batch = batch * 2.0 - 1.0
        out.append(model(batch).argmax(dim=1).cpu())
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def loader_accuracy(model: nn.Module, loader, device: str | torch.device = "cpu") -> tuple[float, int]:
    """``(accuracy, count)`` of ``model`` over a loader of ``(x in [-1, 1], y)`` batches."""
    correct = total = 0
    for x, y, *_ in loader:
        pred = predict(model, x, batch_size=len(x), device=device, model_space=True)
        correct += int((pred == y.numpy()).sum())
        total += len(y)
    if total == 0:
        raise ValueError("the evaluation split is empty")
    return correct / total, total


def conditional_accuracy(predicted: np.ndarray, asked: np.ndarray, class_names: Sequence[str]) -> dict:
    """How often generated samples are classified as the class they were asked for.

    ``predicted``, ``asked``: ``(N,)`` class indices into ``class_names``. Returns
    ``{"overall": fraction, "per_class": {name: fraction or None when no sample asked for
    it}, "counts": {name: samples asked}, "confusion": K x K list (rows asked, columns
    predicted)}``.
    """
    predicted, asked = np.asarray(predicted), np.asarray(asked)
    if predicted.shape != asked.shape or predicted.ndim != 1 or len(asked) == 0:
        raise ValueError(f"predicted {predicted.shape} and asked {asked.shape} must be equal (N,)")
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (asked, predicted), 1)
    counts = confusion.sum(1)
    per_class = {str(name): (float(confusion[c, c] / counts[c]) if counts[c] else None)
                 for c, name in enumerate(class_names)}
    return {
        "overall": float(np.trace(confusion) / len(asked)),
        "per_class": per_class,
        "counts": {str(name): int(counts[c]) for c, name in enumerate(class_names)},
        "confusion": confusion.tolist(),
    }
