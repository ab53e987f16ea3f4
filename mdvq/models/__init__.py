"""Phase-1 autoencoders (diffusers networks inside thin LightningModules) and their checks."""

from mdvq.models.config_checks import check_autoencoder_config, downsampling_factor
from mdvq.models.klvae import KLVAEModule
from mdvq.models.vqvae import VQVAEModule

__all__ = ["KLVAEModule", "VQVAEModule", "check_autoencoder_config", "downsampling_factor"]
