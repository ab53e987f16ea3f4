"""Class predictions of the in-domain classifier and the accuracy figures built on them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mdvq.utils.pixels import to_model


@torch.no_grad()
def predict_proba(
    model: nn.Module, images, batch_size: int = 256, device: str | torch.device = "cpu",
    model_space: bool = False,
) -> np.ndarray:
    """Class probabilities ``(N, K)`` float32 (softmax of the logits) of images ``(N, C, F, T)``
    (numpy or torch) by ``model``.

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
            batch = to_model(batch)
        out.append(torch.softmax(model(batch).float(), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def predict(
    model: nn.Module, images, batch_size: int = 256, device: str | torch.device = "cpu",
    model_space: bool = False,
) -> np.ndarray:
    """Top-1 class ``(N,)`` int64 of images ``(N, C, F, T)``; arguments as :func:`predict_proba`."""
    probs = predict_proba(model, images, batch_size, device, model_space)
    return probs.argmax(axis=1).astype(np.int64) if len(probs) else np.zeros(0, np.int64)


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


def judge_profile(probs: np.ndarray, asked: np.ndarray, class_names: Sequence[str]) -> dict:
    """How the classifier judges a set of images: its confidence and where its votes go.

    ``probs`` ``(N, K)`` class probabilities; ``asked`` ``(N,)`` the class each image was asked
    for (generated) or is (real). Returns ``{"mean_confidence": mean top-1 probability in [0, 1],
    "confidence_per_class": {name: mean top-1 probability of the images asked for it (None if
    none)}, "predicted_share": {name: share of ALL images the classifier puts in that class}}``.
    A generator whose degenerate samples all fall into one class shows there as a share far
    above ``1 / K`` (real data give about the class frequencies).
    """
    probs, asked = np.asarray(probs, dtype=np.float64), np.asarray(asked)
    if probs.ndim != 2 or probs.shape[0] != len(asked) or len(asked) == 0:
        raise ValueError(f"probs {probs.shape} must be (N, K) with N = len(asked) = {len(asked)}")
    if probs.shape[1] != len(class_names):
        raise ValueError(f"probs have {probs.shape[1]} classes, class_names {len(class_names)}")
    top = probs.max(axis=1)
    votes = np.bincount(probs.argmax(axis=1), minlength=len(class_names)) / len(asked)
    return {
        "mean_confidence": float(top.mean()),
        "confidence_per_class": {str(name): (float(top[asked == c].mean()) if (asked == c).any()
                                             else None) for c, name in enumerate(class_names)},
        "predicted_share": {str(name): float(votes[c]) for c, name in enumerate(class_names)},
    }
