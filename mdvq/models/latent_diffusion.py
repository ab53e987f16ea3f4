"""Class-conditional latent diffusion prior on the latents of a frozen KL-VAE (the KL route) or
of a frozen VQ-VAE (the hybrid route: continuous diffusion on the VQ-VAE's pre-quantisation
latents, decoded through the codebook; docs/hybrid-prior.md).

The network is diffusers' ``UNet2DModel`` with a class table of ``num_classes + 1`` rows
(``num_class_embeds``; the last row is the null class for classifier-free guidance: labels are
dropped to it with probability ``label_drop_prob`` in training). It then *requires*
``class_labels`` (docs/library-facts.md). Training: ``DDPMScheduler.add_noise`` on scaled
latents (:mod:`mdvq.data.latents`), target ``epsilon`` or ``v`` (``get_velocity``), optional
min-SNR-gamma loss weights (``diffusers.training_utils.compute_snr``), EMA of the weights
(``diffusers.training_utils.EMAModel``) used for validation, sampling and export. Sampling:
``DPMSolverMultistepScheduler`` or ``DDIMScheduler`` ``.from_config(ddpm.config)``, any number
of steps, guidance ``eps_u + s (eps_c - eps_u)`` with the conditional and null halves in one
batch of 2B; the frozen autoencoder decodes ``z / scaling_factor + shift_factor``: a KL-VAE
directly, a VQ-VAE with ``VQModel.decode(h)`` (snapped to the nearest code, the default, as the
Latent Diffusion paper's appendix G) or, with ``decode_quantized=False``,
``VQModel.decode(h, force_not_quantize=True)``.

Logged: ``train/loss`` (what is optimised: min-SNR-weighted MSE to the target), ``{val,test}/
loss`` (the same with fixed noise and time steps, EMA weights; checkpoints monitor
``val/loss``), ``/mse`` (unweighted MSE to the target).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.training_utils import EMAModel, compute_snr
from lightning.pytorch import LightningModule

from mdvq.models import frozen_autoencoder
from mdvq.models.config_checks import as_tuple
from mdvq.models.frozen_autoencoder import autoencoder_from_config, load_frozen_autoencoder
from mdvq.models.frozen_klvae import FrozenKLVAE
from mdvq.models.losses import check_finite
from mdvq.models.optim import configure_optimization
from mdvq.models.prior import ConditionalPrior, data_info
from mdvq.utils.pixels import to_unit

log = logging.getLogger(__name__)

LOGGED = ("loss", "mse")
"""Metric names this module logs under ``train/``, ``val/`` and ``test/``."""

SAMPLERS = {"dpm": DPMSolverMultistepScheduler, "ddim": DDIMScheduler}
"""Accepted values of ``sampler`` and the diffusers scheduler each one builds."""

PREDICTION_TYPES = ("epsilon", "v_prediction")
"""Accepted values of ``prediction_type``."""

MIN_TERMINAL_ALPHA_CUMPROD = 1e-6
"""Smallest ``alpha_cumprod`` at ``t = T - 1`` accepted with ``epsilon`` prediction (the
cosine schedule reaches ~1e-9 there: zero terminal SNR needs ``v_prediction``)."""

EXPORT_META = "prior.json"
"""Name of the metadata file of an exported prior."""

EXPORT_FOLDERS = {"klvae": "vae", "vqvae": "vqvae"}
"""The autoencoder's folder in an exported prior, per autoencoder kind (diffusers' names:
``StableDiffusionPipeline.vae``, ``LDMPipeline.vqvae``)."""

_NAMES = {"klvae": "KL-VAE", "vqvae": "VQ-VAE"}


class LatentDiffusionModule(ConditionalPrior, LightningModule):
    """Train a class-conditional latent diffusion prior on ``(z (B, c, h, w), labels (B,))``.

    Args:
        autoencoder: the frozen autoencoder: a KL-VAE (a ``model=klvae`` run folder, a diffusers
            ``AutoencoderKL`` folder or a ``KLVAEModule`` checkpoint) or a VQ-VAE (a
            ``model=vqvae`` run folder, a diffusers ``VQModel`` folder or a ``VQVAEModule``
            checkpoint; the prior then models its pre-quantisation latents)
            (:func:`~mdvq.models.frozen_autoencoder.load_frozen_autoencoder`).
        num_classes: number of data classes (checked against the data in
            :meth:`wrap_datamodule`); label ``num_classes`` is the null class.
        image_size: ``(F, T)`` of the spectrograms; with the autoencoder's downsampling it gives
            the latent grid ``(h, w)``; must equal its training size when that is known.
        block_out_channels, down_block_types, up_block_types, layers_per_block,
            attention_head_dim, norm_num_groups, dropout: ``UNet2DModel`` arguments.
        num_train_timesteps, beta_schedule, prediction_type, timestep_spacing:
            ``DDPMScheduler`` arguments (``prediction_type``: ``epsilon`` | ``v_prediction``;
            ``timestep_spacing`` is used by the samplers built from its config).
        min_snr_gamma: min-SNR-gamma loss weighting (Hang et al. 2023; None or 0: plain MSE).
        label_drop_prob: probability of training a sample with the null label.
        sample_posterior: train on ``z ~ q(z|x)`` (True) or the posterior mean (KL-VAE only).
        decode_quantized: VQ-VAE only: decode sampled latents snapped to the nearest code
            (True; None means True) or as they are (False, ``force_not_quantize``); given with a
            KL-VAE it is refused.
        scaling_factor, shift_factor: fixed latent scale and shift (None: measured on the
            training latents by :class:`~mdvq.data.latents.LatentDataModule`); ``use_shift``
            measures a shift (else 0).
        ema_decay: maximum EMA decay (0: no EMA); ``ema_power``: EMA warm-up power
            (decay ``1 - (1 + step)^-power``, capped at ``ema_decay``).
        optimizer, scheduler: ``functools.partial`` objects as in ``VQVAEModule`` (None:
            AdamW, lr 1e-3).
        sampler: ``dpm`` (DPM-Solver++ multistep) or ``ddim``; ``sample_steps``,
            ``sample_guidance``: defaults of :meth:`generate` (guidance 1: conditional only).
        val_samples_per_class, sample_every_n_epochs: sample grid drawn every n validation
            epochs and after testing (0 samples: off), written to ``output_dir/figures``.
        output_dir: folder for figures (None: the trainer's log folder).
        cache_dir: latent cache folder of :meth:`wrap_datamodule` (None: no cache).
        encode_batch_size: spectrograms per autoencoder call when building the latent cache.
        batch_size: training batch size of the latent data (None: the data's).
        autoencoder_config, autoencoder_fingerprint, autoencoder_image_size,
            autoencoder_kind: filled in by the module itself (saved in checkpoints, so
            ``load_from_checkpoint`` rebuilds the autoencoder without reading ``autoencoder``
            again; a checkpoint without a kind holds a KL-VAE).

    Attributes: ``unet``, ``noise_scheduler`` (``DDPMScheduler``), ``autoencoder``
    (:class:`~mdvq.models.frozen_klvae.FrozenKLVAE` or
    :class:`~mdvq.models.frozen_vqvae.FrozenVQVAE`), ``autoencoder_kind`` ("klvae" | "vqvae"),
    ``decode_quantized`` (bool; VQ-VAE), ``ema`` (``EMAModel`` or None), ``latent_shape``
    ``(c, h, w)``, ``num_classes``, ``null_class``, ``data_info`` (class names and axes; saved
    in checkpoints), ``latent_stats`` (the measured std, mean and per-channel std of the
    unscaled training latents; saved in checkpoints), buffers ``latent_scale`` /
    ``latent_shift`` (NaN until measured), ``model_kind = "latentdiffusion"``.
    """

    model_kind = "latentdiffusion"
    logged = LOGGED
    experiment = "latentdiffusion"

    def __init__(
        self,
        autoencoder: str | None = None,
        num_classes: int = 6,
        image_size: tuple[int, int] = (64, 64),
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block: int = 1,
        attention_head_dim: int = 16,
        norm_num_groups: int = 8,
        dropout: float = 0.0,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        prediction_type: str = "v_prediction",
        timestep_spacing: str = "trailing",
        min_snr_gamma: float | None = 5.0,
        label_drop_prob: float = 0.1,
        sample_posterior: bool = True,
        decode_quantized: bool | None = None,
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        use_shift: bool = False,
        ema_decay: float = 0.999,
        ema_power: float = 2 / 3,
        optimizer=None,
        scheduler=None,
        sampler: str = "dpm",
        sample_steps: int = 15,
        sample_guidance: float = 2.0,
        val_samples_per_class: int = 2,
        sample_every_n_epochs: int = 5,
        output_dir: str | None = None,
        cache_dir: str | None = None,
        encode_batch_size: int = 256,
        batch_size: int | None = 64,
        autoencoder_config: dict | None = None,
        autoencoder_fingerprint: str | None = None,
        autoencoder_image_size: tuple[int, int] | None = None,
        autoencoder_kind: str | None = None,
    ) -> None:
        super().__init__()
        image_size = as_tuple(image_size, int, "data.image_size")
        block_out_channels = as_tuple(block_out_channels, int, "model.block_out_channels")
        down_block_types = as_tuple(down_block_types, str, "model.down_block_types")
        up_block_types = as_tuple(up_block_types, str, "model.up_block_types")
        _check_args(num_classes=num_classes, label_drop_prob=label_drop_prob,
                    prediction_type=prediction_type, sampler=sampler, sample_steps=sample_steps,
                    num_train_timesteps=num_train_timesteps, sample_guidance=sample_guidance,
                    min_snr_gamma=min_snr_gamma, ema_decay=ema_decay,
                    val_samples_per_class=val_samples_per_class,
                    sample_every_n_epochs=sample_every_n_epochs,
                    block_out_channels=block_out_channels, down_block_types=down_block_types,
                    up_block_types=up_block_types, norm_num_groups=norm_num_groups,
                    scaling_factor=scaling_factor)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "autoencoder_config",
                                          "autoencoder_fingerprint", "autoencoder_image_size",
                                          "autoencoder_kind"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if autoencoder_config is not None:  # from a checkpoint: weights come from its state_dict
            self.autoencoder = autoencoder_from_config(
                autoencoder_kind or "klvae", autoencoder_config, autoencoder_fingerprint,
                autoencoder, autoencoder_image_size)
        else:
            if autoencoder is None:
                raise ValueError("model.autoencoder must name the trained autoencoder: a KL-VAE "
                                 "(a model=klvae run folder, a diffusers AutoencoderKL folder or "
                                 "a KLVAEModule .ckpt) or a VQ-VAE (a model=vqvae run folder, a "
                                 "diffusers VQModel folder or a VQVAEModule .ckpt)")
            self.autoencoder = load_frozen_autoencoder(autoencoder)
        self.autoencoder_kind = self.autoencoder.kind
        if self.autoencoder_kind != "vqvae" and decode_quantized is not None:
            raise ValueError(f"model.decode_quantized={decode_quantized} applies to a VQ-VAE "
                             f"autoencoder only (snap sampled latents to the codebook or not), "
                             f"but model.autoencoder ({self.autoencoder.source}) is a KL-VAE: "
                             "leave model.decode_quantized null")
        self.decode_quantized = True if decode_quantized is None else bool(decode_quantized)
        # Stored in checkpoints (not in the logged initial hyperparameters).
        self.hparams["autoencoder_kind"] = self.autoencoder_kind
        self.hparams["autoencoder_config"] = frozen_autoencoder.autoencoder_config(
            self.autoencoder)
        self.hparams["autoencoder_fingerprint"] = self.autoencoder.fingerprint
        self.hparams["autoencoder_image_size"] = (list(self.autoencoder.image_size)
                                                  if self.autoencoder.image_size else None)
        if self.autoencoder.image_size and tuple(self.autoencoder.image_size) != image_size:
            raise ValueError(f"data.image_size {list(image_size)} does not match the "
                             f"{_NAMES[self.autoencoder_kind]}'s "
                             f"{list(self.autoencoder.image_size)} ({self.autoencoder.source}): "
                             f"the prior must see the images the {_NAMES[self.autoencoder_kind]} "
                             "was trained on")
        self.latent_shape = self.autoencoder.latent_shape(image_size)
        levels = 2 ** (len(block_out_channels) - 1)
        if self.latent_shape[1] % levels or self.latent_shape[2] % levels:
            raise ValueError(f"the latent grid {list(self.latent_shape[1:])} of data.image_size "
                             f"{list(image_size)} must be divisible by {levels} "
                             f"(model.block_out_channels has {len(block_out_channels)} levels)")
        self.num_classes = int(num_classes)
        self.null_class = self.num_classes
        self.unet = UNet2DModel(
            sample_size=tuple(self.latent_shape[1:]),
            in_channels=self.latent_shape[0],
            out_channels=self.latent_shape[0],
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            dropout=dropout,
            num_class_embeds=self.num_classes + 1,
        )
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
            prediction_type=prediction_type, timestep_spacing=timestep_spacing)
        terminal = float(self.noise_scheduler.alphas_cumprod[-1])
        if prediction_type == "epsilon" and terminal < MIN_TERMINAL_ALPHA_CUMPROD:
            raise ValueError(
                f"model.prediction_type=epsilon with model.beta_schedule={beta_schedule} leaves "
                f"alpha_cumprod {terminal:.1e} at the last step, where the samplers turn an "
                "epsilon prediction into x0 / sqrt(alpha_cumprod) and blow up: use "
                "model.prediction_type=v_prediction or model.beta_schedule=linear|scaled_linear "
                "(with model.num_train_timesteps=1000)")
        self.ema = (EMAModel(self.unet.parameters(), decay=ema_decay, use_ema_warmup=True,
                             power=ema_power) if ema_decay > 0 else None)
        nan = float("nan")
        self.register_buffer("latent_scale", torch.tensor(
            nan if scaling_factor is None else float(scaling_factor), dtype=torch.float64))
        self.register_buffer("latent_shift", torch.tensor(
            nan if shift_factor is None and scaling_factor is None
            else float(shift_factor or 0.0), dtype=torch.float64))
        self.data_info: dict = {}
        self.latent_stats: dict = {}

    # ----------------------------------------------------------------------------- data
    def wrap_datamodule(self, datamodule):
        """The :class:`~mdvq.data.latents.LatentDataModule` of a spectrogram datamodule (same
        split), after checking its classes and image size against this model's config."""
        from mdvq.data.latents import LatentDataModule

        size = self.set_up_data(datamodule)
        if size != tuple(self.hparams.image_size):
            raise ValueError(f"data.image_size {list(size)} differs from model.image_size "
                             f"{list(self.hparams.image_size)}")
        self.data_info = data_info(datamodule)
        known = self.scale_known
        hp = self.hparams
        return LatentDataModule(
            datamodule, self.autoencoder, cache_dir=hp.cache_dir,
            sample_posterior=hp.sample_posterior,
            scaling_factor=float(self.latent_scale) if known else hp.scaling_factor,
            shift_factor=float(self.latent_shift) if known else hp.shift_factor,
            use_shift=hp.use_shift, batch_size=hp.batch_size,
            encode_batch_size=hp.encode_batch_size)

    @property
    def scale_known(self) -> bool:
        """Whether the latent scale and shift have been set (measured or configured)."""
        return bool(torch.isfinite(self.latent_scale) and torch.isfinite(self.latent_shift))

    def set_latent_scale(self, scaling_factor: float, shift_factor: float = 0.0) -> None:
        """Set the latent normalisation ``(z - shift_factor) * scaling_factor`` (positive scale)."""
        if not (math.isfinite(scaling_factor) and scaling_factor > 0
                and math.isfinite(shift_factor)):
            raise ValueError(f"model.scaling_factor must be positive and finite and "
                             f"model.shift_factor finite, got {scaling_factor}, {shift_factor}")
        self.latent_scale.fill_(float(scaling_factor))
        self.latent_shift.fill_(float(shift_factor))

    def set_decode_quantized(self, snap: bool) -> None:
        """Decode sampled latents snapped to the nearest code (``snap``) or as they are, from now
        on (VQ-VAE only). The prior itself does not change, so one trained prior serves both
        rows of the snapping ablation; exports and later checkpoints record the choice."""
        if self.autoencoder_kind != "vqvae":
            raise ValueError("model.decode_quantized applies to a VQ-VAE autoencoder only; this "
                             f"prior sits on a KL-VAE ({self.autoencoder.source})")
        self.decode_quantized = bool(snap)
        self.hparams["decode_quantized"] = self.decode_quantized

    def setup(self, stage: str) -> None:
        """Take class names, axes and the measured latent scale from the trainer's datamodule;
        refuse callbacks that monitor a metric this module never logs (e.g. ``val/psnr``)."""
        self.take_data_info()
        dm = getattr(self.trainer, "datamodule", None)
        scale = getattr(dm, "scaling_factor", None)
        if getattr(dm, "latent_stats", None):
            self.latent_stats = dict(dm.latent_stats)
        if scale is not None:
            shift = float(getattr(dm, "shift_factor", 0.0) or 0.0)
            if not self.scale_known:
                self.set_latent_scale(float(scale), shift)
            elif not (math.isclose(float(self.latent_scale), scale, rel_tol=1e-6)
                      and math.isclose(float(self.latent_shift), shift, abs_tol=1e-6)):
                log.warning("the datamodule scales latents by %g (shift %g), the prior by %g "
                            "(shift %g)", scale, shift, float(self.latent_scale),
                            float(self.latent_shift))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store class names and axes (plain lists), the measured latent statistics and the EMA
        state."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["mdvq_latent_stats"] = self.latent_stats
        if self.ema is not None:
            checkpoint["mdvq_ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore what :meth:`on_save_checkpoint` stored."""
        super().on_load_checkpoint(checkpoint)
        self.latent_stats = dict(checkpoint.get("mdvq_latent_stats") or {})
        if self.ema is not None and checkpoint.get("mdvq_ema") is not None:
            self.ema.load_state_dict(checkpoint["mdvq_ema"])

    # ----------------------------------------------------------------------------- network
    def forward(self, z_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction ``(B, c, h, w)`` (epsilon or v) for noisy scaled latents
        ``z_t`` ``(B, c, h, w)``, time steps ``t`` (``(B,)`` or scalar) and labels ``(B,)`` in
        ``[0, num_classes]`` (last = null)."""
        return self.unet(z_t, t, class_labels=labels, return_dict=False)[0]

    def guided(self, z_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
               guidance: float) -> torch.Tensor:
        """Classifier-free guided prediction ``u + s (c - u)`` ``(B, c, h, w)`` (``s = 1``:
        conditional only; otherwise the conditional and null halves as one batch of 2B)."""
        if guidance == 1.0:
            return self(z_t, t, labels)
        null = torch.full_like(labels, self.null_class)
        both = self(torch.cat([z_t, z_t]), t, torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    def sampling_scheduler(self, sampler: str | None = None):
        """A fresh ``DPMSolverMultistepScheduler`` (``"dpm"``) or ``DDIMScheduler``
        (``"ddim"``) built from the training ``DDPMScheduler``'s config (None: ``sampler``)."""
        sampler = self.hparams.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"model.sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
        return SAMPLERS[sampler].from_config(self.noise_scheduler.config)

    @contextlib.contextmanager
    def ema_weights(self):
        """Context in which the UNet holds the EMA weights (no-op without EMA)."""
        if self.ema is None or getattr(self, "_ema_active", False):
            yield
            return
        params = list(self.unet.parameters())
        self.ema.store(params)
        self.ema.copy_to(params)
        self._ema_active = True
        try:
            yield
        finally:
            self.ema.restore(params)
            self._ema_active = False

    def _require_scale(self) -> None:
        if not self.scale_known:
            raise RuntimeError("the latent scale is not set: train the prior (its datamodule "
                               "measures it), load a checkpoint or call set_latent_scale()")

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, steps: int | None = None,
                 guidance: float | None = None, generator: torch.Generator | None = None,
                 sampler: str | None = None) -> torch.Tensor:
        """Sample scaled latents ``(B, c, h, w)`` float32 for class ``labels`` ``(B,)`` with
        ``steps`` sampler steps (None: ``sample_steps``), guidance scale ``guidance`` (None:
        ``sample_guidance``) and ``sampler`` (None: the configured one), with EMA weights."""
        steps = self.hparams.sample_steps if steps is None else int(steps)
        guidance = self.hparams.sample_guidance if guidance is None else float(guidance)
        if not 1 <= steps <= self.noise_scheduler.config.num_train_timesteps:
            raise ValueError(f"steps must lie in [1, model.num_train_timesteps="
                             f"{self.noise_scheduler.config.num_train_timesteps}], got {steps}")
        self._require_scale()
        labels = labels.to(self.device).long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = null)")
        sched = self.sampling_scheduler(sampler)
        sched.set_timesteps(steps, device=self.device)
        noise_device = generator.device if generator is not None else self.device
        z = torch.randn((len(labels), *self.latent_shape), generator=generator,
                        device=noise_device).to(self.device) * sched.init_noise_sigma
        was_training = self.training
        self.eval()
        try:
            with self.ema_weights():
                for t in sched.timesteps:
                    out = self.guided(sched.scale_model_input(z, t), t, labels, guidance)
                    z = sched.step(out, t, z, generator=generator, return_dict=False)[0]
        finally:
            self.train(was_training)
        return z.float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Spectrograms ``(B, C, F, T)`` in [0, 1] from scaled latents ``(B, c, h, w)`` (frozen
        autoencoder, after ``z / scaling_factor + shift_factor``; a VQ-VAE snaps them to the
        nearest codes first unless ``decode_quantized`` is False)."""
        self._require_scale()
        z = FrozenKLVAE.unscale(latents.to(self.device).float(), float(self.latent_scale),
                                float(self.latent_shift))
        if self.autoencoder_kind == "vqvae":
            images = self.autoencoder.decode_latents(z, quantize=self.decode_quantized)
        else:
            images = self.autoencoder.decode_latents(z)
        return to_unit(images).clamp(0, 1)

    # ----------------------------------------------------------------------------- training
    def _loss(self, z0, labels, t, noise) -> dict:
        z_t = self.noise_scheduler.add_noise(z0, noise, t)
        if self.hparams.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_scheduler.get_velocity(z0, noise, t)
        mse = (self(z_t, t, labels).float() - target.float()).square().mean(dim=(1, 2, 3))
        weight = self._loss_weights(t)
        return {"loss": (weight * mse).mean(), "mse": mse.mean()}

    def _loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weights ``(B,)``: ``min(snr, g) / snr`` (epsilon) or
        ``min(snr, g) / (snr + 1)`` (v); ones when off."""
        gamma = self.hparams.min_snr_gamma
        if not gamma:
            return torch.ones(t.shape, device=t.device)
        snr = compute_snr(self.noise_scheduler, t).float()
        clipped = torch.clamp(snr, max=float(gamma))
        if self.hparams.prediction_type == "epsilon":
            return clipped / snr.clamp(min=1e-8)
        return clipped / (snr + 1)

    def _log(self, stage: str, values: dict, batch_size: int) -> None:
        train = stage == "train"
        for name, value in values.items():
            self.log(f"{stage}/{name}", value.detach(), on_step=train, on_epoch=not train,
                     prog_bar=name == "loss", batch_size=batch_size, sync_dist=not train)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """One step: random ``t``, noise the latents, predict the target; labels dropped to the
        null class with probability ``label_drop_prob``."""
        z0, labels = batch
        bsz = z0.shape[0]
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,),
                          device=self.device)
        drop = torch.rand(bsz, device=self.device) < self.hparams.label_drop_prob
        labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        values = self._loss(z0, labels, t, torch.randn_like(z0))
        check_finite(values["loss"], values, "train", self.global_step, batch_idx)
        self._log("train", values, bsz)
        return values["loss"]

    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.to(device=self.device)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.step(self.unet.parameters())

    def _eval_step(self, batch, batch_idx: int, stage: str) -> dict:
        z0, labels = batch
        bsz = z0.shape[0]
        # Fixed noise and time steps per batch: comparable epochs.
        g = torch.Generator().manual_seed(10_007 + batch_idx)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,),
                          generator=g).to(self.device)
        noise = torch.randn(z0.shape, generator=g).to(self.device, z0.dtype)
        with self.ema_weights():
            values = self._loss(z0, labels, t, noise)
        check_finite(values["loss"], values, stage, self.global_step, batch_idx)
        self._log(stage, values, bsz)
        return {k: v.detach() for k, v in values.items()}

    def _sample_title(self) -> str:
        return (f"{self.hparams.sampler} {self.hparams.sample_steps} steps, guidance "
                f"{self.hparams.sample_guidance}")

    def configure_optimizers(self) -> dict:
        """Optimiser (and per-step schedule) over the UNet's parameters only."""
        return configure_optimization(
            self.unet.parameters(), self.optimizer_factory, self.scheduler_factory,
            lambda: self.trainer.estimated_stepping_batches)

    # ----------------------------------------------------------------------------- export
    def export_pretrained(self, directory: str | Path) -> Path:
        """Save ``unet/`` (EMA weights), ``scheduler/`` (the sampler's config) and the
        autoencoder with diffusers' ``save_pretrained``, and ``prior.json`` (classes, axes,
        sampler defaults, the autoencoder's kind and folder, the measured latent statistics, the
        module's arguments); :func:`load_exported_latent_prior` rebuilds the module from them.

        A KL-VAE goes to ``vae/`` with the measured ``scaling_factor`` / ``shift_factor`` in its
        config; a VQ-VAE to ``vqvae/`` unchanged (its config is part of its fingerprint, so the
        folder keeps the phase-1 VQ-VAE's fingerprint and latent cache): the scale is in
        ``prior.json``."""
        self._require_scale()
        directory = Path(directory)
        with self.ema_weights():
            self.unet.save_pretrained(directory / "unet")
        self.sampling_scheduler().save_pretrained(directory / "scheduler")
        folder = EXPORT_FOLDERS[self.autoencoder_kind]
        network = self.autoencoder.model
        if self.autoencoder_kind == "klvae":
            network.register_to_config(scaling_factor=float(self.latent_scale),
                                       shift_factor=float(self.latent_shift))
        network.save_pretrained(directory / folder)
        skip = {"autoencoder", "autoencoder_config", "autoencoder_fingerprint", "output_dir",
                "cache_dir", "autoencoder_kind"}
        args = {k: _plain(v) for k, v in self.hparams.items() if k not in skip}
        meta = {"model_kind": self.model_kind, "num_classes": self.num_classes,
                "null_class": self.null_class, "latent_shape": list(self.latent_shape),
                "scaling_factor": float(self.latent_scale),
                "shift_factor": float(self.latent_shift),
                "sampler": self.hparams.sampler, "sample_steps": self.hparams.sample_steps,
                "sample_guidance": self.hparams.sample_guidance,
                "prediction_type": self.hparams.prediction_type,
                "autoencoder_kind": self.autoencoder_kind,
                "autoencoder_folder": folder,
                "decode_quantized": (self.decode_quantized if self.autoencoder_kind == "vqvae"
                                     else None),
                "autoencoder_fingerprint": self.autoencoder.fingerprint,
                "autoencoder_source": self.autoencoder.source,
                "latent_stats": self.latent_stats,
                "loading": _LOADING[self.autoencoder_kind],
                "module_args": args, **self.data_info}
        (directory / EXPORT_META).write_text(json.dumps(meta, indent=2))
        return directory


def load_exported_latent_prior(directory: str | Path) -> LatentDiffusionModule:
    """Rebuild a :class:`LatentDiffusionModule` (eval mode, no EMA: ``unet/`` holds the EMA
    weights) from a folder written by :meth:`LatentDiffusionModule.export_pretrained` alone."""
    directory = Path(directory)
    path = directory / EXPORT_META
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not an exported latent prior ({err})") from err
    if meta.get("model_kind") != LatentDiffusionModule.model_kind:
        raise ValueError(f"{path}: model_kind is {meta.get('model_kind')!r}, expected "
                         f"{LatentDiffusionModule.model_kind!r}")
    args = dict(meta["module_args"])
    args.update(ema_decay=0.0, scaling_factor=meta["scaling_factor"],
                shift_factor=meta["shift_factor"], output_dir=None, cache_dir=None)
    args.pop("autoencoder_kind", None)  # the autoencoder folder's own class decides
    if meta.get("autoencoder_kind") == "vqvae":
        args["decode_quantized"] = meta.get("decode_quantized", args.get("decode_quantized"))
    folder = meta.get("autoencoder_folder", EXPORT_FOLDERS["klvae"])
    module = LatentDiffusionModule(autoencoder=str(directory / folder), **args)
    unet = UNet2DModel.from_pretrained(directory / "unet")
    module.unet.load_state_dict(unet.state_dict())
    module.data_info = {k: meta.get(k) for k in ("class_names", "freqs_hz", "times_s", "data_key")}
    module.latent_stats = dict(meta.get("latent_stats") or {})
    return module.eval()


_LOADING = {
    "klvae": "mdvq.models.latent_diffusion.load_exported_latent_prior(<dir>); diffusers: "
             "UNet2DModel.from_pretrained(<dir>/unet) (class_labels required; label num_classes "
             "= null), AutoencoderKL.from_pretrained(<dir>/vae) decodes z / scaling_factor + "
             "shift_factor",
    "vqvae": "mdvq.models.latent_diffusion.load_exported_latent_prior(<dir>); diffusers: "
             "UNet2DModel.from_pretrained(<dir>/unet) (class_labels required; label num_classes "
             "= null), VQModel.from_pretrained(<dir>/vqvae).decode(h) with h = z / "
             "scaling_factor + shift_factor (prior.json) snaps h to the nearest code "
             "(decode_quantized) or decode(h, force_not_quantize=True) does not",
}
"""How a user loads an exported prior, per autoencoder kind (written into ``prior.json``)."""


def _plain(value):
    """JSON-ready copy of a hyperparameter (tuples and OmegaConf lists become lists)."""
    return json.loads(json.dumps(value, default=lambda v: list(v) if hasattr(v, "__iter__")
                                 else str(v)))


def _check_args(**kw) -> None:
    """ValueError naming the ``model.<key>`` of an impossible setting."""
    if isinstance(kw["num_classes"], bool) or not isinstance(kw["num_classes"], int) \
            or kw["num_classes"] < 1:
        raise ValueError(f"model.num_classes must be a positive integer, got {kw['num_classes']!r}")
    if not 0 <= kw["label_drop_prob"] < 1:
        raise ValueError(f"model.label_drop_prob must lie in [0, 1), got {kw['label_drop_prob']}")
    if kw["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(f"model.prediction_type must be one of {list(PREDICTION_TYPES)}, got "
                         f"{kw['prediction_type']!r}")
    if kw["sampler"] not in SAMPLERS:
        raise ValueError(f"model.sampler must be one of {list(SAMPLERS)}, got {kw['sampler']!r}")
    if not 1 <= kw["sample_steps"] <= kw["num_train_timesteps"]:
        raise ValueError(f"model.sample_steps must lie in [1, model.num_train_timesteps="
                         f"{kw['num_train_timesteps']}], got {kw['sample_steps']}")
    if kw["sample_guidance"] < 0:
        raise ValueError(f"model.sample_guidance must be >= 0, got {kw['sample_guidance']}")
    if kw["min_snr_gamma"] is not None and kw["min_snr_gamma"] < 0:
        raise ValueError(f"model.min_snr_gamma must be >= 0 or null, got {kw['min_snr_gamma']}")
    if not 0 <= kw["ema_decay"] < 1:
        raise ValueError(f"model.ema_decay must lie in [0, 1), got {kw['ema_decay']}")
    if kw["scaling_factor"] is not None and not kw["scaling_factor"] > 0:
        raise ValueError(f"model.scaling_factor must be positive or null, got {kw['scaling_factor']}")
    if kw["val_samples_per_class"] < 0 or kw["sample_every_n_epochs"] < 1:
        raise ValueError("model.val_samples_per_class must be >= 0 and model.sample_every_n_epochs "
                         ">= 1")
    n = len(kw["block_out_channels"])
    if not len(kw["down_block_types"]) == len(kw["up_block_types"]) == n:
        raise ValueError(f"model.down_block_types, model.up_block_types and "
                         f"model.block_out_channels need one entry per level, got "
                         f"{len(kw['down_block_types'])}, {len(kw['up_block_types'])}, {n}")
    if any(c % kw["norm_num_groups"] for c in kw["block_out_channels"]):
        raise ValueError(f"model.norm_num_groups {kw['norm_num_groups']} must divide every "
                         f"model.block_out_channels {list(kw['block_out_channels'])}")
