"""Sampling speed of a prior: samples per second against the number of sampler steps."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch


def sampling_rates(module, steps: Sequence[int], n_samples: int, guidance: float | None = None,
                   device: str = "cpu", seed: int = 0) -> list[dict]:
    """Time `module.generate` then `module.decode` of `n_samples` samples (classes in turn) at
    each number of `steps`; returns `[{"steps", "seconds", "samples_per_s"}, ...]`.

    `module` is a prior (:class:`~mdvq.models.vqdiffusion.VQDiffusionModule` or
    :class:`~mdvq.models.latent_diffusion.LatentDiffusionModule`) on `device`; guidance None
    uses the prior's `sample_guidance` (guidance != 1 doubles the batch of every step). One
    warm-up call of one step comes first. A latent prior without a measured latent scale (a
    random-weight one) gets scale 1.
    """
    if n_samples < 1 or not steps or min(int(s) for s in steps) < 1:
        raise ValueError(f"sampling needs n_samples >= 1 and steps >= 1, got {n_samples}, "
                         f"{list(steps)}")
    if hasattr(module, "scale_known") and not module.scale_known:
        module.set_latent_scale(1.0, 0.0)
    module = module.to(device).eval()
    labels = torch.arange(n_samples) % module.num_classes
    module.decode(module.generate(labels[:1], steps=1, guidance=guidance))  # warm-up
    rows = []
    for s in steps:
        g = torch.Generator(device=device).manual_seed(seed)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        module.decode(module.generate(labels, steps=int(s), guidance=guidance, generator=g))
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append({"steps": int(s), "seconds": round(seconds, 3),
                     "samples_per_s": round(n_samples / seconds, 2)})
    return rows
