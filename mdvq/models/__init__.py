"""LightningModules of mdvq: the phase-1 autoencoders (diffusers networks inside thin modules),
the phase-2 VQ-Diffusion prior and the in-domain classifier that judges generated samples."""

from mdvq.models.classifier import SpectrogramClassifier
from mdvq.models.config_checks import check_autoencoder_config, downsampling_factor
from mdvq.models.klvae import KLVAEModule
from mdvq.models.latent_diffusion import LatentDiffusionModule
from mdvq.models.vqdiffusion import VQDiffusionModule
from mdvq.models.vqvae import VQVAEModule

__all__ = [
    "KLVAEModule",
    "LatentDiffusionModule",
    "SpectrogramClassifier",
    "VQDiffusionModule",
    "VQVAEModule",
    "check_autoencoder_config",
    "downsampling_factor",
]
