"""Classical augmentation of spectrograms: time shift, Doppler shift, SpecAugment-style masks.

The baseline that synthetic data must beat in `experiment=augment`. One transform, applied per
training example with fresh random draws: shift along time, shift along Doppler, then blank a
few time stripes and Doppler stripes (SpecAugment, Park et al. 2019, without time warping).
Shifts are not circular: the cells shifted in, and the masked cells, take the `fill` value (the
spectrogram's floor: 0 on the [0, 1] scale, -1 on the models' [-1, 1] scale), so values stay in
the input's range and the shape is unchanged.
"""

from __future__ import annotations

import torch


def shift(x: torch.Tensor, steps: int, dim: int, fill: float) -> torch.Tensor:
    """`x` moved by `steps` cells along `dim` (positive: towards higher index, i.e. later in
    time or higher Doppler), the vacated cells set to `fill`; same shape as `x`."""
    steps = int(steps)
    n = x.shape[dim]
    out = torch.full_like(x, fill)
    if abs(steps) >= n:
        return out
    if steps >= 0:
        out.narrow(dim, steps, n - steps).copy_(x.narrow(dim, 0, n - steps))
    else:
        out.narrow(dim, 0, n + steps).copy_(x.narrow(dim, -steps, n + steps))
    return out


class ClassicalAugment:
    """Random time shift, Doppler shift and time/Doppler masks of one spectrogram `(C, F, T)`.

    max_time_shift: largest shift along time, in frames (drawn uniformly in [-max, max]);
    max_doppler_shift: largest shift along Doppler, in bins (a bulk radial-velocity change);
    time_masks, time_mask_width: number of time stripes blanked and the largest width of each,
    in frames; doppler_masks, doppler_mask_width: the same along Doppler, in bins;
    fill: the value of shifted-in and masked cells (the floor of the data's scale).
    Draws come from `generator` when given, else from torch's global generator (seeded by the run).
    """

    def __init__(self, max_time_shift: int = 4, max_doppler_shift: int = 2, time_masks: int = 1,
                 time_mask_width: int = 4, doppler_masks: int = 1, doppler_mask_width: int = 3,
                 fill: float = 0.0):
        values = {"max_time_shift": max_time_shift, "max_doppler_shift": max_doppler_shift,
                  "time_masks": time_masks, "time_mask_width": time_mask_width,
                  "doppler_masks": doppler_masks, "doppler_mask_width": doppler_mask_width}
        for key, value in values.items():
            if int(value) < 0:
                raise ValueError(f"augment.classical.{key} must be >= 0, got {value}")
        self.max_time_shift = int(max_time_shift)
        self.max_doppler_shift = int(max_doppler_shift)
        self.time_masks = int(time_masks)
        self.time_mask_width = int(time_mask_width)
        self.doppler_masks = int(doppler_masks)
        self.doppler_mask_width = int(doppler_mask_width)
        self.fill = float(fill)

    def _int(self, low: int, high: int, generator) -> int:
        """A uniform integer in [low, high]."""
        return int(torch.randint(low, high + 1, (1,), generator=generator).item())

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The augmented copy of `x` `(C, F, T)` (same shape, dtype and value range)."""
        out = x
        if self.max_time_shift:
            out = shift(out, self._int(-self.max_time_shift, self.max_time_shift, generator), -1,
                        self.fill)
        if self.max_doppler_shift:
            out = shift(out, self._int(-self.max_doppler_shift, self.max_doppler_shift, generator),
                        -2, self.fill)
        out = out.clone() if out is x else out
        for dim, masks, width in ((-1, self.time_masks, self.time_mask_width),
                                  (-2, self.doppler_masks, self.doppler_mask_width)):
            n = out.shape[dim]
            for _ in range(masks if width else 0):
                w = self._int(0, min(width, n), generator)
                start = self._int(0, n - w, generator)
                out.narrow(dim, start, w).fill_(self.fill)
        return out
