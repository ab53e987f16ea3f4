"""A frozen, trained KL-VAE (diffusers ``AutoencoderKL``) for the latent-diffusion prior.

:func:`load_frozen_klvae` accepts

- a run folder of ``python -m mdvq.run model=klvae`` (its ``summary.json`` has ``"model":
  "klvae"`` and names ``pretrained_dir``; else its ``pretrained/`` subfolder; else its best or
  last checkpoint),
- a diffusers ``save_pretrained`` folder of an ``AutoencoderKL`` (``config.json`` + weights),
- a Lightning checkpoint (``.ckpt``) of :class:`mdvq.models.KLVAEModule`,

and returns a :class:`FrozenKLVAE` (the twin of :mod:`mdvq.models.frozen_vqvae`). A VQ-VAE in
any of these forms is refused with a ValueError naming ``model.autoencoder`` and the kind
expected. Only the plain diffusers model
is used: ``encode(x).latent_dist`` (mean and std of the diagonal Gaussian posterior) and
``decode(z).sample`` (docs/library-facts.md).

Latent scale: diffusers pipelines normalise latents as ``(z - shift_factor) * scaling_factor``
and undo it before decoding (``z / scaling_factor + shift_factor``); :meth:`FrozenKLVAE.scale`
and :meth:`FrozenKLVAE.unscale` are those two maps with the values the prior measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from mdvq.core.artifacts import load_frozen
from mdvq.models.fingerprint import network_fingerprint

KEY = "model.autoencoder"
"""The config key that names the KL-VAE (the default key of every error message)."""

SCALE_KEYS = ("scaling_factor", "shift_factor")
"""Config entries that describe the prior's latent normalisation, not the network."""


def klvae_config(model: AutoencoderKL) -> dict:
    """The model's diffusers config as plain JSON data (no ``_``-prefixed keys): enough for
    ``AutoencoderKL.from_config`` and safe to store in a checkpoint's hyperparameters."""
    cfg = json.loads(json.dumps(dict(model.config), default=str))
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def klvae_fingerprint(model: AutoencoderKL) -> str:
    """A 16-hex-digit SHA-256 of the network config and every weight.

    ``scaling_factor`` and ``shift_factor`` are left out: they do not change ``encode`` or
    ``decode``, so the phase-1 KL-VAE and the ``vae/`` folder of an exported prior (which
    carries the measured scale) have the same fingerprint and share latent caches.
    """
    cfg = {k: v for k, v in klvae_config(model).items() if k not in SCALE_KEYS}
    return network_fingerprint(cfg, model)


class FrozenKLVAE(torch.nn.Module):
    """A trained KL-VAE in inference mode: images ``(B, C, F, T)`` in [-1, 1] <-> latents
    ``(B, c, h, w)``.

    Args:
        model: the diffusers ``AutoencoderKL`` (parameters frozen; the module stays in eval
            mode whatever ``.train()`` asks).
        fingerprint: stable identity of the weights for cache keys (None: computed).
        source: where it was loaded from (for messages and sample metadata).
        image_size: ``(F, T)`` it was trained on, when known (None otherwise).

    Attributes: ``latent_channels`` (c), ``downsampling`` (pixels per latent along each axis),
    ``fingerprint``, ``source``, ``image_size``, ``kind = "klvae"``.
    """

    kind = "klvae"

    def __init__(self, model: AutoencoderKL, fingerprint: str | None = None,
                 source: str | None = None, image_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        cfg = model.config
        self.latent_channels = int(cfg.latent_channels)
        self.downsampling = 2 ** (len(cfg.block_out_channels) - 1)
        self.fingerprint = fingerprint or klvae_fingerprint(model)
        self.source = source
        self.image_size = tuple(int(s) for s in image_size) if image_size else None

    def train(self, mode: bool = True) -> FrozenKLVAE:
        """Stays in eval mode (the KL-VAE is frozen)."""
        return super().train(False)

    def latent_shape(self, image_size: tuple[int, int]) -> tuple[int, int, int]:
        """``(c, h, w)`` of the latents of ``(F, T)`` images; ValueError when it does not divide."""
        f, t = (int(s) for s in image_size)
        if f % self.downsampling or t % self.downsampling:
            raise ValueError(f"data.image_size {[f, t]} must be divisible by the KL-VAE's "
                             f"downsampling {self.downsampling} ({self.source})")
        return self.latent_channels, f // self.downsampling, t // self.downsampling

    @torch.no_grad()
    def encode_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation ``(B, c, h, w)`` float32 of ``q(z | x)`` for images
        ``x`` ``(B, C, F, T)`` in [-1, 1] (unscaled latents)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            dist = self.model.encode(x.float()).latent_dist
        return dist.mean.float(), dist.std.float()

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, F, T)`` clamped to [-1, 1] from unscaled latents ``(B, c, h, w)``."""
        if z.dim() != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be (B, {self.latent_channels}, h, w), got "
                             f"{tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.model.decode(z.float()).sample.clamp(-1, 1)

    @staticmethod
    def scale(z: torch.Tensor, scaling_factor: float, shift_factor: float) -> torch.Tensor:
        """Prior-space latents ``(z - shift_factor) * scaling_factor`` (diffusers convention)."""
        return (z - shift_factor) * scaling_factor

    @staticmethod
    def unscale(z: torch.Tensor, scaling_factor: float, shift_factor: float) -> torch.Tensor:
        """Decoder-space latents ``z / scaling_factor + shift_factor`` (inverse of :meth:`scale`)."""
        return z / scaling_factor + shift_factor


def load_frozen_klvae(path: str | Path, key: str = KEY, artifact=None) -> FrozenKLVAE:
    """Load a :class:`FrozenKLVAE` from a KL-VAE run folder, a diffusers ``AutoencoderKL``
    folder or a ``KLVAEModule`` checkpoint (module docstring), through
    :func:`mdvq.core.artifacts.resolve_artifact` (checkpoints are opened weights-only).
    FileNotFoundError when ``path`` holds none of these; ValueError naming ``key`` when it holds
    another kind of model (a VQ-VAE) or an unreadable file. ``artifact``: ``path`` already
    resolved (:class:`mdvq.core.artifacts.Artifact`), not resolved again."""
    return load_frozen(path, "klvae", key, FrozenKLVAE, AutoencoderKL, _module_class,
                       lambda module: module.model, artifact=artifact)


def _module_class():
    from mdvq.models.klvae import KLVAEModule  # late: the module imports this one

    return KLVAEModule
