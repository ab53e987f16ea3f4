"""Class-conditional sampling from a trained prior (either route), into a samples folder.

Three priors share one interface (``generate(labels, steps, guidance, generator, sampler)`` then
``decode(...)`` to ``(B, 1, F, T)`` images in [0, 1], ``data_info``, ``num_classes``,
``hparams.sample_steps`` / ``hparams.sample_guidance``): the VQ-Diffusion prior and the
masked-token prior on code maps (``model_kind = "vqdiffusion"``, ``"maskedtokens"``) and the
latent-diffusion prior on KL-VAE latents (``"latentdiffusion"``). ``load_prior`` reads any of
them from a run folder, a Lightning checkpoint or (latent diffusion, masked tokens) an exported
folder; ``sample_prior`` draws and times samples;
``mdvq.core.samples.write_samples`` writes them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mdvq.core.artifacts import load_module, resolve_artifact

PRIOR_KINDS = ("vqdiffusion", "maskedtokens", "latentdiffusion")


def sampler_choices(kind: str) -> tuple[str, ...]:
    """The sampling strategies a prior of ``kind`` accepts (its default sampler is first)."""
    if kind == "vqdiffusion":
        from mdvq.models.discrete_diffusion import SAMPLERS

        return SAMPLERS
    if kind == "maskedtokens":
        from mdvq.models.masked_tokens import SAMPLERS

        return SAMPLERS
    if kind == "latentdiffusion":
        from mdvq.models.latent_diffusion import SAMPLERS

        return tuple(SAMPLERS)
    raise ValueError(f"not a prior: {kind!r} (priors: {', '.join(PRIOR_KINDS)})")


def _module_class(kind: str):
    if kind == "vqdiffusion":
        from mdvq.models.vqdiffusion import VQDiffusionModule

        return VQDiffusionModule
    if kind == "maskedtokens":
        from mdvq.models.masked_tokens import MaskedTokenModule

        return MaskedTokenModule
    if kind == "latentdiffusion":
        from mdvq.models.latent_diffusion import LatentDiffusionModule

        return LatentDiffusionModule
    raise ValueError(f"not a prior: {kind!r} (priors: {', '.join(PRIOR_KINDS)})")


def load_prior(path: str | Path, device: str | torch.device = "cpu", key: str = "prior"):
    """A trained prior (eval mode, on ``device``) and the file it came from.

    ``path``: a prior run folder (its best checkpoint, else ``last.ckpt``), a ``.ckpt`` of
    any prior, an exported latent-diffusion folder (``unet/``, ``scheduler/``, ``vae/``) or an
    exported masked-token folder (``transformer/``, ``scheduler/``, ``vqvae/``, ``prior.json``),
    resolved by :func:`mdvq.core.artifacts.resolve_artifact` (checkpoints are opened
    weights-only). Raises FileNotFoundError / ValueError naming ``key`` and ``path``.
    """
    artifact = resolve_artifact(path, PRIOR_KINDS, key)
    if artifact.form == "export" and artifact.kind == "maskedtokens":
        from mdvq.models.masked_tokens import load_exported_masked_prior

        return load_exported_masked_prior(artifact.path).to(device).eval(), artifact.path
    if artifact.form == "export":
        from mdvq.models.latent_diffusion import load_exported_latent_prior

        return load_exported_latent_prior(artifact.path).to(device).eval(), artifact.path
    module = load_module(_module_class(artifact.kind), artifact.path, key, map_location=device)
    return module.to(device), artifact.path


def sample_prior(module, n_per_class: int = 8, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, batch_size: int = 64,
                 classes: list[str] | None = None, sampler: str | None = None,
                 truncation: float | None = None,
                 temperature: float | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Draw ``n_per_class`` samples of each class (or of ``classes``, by name).

    ``sampler`` (None: the prior's configured one) is ``dpm`` / ``ddim`` for latent diffusion,
    ``ancestral`` / ``purity`` for VQ-Diffusion and ``confidence`` for the masked-token prior; ``truncation`` (VQ-Diffusion only; None:
    the prior's ``sample_truncation``) keeps the most likely codes up to that cumulative
    probability; ``temperature`` (masked-token prior only; None: its ``sample_temperature``)
    divides the logits of each token draw (< 1 sharpens them).

    Returns ``(images float32 (N, 1, F, T) in [0, 1], labels int64 (N,), meta)``; ``meta``
    holds class names, axes (Hz, s), steps, guidance, seed and ``samples_per_second`` (wall
    time of generation and decoding). Raises ValueError naming the argument for impossible
    values (steps outside [1, T], negative guidance, unknown class names, n_per_class < 1).
    """
    info = module.data_info or {}
    names = list(info.get("class_names") or [f"class{c}" for c in range(module.num_classes)])
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    wanted = list(range(len(names)))
    if classes:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ValueError(f"classes: unknown {unknown}; the prior knows {names}")
        wanted = [names.index(c) for c in classes]
    steps = int(module.hparams.sample_steps if steps is None else steps)
    max_steps = int(getattr(module, "max_sample_steps", module.hparams.get("num_train_timesteps")))
    if not 1 <= steps <= max_steps:
        raise ValueError(f"steps must lie in [1, {max_steps}] (the prior's training steps T; a masked-token prior's tokens), "
                         f"got {steps}")
    guidance = float(module.hparams.sample_guidance if guidance is None else guidance)
    if not (guidance >= 0 and np.isfinite(guidance)):
        raise ValueError(f"guidance must be a finite scale >= 0 (1 = conditional only, 0 = "
                         f"unconditional), got {guidance}")
    kind = getattr(module, "model_kind", None)
    choices = sampler_choices(kind)
    sampler = module.hparams.get("sampler", choices[0] if choices else None) \
        if sampler is None else sampler
    if sampler not in choices:
        raise ValueError(f"sampler must be one of {list(choices)} for a {kind} prior, got "
                         f"{sampler!r}")
    options = {"sampler": sampler}
    if kind == "vqdiffusion":
        from mdvq.models.discrete_diffusion import check_truncation

        truncation = float(module.hparams.get("sample_truncation", 1.0)
                           if truncation is None else truncation)
        check_truncation(truncation)
        options["truncation"] = truncation
    elif truncation is not None:
        raise ValueError(f"truncation applies to VQ-Diffusion priors only; this is a {kind} prior")
    if kind == "maskedtokens":
        temperature = float(module.hparams.sample_temperature if temperature is None
                            else temperature)
        if not (temperature > 0 and np.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        options["temperature"] = temperature
    elif temperature is not None:
        raise ValueError(f"temperature applies to masked-token priors only; this is a {kind} prior")
    labels = torch.tensor(wanted).repeat_interleave(int(n_per_class))
    device = module.device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    started = time.perf_counter()
    images = []
    with torch.no_grad():
        for i in range(0, len(labels), batch_size):
            out = module.generate(labels[i:i + batch_size], steps, guidance, generator, **options)
            images.append(module.decode(out).float().clamp(0, 1).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    autoencoder = getattr(module, "autoencoder", None) or getattr(module, "vqvae", None)
    meta = {
        "class_names": names,
        "freqs_hz": info.get("freqs_hz"),
        "times_s": info.get("times_s"),
        "prior_kind": getattr(module, "model_kind", None),
        "steps": steps,
        "guidance": guidance,
        **options,
        "seed": int(seed),
        "n_per_class": int(n_per_class),
        "batch_size": int(batch_size),
        "samples_per_second": round(len(labels) / max(elapsed, 1e-9), 3),
        "autoencoder": getattr(autoencoder, "source", None),
        "autoencoder_fingerprint": getattr(autoencoder, "fingerprint", None),
        "autoencoder_kind": getattr(autoencoder, "kind", None),
        "data_key": info.get("data_key"),
    }
    return torch.cat(images).numpy().astype(np.float32), labels.numpy().astype(np.int64), meta
