"""Training-objective pieces shared by the phase-1 autoencoders.

- :func:`reconstruction_terms`: pixel loss (L1 or L2 on model-space images in [-1, 1]) and the
  optional spectral term (L1 between log-magnitudes of the 2-D FFT of the [0, 1] images).
- :func:`multi_resolution_spectral_loss`: L1 between log-magnitudes of windowed local 2-D FFTs at
  several window sizes (the multi-resolution STFT loss of the EnCodec/DAC audio codecs, on 2-D
  patches), an option of the adversarial objective (:mod:`mdvq.models.adversarial`).
- :func:`check_finite`: turns a NaN/inf loss into a ``FloatingPointError`` naming the step and
  the loss component.

The optimiser and its schedule: :mod:`mdvq.models.optim`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mdvq.utils.pixels import to_unit

RECON_LOSSES = ("l1", "l2")
"""Accepted values of ``recon_loss``."""


def pixel_loss(recon: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean L1 (``kind="l1"``) or mean squared error (``"l2"``) over all elements.

    ``recon`` and ``target`` are ``(B, C, F, T)`` in the model's [-1, 1] scale; returns a scalar.
    """
    if kind == "l1":
        return F.l1_loss(recon, target)
    if kind == "l2":
        return F.mse_loss(recon, target)
    raise ValueError(f"model.recon_loss must be one of {list(RECON_LOSSES)}, got {kind!r}")


def log_spectrum(image01: torch.Tensor, eps: float) -> torch.Tensor:
    """Log-magnitude of the orthonormal 2-D real FFT over ``(F, T)`` of a [0, 1] image.

    ``image01`` is ``(B, C, F, T)``; returns ``(B, C, F, T // 2 + 1)`` float32 holding
    ``log(sqrt(|X|^2 + eps^2))`` (``eps`` keeps the gradient finite at zero magnitude). Computed
    in float32 even under autocast.
    """
    spec = torch.fft.rfft2(image01.float(), norm="ortho")
    return 0.5 * torch.log(spec.real.square() + spec.imag.square() + eps * eps)


def spectral_loss(recon01: torch.Tensor, target01: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean L1 distance between :func:`log_spectrum` of two ``(B, C, F, T)`` [0, 1] images.

    Penalises missing or spurious texture (fine micro-Doppler striations) that a pixel loss
    averages away. Units: natural-log magnitude; returns a scalar.
    """
    return F.l1_loss(log_spectrum(recon01, eps), log_spectrum(target01, eps))


def local_log_spectra(image01: torch.Tensor, window: int, eps: float) -> torch.Tensor:
    """Log-magnitudes of the Hann-windowed orthonormal 2-D real FFT of every ``window x window``
    patch (hop ``window // 2``) of ``(B, C, F, T)`` images in [0, 1].

    Returns ``(B * C * P, window, window // 2 + 1)`` float32 (``P`` patches per channel) holding
    ``log(sqrt(|X|^2 + eps^2))``; computed in float32 even under autocast.
    """
    b, c, f, t = image01.shape
    hop = max(1, window // 2)
    x = image01.float().reshape(b * c, 1, f, t)
    patches = F.unfold(x, kernel_size=window, stride=hop)  # (B*C, w*w, P)
    patches = patches.transpose(1, 2).reshape(-1, window, window)
    hann = torch.hann_window(window, periodic=False, dtype=torch.float32, device=x.device)
    spec = torch.fft.rfft2(patches * (hann[:, None] * hann[None, :]), norm="ortho")
    return 0.5 * torch.log(spec.real.square() + spec.imag.square() + eps * eps)


def multi_resolution_spectral_loss(
    recon01: torch.Tensor, target01: torch.Tensor, windows: tuple[int, ...], eps: float
) -> torch.Tensor:
    """Mean over ``windows`` (pixels; those larger than the image are skipped) of the mean L1
    distance between :func:`local_log_spectra` of two ``(B, C, F, T)`` [0, 1] images.

    The 2-D analogue of the multi-resolution log-magnitude STFT losses of audio codecs (EnCodec,
    DAC): small windows compare the local texture (speckle grain), large ones the ridges.
    Units: natural-log magnitude; returns a scalar.
    """
    size = min(recon01.shape[-2:])
    used = [w for w in windows if w <= size]
    if not used:
        raise ValueError(f"model.loss.multires_windows={list(windows)}: every window is larger "
                         f"than the image ({tuple(recon01.shape[-2:])})")
    return sum(
        F.l1_loss(local_log_spectra(recon01, w, eps), local_log_spectra(target01, w, eps))
        for w in used
    ) / len(used)


def reconstruction_terms(
    recon: torch.Tensor,
    target: torch.Tensor,
    recon_loss: str,
    spectral_weight: float,
    spectral_eps: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted reconstruction objective and its unweighted parts.

    ``recon`` (decoder output, unclamped) and ``target`` are ``(B, C, F, T)`` in [-1, 1].
    Returns ``(total, terms)`` where ``total = recon_loss + spectral_weight * spectral_loss``
    and ``terms`` holds ``"recon_loss"`` and, when ``spectral_weight > 0``, ``"spectral_loss"``
    (computed on the [0, 1] images ``(x + 1) / 2``).
    """
    rec = pixel_loss(recon, target, recon_loss)
    terms = {"recon_loss": rec}
    total = rec
    if spectral_weight > 0:
        spec = spectral_loss(to_unit(recon), to_unit(target), spectral_eps)
        terms["spectral_loss"] = spec
        total = total + spectral_weight * spec
    return total, terms


def check_finite(
    total: torch.Tensor, terms: Mapping[str, torch.Tensor], stage: str, step: int, batch_idx: int
) -> None:
    """Raise ``FloatingPointError`` when the scalar ``total`` loss is NaN or inf.

    The message names the stage, the global step, the batch and every non-finite component of
    ``terms`` (name -> scalar tensor). One host sync per call (on the total only).
    """
    if bool(torch.isfinite(total.detach()).all()):
        return
    bad = [f"{k}={float(v.detach()):g}" for k, v in terms.items() if not torch.isfinite(v).all()]
    culprit = ", ".join(bad) if bad else f"loss={float(total.detach()):g}"
    raise FloatingPointError(
        f"non-finite loss at {stage} step {step} (batch {batch_idx}): {culprit}; "
        "training stops (summary.json's `checkpoints` names any checkpoint saved before this step)"
    )
