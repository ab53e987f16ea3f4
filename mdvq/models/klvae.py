"""KL-VAE LightningModule around diffusers' ``AutoencoderKL`` (phase-1 baseline of mdvq).

Loss::

    loss = recon_loss + spectral_weight * spectral_loss + kl_weight * kl

with ``kl`` the KL divergence of the diagonal-Gaussian posterior from N(0, I), summed over the
latent and divided by the number of image elements ``C * F * T`` (nats per pixel), averaged
over the batch: with the per-pixel mean reconstruction loss this equals the latent-diffusion
convention ``sum|x - x'| / B + kl_weight * sum KL / B`` divided by ``C * F * T``, so
``kl_weight`` has the same meaning as there (1e-6 in Stable Diffusion's VAE).
Training decodes ``latent_dist.sample()``, evaluation ``latent_dist.mode()``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from lightning.pytorch import LightningModule

from mdvq.models.autoencoder import (
    AutoencoderSteps,
    hparams_ignore,
    loss_config,
    network_args,
)
from mdvq.models.config_checks import as_tuple, check_autoencoder_config, downsampling_factor


class KLVAEModule(AutoencoderSteps, LightningModule):
    """Train a diffusers ``AutoencoderKL`` on ``(x, y)`` batches, x ``(B, C, F, T)`` in [-1, 1].

    Network arguments go unchanged to ``AutoencoderKL`` (``sample_size`` defaults to
    ``max(image_size)``, ``scaling_factor`` to 1.0 until :meth:`estimate_scaling_factor`).
    The default has the same number of levels as the VQ-VAE default, hence the same
    downsampling (64x64 -> 16x16). Training arguments as in ``VQVAEModule`` plus
    ``kl_weight`` (see the module docstring for the KL normalisation) and ``loss`` (the
    ``model/loss`` group: None is the plain objective, a mapping of
    :class:`~mdvq.models.adversarial.AdversarialOptions` the adversarial one).
    Attributes: ``model`` (the ``AutoencoderKL``), ``model_kind = "klvae"``.
    """

    model_kind = "klvae"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",) * 3,
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",) * 3,
        block_out_channels: tuple[int, ...] = (16, 32, 64),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 8,
        sample_size: int | None = None,
        scaling_factor: float = 1.0,
        shift_factor: float | None = None,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
        force_upcast: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        kl_weight: float = 1e-6,
        recon_loss: str = "l1",
        spectral_weight: float = 0.0,
        spectral_eps: float = 1e-2,
        loss: dict | None = None,
        optimizer=None,
        scheduler=None,
        image_size: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__()
        down_block_types = as_tuple(down_block_types, str, "model.down_block_types")
        up_block_types = as_tuple(up_block_types, str, "model.up_block_types")
        block_out_channels = as_tuple(block_out_channels, int, "model.block_out_channels")
        image_size = as_tuple(image_size, int, "data.image_size")
        if latents_mean is not None:
            latents_mean = tuple(float(v) for v in latents_mean)
        if latents_std is not None:
            latents_std = tuple(float(v) for v in latents_std)
        sample_size = max(image_size) if sample_size is None and image_size else sample_size
        kl_weight = float(kl_weight)
        net = network_args(locals())  # checked below and passed to diffusers
        check_autoencoder_config(
            **net,
            image_size=image_size,
            recon_loss=recon_loss,
            spectral_weight=spectral_weight,
            kl_weight=kl_weight,
        )
        loss = loss_config(loss)  # model/loss: None (plain) or the checked adversarial options
        self.save_hyperparameters(ignore=hparams_ignore(loss))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.model = AutoencoderKL(
            **net,
            act_fn=act_fn,
            sample_size=sample_size,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            latents_mean=latents_mean,
            latents_std=latents_std,
            force_upcast=force_upcast,
            use_quant_conv=use_quant_conv,
            use_post_quant_conv=use_post_quant_conv,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.init_adversary(loss, in_channels, image_size)  # model/loss=adversarial: the discriminator

    # ----------------------------------------------------------------------------- network
    def latent_shape(self, image_size: tuple[int, int]) -> tuple[int, int, int]:
        """``(latent_channels, h, w)`` of the latents for an ``(F, T)`` image."""
        f = downsampling_factor(self.hparams.block_out_channels)
        return (self.hparams.latent_channels, int(image_size[0]) // f, int(image_size[1]) // f)

    def forward(
        self, x: torch.Tensor, sample: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and decode ``x`` ``(B, C, F, T)`` in [-1, 1].

        ``sample``: decode a posterior sample (default: in training mode) or its mode.
        Returns ``(recon (B, C, F, T) unclamped, kl (scalar, nats per image element))``.
        """
        posterior = self.model.encode(x).latent_dist
        sample = self.training if sample is None else sample
        z = posterior.sample() if sample else posterior.mode()
        recon = self.model.decode(z).sample
        kl = posterior.kl().float().mean() / float(x[0].numel())
        return recon, kl

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic (posterior mode) reconstruction of ``x``, clamped to [-1, 1] (no grad)."""
        return self(x, sample=False)[0].clamp(-1, 1)

    def export_pretrained(self, directory: str | Path) -> Path:
        """Save the ``AutoencoderKL`` with ``save_pretrained`` (``AutoencoderKL.from_pretrained``)."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        return directory

    @torch.no_grad()
    def estimate_scaling_factor(self, dataloader, max_batches: int | None = None) -> float:
        """Set ``scaling_factor = 1 / std`` of posterior samples over ``dataloader``; return it.

        diffusers scales latents as ``z * scaling_factor`` for a latent prior, so a unit-variance
        latent needs the reciprocal of the latents' standard deviation (as Stable Diffusion's
        0.18215). The std is taken over every element of up to ``max_batches`` batches of
        ``(x, y)``; the value goes into the model config (exported) and the hyperparameters
        (saved in later checkpoints).
        """
        was_training = self.training
        self.eval()
        n, s1, s2 = 0, 0.0, 0.0
        for i, batch in enumerate(dataloader):
            if max_batches is not None and i >= max_batches:
                break
            x = batch[0].to(self.device)
            z = self.model.encode(x).latent_dist.sample().double()
            n += z.numel()
            s1 += float(z.sum())
            s2 += float(z.square().sum())
        self.train(was_training)
        if n < 2:
            raise ValueError("estimate_scaling_factor: the dataloader gave no latents")
        var = (s2 - s1 * s1 / n) / (n - 1)
        if not var > 0:
            raise ValueError(f"estimate_scaling_factor: latent variance is {var:g}")
        factor = float(var**-0.5)
        self.model.register_to_config(scaling_factor=factor)
        self.hparams["scaling_factor"] = factor
        return factor

    # ----------------------------------------------------------------------------- training
    def _step(self, batch, batch_idx: int, stage: str):
        x = batch[0]
        recon, kl = self(x)
        loss = self.objective(x, recon, self.hparams.kl_weight * kl, {"kl": kl}, stage, batch_idx)
        return x, recon, loss

    def training_step(self, batch, batch_idx: int) -> dict:
        """One optimisation step on a posterior sample; returns ``{"loss"}``."""
        return {"loss": self._step(batch, batch_idx, "train")[2]}

    def _eval_step(self, batch, batch_idx: int, stage: str) -> dict:
        return self.eval_outputs(*self._step(batch, batch_idx, stage))

    def validation_step(self, batch, batch_idx: int) -> dict:
        """Posterior-mode reconstruction; returns ``{"loss", "target", "recon"}`` in [0, 1]."""
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> dict:
        """As :meth:`validation_step`, logged under ``test/``."""
        return self._eval_step(batch, batch_idx, "test")
