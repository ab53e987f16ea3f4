"""The masking schedule of a masked-token prior (MaskGIT, Chang et al. 2022): how many tokens are
masked in training, and how many stay masked after each parallel decoding step.

- Training: a sample's mask ratio is ``gamma(u) = cos(u * pi / 2)`` with ``u ~ U(0, 1)``, and
  exactly ``clamp(round(N * gamma(u)), 1, N)`` of its ``N`` tokens are masked, at random
  positions (as diffusers' ``examples/amused/train_amused.py``). :func:`mask_tokens`.
- Decoding in ``S`` steps (diffusers' :class:`~diffusers.AmusedScheduler`, cosine schedule):
  after step ``i = 0 .. S-2`` the ``max(1, min(m - 1, floor(N * cos(pi/2 * (i+1)/S))))`` least
  confident tokens stay masked (``m`` were masked before: every step but a stalled one reveals at
  least one token, and one stays masked until the last step), and step ``S-1`` reveals every
  token left. :func:`decode_schedule` gives these counts; the scheduler itself does the work.

The time step a masked-token network sees is ``round(1000 * masked share)`` of the sample
(:func:`mask_timestep`): known exactly in training and at every decoding step.
"""

from __future__ import annotations

import math

import torch

TIMESTEP_SCALE = 1000
"""The network's time step for a sample whose tokens are all masked (0: none masked)."""


def mask_ratio(u: torch.Tensor | float) -> torch.Tensor:
    """The cosine schedule ``gamma(u) = cos(u * pi / 2)``: share of masked tokens in [0, 1] at
    ``u`` in [0, 1] (1 at ``u = 0``, 0.5 at ``u = 2/3``, 0 at ``u = 1``)."""
    return torch.cos(torch.as_tensor(u, dtype=torch.float64) * math.pi / 2)


def mask_count(u: torch.Tensor | float, num_tokens: int) -> torch.Tensor:
    """Tokens masked in training at ``u``: ``clamp(round(N * gamma(u)), 1, N)`` (int64)."""
    count = torch.round(num_tokens * mask_ratio(u)).long()
    return count.clamp(1, num_tokens)


def mask_tokens(codes: torch.Tensor, mask_id: int, u: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``mask_count(u, N)`` random tokens of each sample of ``codes`` ``(B, N)`` int64.

    ``u`` ``(B,)`` in [0, 1] (None: drawn uniformly with ``generator``). Returns ``(x_masked
    (B, N) with masked tokens set to mask_id, mask (B, N) bool)``.
    """
    bsz, n = codes.shape
    device = codes.device
    draw_on = generator.device if generator is not None else device
    if u is None:
        u = torch.rand(bsz, generator=generator, device=draw_on)
    count = mask_count(u.to("cpu"), n).to(device)
    scores = torch.rand(bsz, n, generator=generator, device=draw_on).to(device)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # rank of each position's score, 0 = lowest
    mask = ranks < count[:, None]
    return torch.where(mask, torch.full_like(codes, mask_id), codes), mask


def mask_timestep(masked: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The network's time step ``round(1000 * masked / N)`` (int64) for ``masked`` (B,) masked
    tokens out of ``num_tokens``."""
    return torch.round(masked.double() * TIMESTEP_SCALE / num_tokens).long()


def decode_schedule(num_tokens: int, steps: int) -> list[int]:
    """Masked tokens after each of ``steps`` decoding steps from the all-mask state, by
    :class:`~diffusers.AmusedScheduler`'s cosine rule (module docstring); the last is 0."""
    masked, out = num_tokens, []
    for i in range(steps - 1):
        # float32, as the scheduler computes it (a float64 floor can differ at whole numbers)
        ratio = torch.tensor([i + 1]) / steps
        keep = int((num_tokens * torch.cos(ratio * math.pi / 2)).floor())
        masked = max(1, min(masked - 1, keep))
        out.append(masked)
    return [*out, 0]
