"""The frozen autoencoder under a latent-diffusion prior: a KL-VAE or a VQ-VAE, whichever
``model.autoencoder`` names.

:func:`load_frozen_autoencoder` resolves the path once (:func:`mdvq.core.artifacts.
resolve_artifact` with the kinds of :data:`AUTOENCODER_KINDS`: a run folder, a diffusers folder
or a checkpoint of either) and hands it to :func:`~mdvq.models.frozen_klvae.load_frozen_klvae`
(a :class:`~mdvq.models.frozen_klvae.FrozenKLVAE`: posterior mean and std) or
:func:`~mdvq.models.frozen_vqvae.load_frozen_vqvae` (a :class:`~mdvq.models.frozen_vqvae.
FrozenVQVAE`: pre-quantisation latents, decoded with or without snapping to the codebook). A
classifier or a prior is refused with a message naming the key and both accepted kinds.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKL, VQModel

from mdvq.core.artifacts import resolve_artifact
from mdvq.models.frozen_klvae import FrozenKLVAE, klvae_config, load_frozen_klvae
from mdvq.models.frozen_vqvae import FrozenVQVAE, load_frozen_vqvae, vqvae_config

KEY = "model.autoencoder"
"""The config key that names the autoencoder (the default key of every error message)."""

AUTOENCODER_KINDS = ("klvae", "vqvae")
"""Kinds a latent-diffusion prior can sit on (:data:`mdvq.core.artifacts.MODEL_KINDS`)."""


def load_frozen_autoencoder(path: str | Path, key: str = KEY) -> FrozenKLVAE | FrozenVQVAE:
    """The frozen KL-VAE or VQ-VAE behind ``path`` (run folder, diffusers folder or ``.ckpt``).

    Raises FileNotFoundError when nothing is there; ValueError / DataError naming ``key`` and
    the accepted kinds when it holds another kind of model (a classifier, a prior) or an
    unreadable file."""
    artifact = resolve_artifact(path, AUTOENCODER_KINDS, key)
    loader = load_frozen_vqvae if artifact.kind == "vqvae" else load_frozen_klvae
    return loader(path, key, artifact=artifact)


def autoencoder_from_config(kind: str, config: dict, fingerprint: str | None,
                            source: str | None, image_size) -> FrozenKLVAE | FrozenVQVAE:
    """An untrained frozen autoencoder of ``kind`` built from its diffusers ``config`` (the
    weights come from a checkpoint's state dict afterwards)."""
    if kind == "vqvae":
        return FrozenVQVAE(VQModel.from_config(config), fingerprint, source=source,
                           image_size=image_size)
    if kind == "klvae":
        return FrozenKLVAE(AutoencoderKL.from_config(config), fingerprint, source=source,
                           image_size=image_size)
    raise ValueError(f"autoencoder_kind must be one of {list(AUTOENCODER_KINDS)}, got {kind!r}")


def autoencoder_config(autoencoder: FrozenKLVAE | FrozenVQVAE) -> dict:
    """The diffusers config of a frozen autoencoder as plain JSON data (for checkpoints)."""
    return (vqvae_config if autoencoder.kind == "vqvae" else klvae_config)(autoencoder.model)
