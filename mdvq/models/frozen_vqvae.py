"""A frozen, trained VQ-VAE (diffusers ``VQModel``) that maps spectrograms to code maps and back.

:func:`load_frozen_vqvae` accepts

- a run folder of ``python -m mdvq.run model=vqvae`` (its ``summary.json`` names
  ``pretrained_dir``; else its ``pretrained/`` subfolder; else its best or last checkpoint),
- a diffusers ``save_pretrained`` folder of a ``VQModel`` (``config.json`` + weights),
- a Lightning checkpoint (``.ckpt``) of :class:`mdvq.models.VQVAEModule`,

and returns a :class:`FrozenVQVAE` (the twin of :mod:`mdvq.models.frozen_klvae`). A KL-VAE in
any of these forms is refused with a ValueError naming the config key. Only the plain diffusers model is used: indices from
``model.quantize(model.encode(x).latents)``, latents from
``model.quantize.get_codebook_entry(indices, (B, h, w, D))``, images from
``model.decode(z, force_not_quantize=True)`` (docs/library-facts.md).

The continuous prior on the VQ latent (the hybrid route, docs/hybrid-prior.md) uses the
pre-quantisation latents instead: :meth:`FrozenVQVAE.encode_latents` is
``model.encode(x).latents`` (``quant_conv(encoder(x))``, before the quantiser) and
:meth:`FrozenVQVAE.decode_latents` is ``model.decode(h)``, which snaps ``h`` to the nearest code
first (the Latent Diffusion paper's "quantisation absorbed into the decoder"), or
``model.decode(h, force_not_quantize=True)`` without snapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import VQModel

from mdvq.core.artifacts import load_frozen
from mdvq.models.fingerprint import network_fingerprint

KEY = "model.vqvae"
"""The config key that names the VQ-VAE (the default key of every error message)."""


def vqvae_config(model: VQModel) -> dict:
    """The model's diffusers config as plain JSON data (lists, no ``_``-prefixed keys): enough
    for ``VQModel.from_config`` and safe to store in a checkpoint's hyperparameters."""
    cfg = json.loads(json.dumps(dict(model.config), default=str))
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def vqvae_fingerprint(model: VQModel) -> str:
    """A 16-hex-digit SHA-256 of the config and every weight (names, shapes, dtypes, bytes).

    The same weights give the same fingerprint whether they were loaded from a checkpoint or
    a ``save_pretrained`` folder, so token caches keyed by it are shared between the two.
    """
    return network_fingerprint(vqvae_config(model), model)


class FrozenVQVAE(torch.nn.Module):
    """A trained VQ-VAE in inference mode: images ``(B, C, F, T)`` in [-1, 1] <-> codes ``(B, h, w)``.

    Args:
        model: the diffusers ``VQModel`` (its parameters are frozen; the module stays in eval
            mode whatever ``.train()`` asks).
        fingerprint: stable identity of the weights for cache keys (None: computed).
        source: where it was loaded from (for messages).
        image_size: ``(F, T)`` it was trained on, when known (None otherwise).

    Attributes: ``num_codes`` (K), ``code_dim`` (D), ``latent_channels`` (D: the channels of
    the pre-quantisation latents), ``downsampling`` (pixels per code along each axis),
    ``fingerprint``, ``source``, ``image_size``, ``kind = "vqvae"``.
    """

    kind = "vqvae"

    def __init__(self, model: VQModel, fingerprint: str | None = None, source: str | None = None,
                 image_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        cfg = model.config
        self.num_codes = int(cfg.num_vq_embeddings)
        self.code_dim = int(cfg.vq_embed_dim or cfg.latent_channels)
        self.latent_channels = self.code_dim
        self.downsampling = 2 ** (len(cfg.block_out_channels) - 1)
        self.fingerprint = fingerprint or vqvae_fingerprint(model)
        self.source = source
        self.image_size = tuple(int(s) for s in image_size) if image_size else None

    def train(self, mode: bool = True) -> FrozenVQVAE:
        """Stays in eval mode (the VQ-VAE is frozen)."""
        return super().train(False)

    def latent_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Code-map size ``(h, w)`` for ``(F, T)`` images; raises ValueError when it does not divide."""
        f, t = (int(s) for s in image_size)
        if f % self.downsampling or t % self.downsampling:
            raise ValueError(f"data.image_size {[f, t]} must be divisible by the VQ-VAE's "
                             f"downsampling {self.downsampling} ({self.source})")
        return f // self.downsampling, t // self.downsampling

    def latent_shape(self, image_size: tuple[int, int]) -> tuple[int, int, int]:
        """``(D, h, w)`` of the pre-quantisation latents of ``(F, T)`` images; ValueError when
        the image size does not divide by the downsampling."""
        return (self.code_dim, *self.latent_grid(image_size))

    @torch.no_grad()
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latents ``(B, D, h, w)`` float32 (``model.encode(x).latents``: after
        ``quant_conv``, before the quantiser) of images ``x`` ``(B, C, F, T)`` in [-1, 1]."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.model.encode(x.float()).latents.float()

    @torch.no_grad()
    def snap(self, h: torch.Tensor) -> torch.Tensor:
        """The nearest codebook vectors ``(B, D, h, w)`` of latents ``h`` ``(B, D, h, w)``
        (Euclidean, as ``model.quantize``)."""
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.model.quantize(h.float())[0]

    @torch.no_grad()
    def decode_latents(self, h: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Images ``(B, C, F, T)`` clamped to [-1, 1] from pre-quantisation latents ``h``
        ``(B, D, h, w)``: ``model.decode(h)`` snaps them to the nearest codes first
        (``quantize``), ``model.decode(h, force_not_quantize=True)`` decodes them as they are."""
        if h.dim() != 4 or h.shape[1] != self.code_dim:
            raise ValueError(f"latents must be (B, {self.code_dim}, h, w), got {tuple(h.shape)}")
        with torch.autocast(device_type=h.device.type, enabled=False):
            out = self.model.decode(h.float(), force_not_quantize=not quantize).sample
        return out.clamp(-1, 1)

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, h, w)`` int64 of images ``x`` ``(B, C, F, T)`` in [-1, 1]."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = self.model.encode(x.float()).latents
            _, _, (_, _, idx) = self.model.quantize(z)
        return idx.reshape(x.shape[0], z.shape[2], z.shape[3]).long()

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, F, T)`` clamped to [-1, 1] from code indices ``(B, h, w)`` int64."""
        if indices.dim() != 3 or indices.dtype != torch.long:
            raise ValueError(f"indices must be an int64 tensor (B, h, w), got "
                             f"{tuple(indices.shape)} {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ValueError(f"indices must lie in [0, {self.num_codes})")
        b, h, w = indices.shape
        z = self.model.quantize.get_codebook_entry(indices.reshape(-1), (b, h, w, self.code_dim))
        return self.model.decode(z, force_not_quantize=True).sample.clamp(-1, 1)


def load_frozen_vqvae(path: str | Path, key: str = KEY, artifact=None) -> FrozenVQVAE:
    """Load a :class:`FrozenVQVAE` from a VQ-VAE run folder, a diffusers ``VQModel`` folder or
    a ``VQVAEModule`` checkpoint (module docstring), through
    :func:`mdvq.core.artifacts.resolve_artifact` (checkpoints are opened weights-only).
    FileNotFoundError when ``path`` holds none of these; ValueError naming ``key`` when it holds
    another kind of model (a KL-VAE) or an unreadable file. ``artifact``: ``path`` already
    resolved (:class:`mdvq.core.artifacts.Artifact`), not resolved again."""
    return load_frozen(path, "vqvae", key, FrozenVQVAE, VQModel, _module_class,
                       lambda module: module.to_diffusers(), artifact=artifact)


def _module_class():
    from mdvq.models.vqvae import VQVAEModule  # late: the module imports this one

    return VQVAEModule
