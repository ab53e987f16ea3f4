"""Phase-1 metrics (docs/metrics.md): code counts, codebook usage, perplexity, dead codes, PSNR.

Pure functions on tensors plus two small stateful pieces: `CodeCounts`, a torchmetrics `Metric`
whose per-code counts are summed across DDP ranks before any ratio is taken, and
`DeadCodeTracker`, which remembers the last training step each code was selected.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.image import peak_signal_noise_ratio

NEVER = -1  # `DeadCodeTracker.last_used_step` value of a code that was never selected


def _check_indices(indices: Tensor, num_codes: int) -> Tensor:
    """Flatten integer code indices and check they lie in [0, num_codes)."""
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise TypeError(f"code indices must be an integer tensor, got {indices.dtype}")
    flat = indices.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_codes):
        raise ValueError(
            f"code indices must lie in [0, {num_codes}), got min {int(flat.min())} "
            f"max {int(flat.max())}"
        )
    return flat


def code_counts(indices: Tensor, num_codes: int) -> Tensor:
    """How often each of the K codes was selected: int64 `(K,)` from integer indices of any shape.

    `indices` is e.g. `(B, h, w)`; every element counts once.
    """
    return torch.bincount(_check_indices(indices, num_codes), minlength=num_codes)


def codebook_usage(counts: Tensor) -> float:
    """Fraction in [0,1] of the K codes selected at least once, from counts `(K,)`."""
    if counts.numel() == 0:
        raise ValueError("codebook_usage needs counts for at least one code")
    return float((counts > 0).sum()) / counts.numel()


def perplexity(counts: Tensor) -> float:
    """`exp(H(p))` of the code frequencies `p = counts / counts.sum()` (natural log).

    K for uniform use of K codes, 1 for a collapse onto a single code. Raises ValueError
    when nothing was counted.
    """
    total = counts.sum()
    if int(total) <= 0:
        raise ValueError("perplexity of an empty count (no code selected)")
    p = counts[counts > 0].double() / total.double()
    return math.exp(float(-(p * p.log()).sum()))


def psnr_per_image(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR in dB of each image, `10*log10(data_range^2 / MSE)`: `(B, ...)` pairs -> `(B,)`.

    Images in [0,1] by default (data_range=1). The MSE is taken over every element of an
    image; a perfect reconstruction gives +inf.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.ndim < 2:
        raise ValueError(f"expected a batch (B, ...) of images, got shape {tuple(pred.shape)}")
    dims = tuple(range(1, pred.ndim))
    return peak_signal_noise_ratio(
        pred.float(), target.float(), data_range=data_range, reduction="none", dim=dims
    )


class CodeCounts(Metric):
    """Per-code selection counts `(K,)` over an evaluation pass, summed over all DDP ranks.

    `update(indices)` adds the counts of a batch of integer indices (any shape); `compute()`
    returns the int64 counts of all batches on all ranks, from which `codebook_usage` and
    `perplexity` are taken.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, num_codes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_codes = int(num_codes)
        self.add_state(
            "counts", default=torch.zeros(self.num_codes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, indices: Tensor) -> None:
        """Add the codes of one batch of indices (integer tensor of any shape)."""
        self.counts += code_counts(indices, self.num_codes).to(self.counts.device)

    def compute(self) -> Tensor:
        """The summed counts, int64 `(K,)`."""
        return self.counts


class DeadCodeTracker(nn.Module):
    """Remembers, per code, the last training step at which it was selected.

    Buffer `last_used_step`: int64 `(K,)`, `NEVER` (-1) for codes not selected yet; it is in
    `state_dict()`, so the tracker resumes from a checkpoint. A code is dead at step `s` for a
    window of N steps when it was not selected in steps `s-N+1 .. s` (never-selected codes
    are dead).
    """

    def __init__(self, num_codes: int):
        super().__init__()
        if num_codes < 1:
            raise ValueError(f"num_codes must be >= 1, got {num_codes}")
        self.num_codes = int(num_codes)
        self.register_buffer(
            "last_used_step", torch.full((self.num_codes,), NEVER, dtype=torch.long)
        )

    def mark(self, used: Tensor, step: int) -> None:
        """Record the codes where the bool mask `used` `(K,)` is True as selected at `step`."""
        if used.shape != (self.num_codes,):
            raise ValueError(
                f"used mask must have shape ({self.num_codes},), got {tuple(used.shape)}"
            )
        self.last_used_step[used.to(self.last_used_step.device, torch.bool)] = int(step)

    def update(self, indices: Tensor, step: int) -> None:
        """Record the codes in `indices` (integer tensor of any shape) as selected at `step`."""
        self.mark(code_counts(indices, self.num_codes) > 0, step)

    @property
    def latest_step(self) -> int:
        """The most recent step recorded, or `NEVER` when nothing was recorded."""
        return int(self.last_used_step.max())

    def dead_count(self, step: int, window: int) -> int:
        """Number of codes not selected during the last `window` steps up to `step` (inclusive)."""
        if window < 1:
            raise ValueError(f"dead-code window must be >= 1 step, got {window}")
        last = self.last_used_step
        return int(((last == NEVER) | (last <= int(step) - int(window))).sum())
