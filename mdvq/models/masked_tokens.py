"""Class-conditional masked-token prior on code maps (MaskGIT-style), beside VQ-Diffusion.

A bidirectional transformer predicts the codes of masked positions from the visible ones and
the class label. Training masks only (no random replacement): a sample's mask ratio is
``cos(u * pi / 2)``, ``u ~ U(0, 1)`` (:mod:`mdvq.models.mask_schedule`), and the loss is the
cross-entropy on the masked positions alone. MDLM (Sahoo et al. 2024) shows this is the
masked-diffusion bound up to a ``1/t`` weight, so no auxiliary term is added. Labels are
dropped to the null class ``num_classes`` with ``label_drop_prob`` for classifier-free guidance.

Sampling is confidence-ordered parallel decoding from the all-mask state in ``sample_steps``
(MaskGIT: 8-12) steps with diffusers' :class:`~diffusers.AmusedScheduler` (cosine schedule):
each step draws every masked token from the guided, temperature-scaled prediction and re-masks
the least confident ones (docs/masked-tokens.md says where the scheduler is not used).

The network is the VQ-Diffusion prior's: diffusers' ``Transformer2DModel`` in discrete mode with
``ada_norm_zero``, built by :func:`mdvq.models.vqdiffusion.build_transformer` (per-block label
dropout off). Its time step is ``round(1000 * masked share)`` of each sample. The frozen VQ-VAE
is stored inside the module, so a checkpoint samples images on its own.

Logged (nats per masked code token): ``{train,val,test}/loss`` (cross-entropy on masked
positions), ``/masked_accuracy`` (share of masked positions whose most likely code is right),
``/masked_entropy`` (entropy of the prediction at masked positions; ``log K`` = uniform).
Validation uses fixed masks with stratified ratios, so its figures compare between epochs and
``val/masked_accuracy`` against optimiser steps is the prior's learning curve.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AmusedScheduler
from lightning.pytorch import LightningModule

from mdvq.models import frozen_vqvae
from mdvq.models.config_checks import as_tuple
from mdvq.models.discrete_diffusion import guided_log_x0
from mdvq.models.frozen_vqvae import FrozenVQVAE, load_frozen_vqvae
from mdvq.models.losses import check_finite
from mdvq.models.mask_schedule import mask_timestep, mask_tokens
from mdvq.models.optim import configure_optimization
from mdvq.models.prior import ConditionalPrior
from mdvq.models.vqdiffusion import VQDiffusionModule, build_transformer, load_transformer

log = logging.getLogger(__name__)

LOGGED = ("loss", "masked_accuracy", "masked_entropy")
"""Metric names this module logs under ``train/``, ``val/`` and ``test/``."""

SAMPLERS = ("confidence",)
"""Accepted sampling strategies: ``confidence`` (MaskGIT's confidence-ordered re-masking,
diffusers' ``AmusedScheduler``)."""

EXPORT_META = "prior.json"
"""The file of an exported masked-token prior that names its kind and constructor arguments."""

MAX_CHOICE_TEMPERATURE = 10.0
"""Upper bound of ``choice_temperature``: the scheduler keeps decoded tokens by giving them a
confidence of ``log(float32 max) ~ 88``; Gumbel noise times a larger temperature could re-mask
them."""


class MaskedTokenModule(ConditionalPrior, LightningModule):
    """Train a class-conditional masked-token prior on ``(codes (B, h, w), labels (B,))``.

    Args:
        vqvae: the frozen VQ-VAE: a phase-1 run folder, a diffusers ``VQModel`` folder or a
            ``VQVAEModule`` checkpoint (a KL-VAE is refused, naming ``model.vqvae``).
        num_classes: number of data classes (checked against the data); label ``num_classes``
            is the null class.
        image_size: ``(F, T)`` of the spectrograms; with the VQ-VAE's downsampling it gives the
            (square) code grid ``(h, w)``.
        num_layers, num_attention_heads, attention_head_dim, dropout, activation_fn:
            ``Transformer2DModel`` arguments (width = heads * head_dim).
        label_drop_prob: probability of training a sample with the null label.
        optimizer, scheduler: ``functools.partial`` objects (None: AdamW, lr 1e-3; constant).
        sample_steps: default decoding steps (1 .. h*w; MaskGIT: 8-12).
        sample_guidance: default guidance scale ``s`` in ``log p_u + s (log p_c - log p_u)``
            (1: conditional only, one network pass per step; 0: unconditional; default 3,
            measured best with temperature 0.5 on the default data, at twice the cost of 1).
        sample_temperature: temperature of the token draws (> 0; 1: the model's distribution;
            default 0.5).
        choice_temperature: Gumbel noise on the confidences that order the re-masking, annealed
            linearly to 0 over the steps (diffusers' default 2; 0: strictly most confident first).
        sampler: default sampling strategy (``"confidence"``).
        val_samples_per_class, sample_every_n_epochs: sample grid drawn every n validation
            epochs and after testing (0 samples: off), written to ``output_dir/figures``.
        output_dir: folder for figures (None: the trainer's log folder).
        cache_dir: token cache folder (None: no cache).
        encode_batch_size: spectrograms per VQ-VAE call when building the token cache.
        vqvae_config, vqvae_fingerprint: filled in by the module itself (saved in checkpoints).

    Attributes: ``masked_transformer``, ``vqvae`` (:class:`FrozenVQVAE`), ``grid`` ``(h, w)``,
    ``num_codes`` (K; token K is the mask), ``mask_id``, ``null_class``, ``max_sample_steps``
    (h*w), ``data_info``, ``model_kind = "maskedtokens"``.
    """

    model_kind = "maskedtokens"
    logged = LOGGED
    experiment = "maskedtokens"

    def __init__(
        self,
        vqvae: str | None = None,
        num_classes: int = 6,
        image_size: tuple[int, int] = (64, 64),
        num_layers: int = 4,
        num_attention_heads: int = 4,
        attention_head_dim: int = 32,
        dropout: float = 0.0,
        activation_fn: str = "geglu",
        label_drop_prob: float = 0.1,
        optimizer=None,
        scheduler=None,
        sample_steps: int = 8,
        sample_guidance: float = 3.0,
        sample_temperature: float = 0.5,
        choice_temperature: float = 2.0,
        sampler: str = "confidence",
        val_samples_per_class: int = 2,
        sample_every_n_epochs: int = 1,
        output_dir: str | None = None,
        cache_dir: str | None = None,
        encode_batch_size: int = 256,
        vqvae_config: dict | None = None,
        vqvae_fingerprint: str | None = None,
    ) -> None:
        super().__init__()
        image_size = as_tuple(image_size, int, "data.image_size")
        _check_args(num_classes=num_classes, label_drop_prob=label_drop_prob,
                    sample_guidance=sample_guidance, sample_temperature=sample_temperature,
                    choice_temperature=choice_temperature, sampler=sampler,
                    val_samples_per_class=val_samples_per_class,
                    sample_every_n_epochs=sample_every_n_epochs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "vqvae_config",
                                          "vqvae_fingerprint"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.vqvae = _frozen_vqvae(vqvae, vqvae_config, vqvae_fingerprint)
        self.hparams["vqvae_config"] = frozen_vqvae.vqvae_config(self.vqvae.model)
        self.hparams["vqvae_fingerprint"] = self.vqvae.fingerprint
        self.grid = self.vqvae.latent_grid(image_size)
        if self.grid[0] != self.grid[1]:
            raise ValueError(f"data.image_size {list(image_size)} gives a {self.grid} code map; "
                             "diffusers' Transformer2DModel needs a square one (set a square "
                             "data.image_size)")
        self.max_sample_steps = self.grid[0] * self.grid[1]
        if isinstance(sample_steps, bool) or not isinstance(sample_steps, int) \
                or not 1 <= sample_steps <= self.max_sample_steps:
            raise ValueError(f"model.sample_steps must be an integer in [1, {self.max_sample_steps}] "
                             f"(the code map's tokens), got {sample_steps!r}")
        self.num_codes = self.vqvae.num_codes
        self.mask_id = self.num_codes
        self.num_classes = int(num_classes)
        self.null_class = self.num_classes
        self.masked_transformer = build_transformer(
            self.num_codes, self.grid[0], self.num_classes, num_layers=num_layers,
            num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
            dropout=dropout, activation_fn=activation_fn)
        self.data_info: dict = {}

    # ----------------------------------------------------------------------------- data
    # The same token data as the VQ-Diffusion prior: code maps of the frozen VQ-VAE (cached),
    # same split, class count and image size checked against this model's config.
    wrap_datamodule = VQDiffusionModule.wrap_datamodule
    decode = VQDiffusionModule.decode
    setup = VQDiffusionModule.setup

    # ----------------------------------------------------------------------------- network
    def forward(self, x_t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``log p(x_0 | x_t, label)`` ``(B, K, N)`` for tokens ``x_t`` ``(B, N)`` in ``[0, K]``
        (``K`` = mask) and labels ``(B,)`` in ``[0, num_classes]`` (last = null)."""
        t = mask_timestep((x_t == self.mask_id).sum(1), x_t.shape[1])
        return self.masked_transformer(x_t, timestep=t, class_labels=labels,
                                       return_dict=False)[0]

    def guided_log_probs(self, x_t: torch.Tensor, labels: torch.Tensor,
                         guidance: float) -> torch.Tensor:
        """``log p(x_0 | x_t)`` ``(B, K, N)`` with classifier-free guidance scale ``guidance``
        (1: conditional only; otherwise conditional and null-label passes in one batch)."""
        if guidance == 1.0:
            return self(x_t, labels)
        null = torch.full_like(labels, self.null_class)
        cond, uncond = self(torch.cat([x_t, x_t]), torch.cat([labels, null])).chunk(2)
        return guided_log_x0(cond, uncond, guidance)

    def noise_scheduler(self) -> AmusedScheduler:
        """diffusers' MaskGIT re-masking scheduler for this prior (mask token ``K``, cosine)."""
        return AmusedScheduler(mask_token_id=self.mask_id, masking_schedule="cosine")

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, steps: int | None = None,
                 guidance: float | None = None, generator: torch.Generator | None = None,
                 sampler: str | None = None, temperature: float | None = None) -> torch.Tensor:
        """Sample code maps ``(B, h, w)`` int64 for class ``labels`` ``(B,)`` from the all-mask
        state in ``steps`` decoding steps (None: ``sample_steps``), guidance scale ``guidance``
        (None: ``sample_guidance``) and token temperature ``temperature`` (None:
        ``sample_temperature``). After step ``i`` the counts of
        :func:`mdvq.models.mask_schedule.decode_schedule` stay masked."""
        steps = self.hparams.sample_steps if steps is None else int(steps)
        guidance = self.hparams.sample_guidance if guidance is None else float(guidance)
        temperature = (self.hparams.sample_temperature if temperature is None
                       else float(temperature))
        sampler = self.hparams.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
        if not 1 <= steps <= self.max_sample_steps:
            raise ValueError(f"steps must lie in [1, {self.max_sample_steps}], got {steps}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        labels = labels.to(self.device).long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = null)")
        scheduler = self.noise_scheduler()
        scheduler.set_timesteps(steps, temperature=(self.hparams.choice_temperature, 0.0),
                                device=self.device)
        bsz, (h, w) = len(labels), self.grid
        x = torch.full((bsz, h, w), self.mask_id, dtype=torch.long, device=self.device)
        was_training = self.training
        self.eval()
        try:
            for t in scheduler.timesteps:
                log_p = self.guided_log_probs(x.reshape(bsz, -1), labels, guidance)
                logits = (log_p / temperature).reshape(bsz, self.num_codes, h, w)
                x = scheduler.step(logits, t, x, generator=generator).prev_sample
        finally:
            self.train(was_training)
        return x

    # ----------------------------------------------------------------------------- training
    def _terms(self, codes: torch.Tensor, labels: torch.Tensor, u: torch.Tensor | None,
               generator: torch.Generator | None = None) -> dict:
        x0 = codes.flatten(1)
        x_t, mask = mask_tokens(x0, self.mask_id, u, generator)
        return masked_terms(self(x_t, labels), x0, mask)

    def _log(self, stage: str, values: dict, batch_size: int) -> None:
        train = stage == "train"
        for name, value in values.items():
            self.log(f"{stage}/{name}", value.detach(), on_step=train, on_epoch=not train,
                     prog_bar=name in ("loss", "masked_accuracy"), batch_size=batch_size,
                     sync_dist=not train)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """One step: mask ``round(N cos(u pi/2))`` random tokens per sample (``u ~ U(0,1)``),
        drop labels to the null class, cross-entropy on the masked tokens."""
        codes, labels = batch
        bsz = codes.shape[0]
        drop = torch.rand(bsz, device=labels.device) < self.hparams.label_drop_prob
        labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        values = self._terms(codes, labels, None)
        check_finite(values["loss"], values, "train", self.global_step, batch_idx)
        self._log("train", values, bsz)
        return values["loss"]

    def _eval_step(self, batch, batch_idx: int, stage: str) -> dict:
        codes, labels = batch
        bsz = codes.shape[0]
        # Fixed masks with stratified ratios (u spread evenly over [0, 1]): comparable epochs.
        generator = torch.Generator().manual_seed(10_007 + batch_idx)
        u = (torch.arange(bsz, dtype=torch.float64) + 0.5) / bsz
        values = self._terms(codes, labels, u, generator)
        check_finite(values["loss"], values, stage, self.global_step, batch_idx)
        self._log(stage, values, bsz)
        return {k: v.detach() for k, v in values.items()}

    def _sample_title(self) -> str:
        return (f"{self.hparams.sample_steps} steps, guidance {self.hparams.sample_guidance}, "
                f"temperature {self.hparams.sample_temperature}")

    def configure_optimizers(self) -> dict:
        """Optimiser (and per-step schedule) over the transformer's parameters only."""
        return configure_optimization(
            self.masked_transformer.parameters(), self.optimizer_factory, self.scheduler_factory,
            lambda: self.trainer.estimated_stepping_batches)

    # ----------------------------------------------------------------------------- export
    def export_pretrained(self, directory: str | Path) -> Path:
        """Save ``transformer/``, ``scheduler/`` (``AmusedScheduler``) and ``vqvae/`` with
        diffusers' ``save_pretrained``, and ``prior.json`` (kind, constructor arguments, classes,
        axes, sampling defaults); :func:`load_exported_masked_prior` reads the folder back."""
        directory = Path(directory)
        self.masked_transformer.save_pretrained(directory / "transformer")
        self.noise_scheduler().save_pretrained(directory / "scheduler")
        self.vqvae.model.save_pretrained(directory / "vqvae")
        skip = {"vqvae", "vqvae_config", "vqvae_fingerprint", "output_dir", "cache_dir"}
        args = {k: _plain(v) for k, v in self.hparams.items() if k not in skip}
        meta = {"model_kind": self.model_kind, "module_args": args,
                "num_classes": self.num_classes, "null_class": self.null_class,
                "code_grid": list(self.grid), "num_codes": self.num_codes,
                "mask_token_id": self.mask_id, "vqvae_fingerprint": self.vqvae.fingerprint,
                "loading": "mdvq.models.masked_tokens.load_exported_masked_prior(<dir>); the "
                           "network alone: mdvq.models.vqdiffusion.load_transformer("
                           "<dir>/transformer)",
                **self.data_info}
        (directory / EXPORT_META).write_text(json.dumps(meta, indent=2))
        return directory


def masked_terms(log_probs: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor) -> dict:
    """Loss terms at the masked positions only, averaged over all masked tokens of the batch.

    ``log_probs`` ``(B, K, N)`` (the network's output), ``x0`` ``(B, N)`` the true codes,
    ``mask`` ``(B, N)`` bool. Returns ``loss`` (cross-entropy, nats per masked token),
    ``masked_accuracy`` (share of masked tokens whose most likely code is right, [0, 1]) and
    ``masked_entropy`` (mean entropy of the prediction there, nats). Unmasked positions do not
    count in any of them.
    """
    nll = -log_probs.gather(1, x0[:, None, :]).squeeze(1)
    right = (log_probs.argmax(1) == x0).float()
    entropy = -(log_probs.exp() * log_probs).sum(1)
    weight = mask.float()
    total = weight.sum().clamp_min(1.0)
    return {"loss": (nll * weight).sum() / total,
            "masked_accuracy": (right * weight).sum() / total,
            "masked_entropy": (entropy.detach() * weight).sum() / total}


def load_exported_masked_prior(directory: str | Path) -> MaskedTokenModule:
    """Rebuild a :class:`MaskedTokenModule` (eval mode) from a folder written by
    :meth:`MaskedTokenModule.export_pretrained` alone; ValueError naming the file when it is
    not such an export."""
    directory = Path(directory)
    path = directory / EXPORT_META
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not an exported masked-token prior ({err})") from err
    if not isinstance(meta, dict) or meta.get("model_kind") != MaskedTokenModule.model_kind:
        found = meta.get("model_kind") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: model_kind is {found!r}, expected "
                         f"{MaskedTokenModule.model_kind!r}")
    module = MaskedTokenModule(vqvae=str(directory / "vqvae"), **meta["module_args"])
    module.masked_transformer.load_state_dict(
        load_transformer(directory / "transformer").state_dict())
    module.data_info = {k: meta.get(k) for k in ("class_names", "freqs_hz", "times_s", "data_key")}
    return module.eval()


def _frozen_vqvae(vqvae, config: dict | None, fingerprint: str | None) -> FrozenVQVAE:
    """The frozen VQ-VAE: rebuilt from ``config`` (a checkpoint; weights come from its
    state_dict) or loaded from ``vqvae``; a KL-VAE is refused with a hint."""
    if config is not None:
        from diffusers import VQModel

        return FrozenVQVAE(VQModel.from_config(config), fingerprint, source=vqvae)
    if vqvae is None:
        raise ValueError("model.vqvae must name the trained VQ-VAE (run folder, diffusers "
                         "folder or .ckpt)")
    try:
        return load_frozen_vqvae(vqvae)
    except ValueError as err:
        if "KL-VAE" not in str(err):
            raise
        raise ValueError(f"{err}. The masked-token prior models a VQ-VAE's discrete codes; a "
                         "KL-VAE's continuous latent goes to experiment=latentdiffusion "
                         "model.autoencoder=...") from None


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
    if not kw["sample_guidance"] >= 0:
        raise ValueError(f"model.sample_guidance must be >= 0, got {kw['sample_guidance']}")
    if not kw["sample_temperature"] > 0:
        raise ValueError(f"model.sample_temperature must be > 0, got {kw['sample_temperature']}")
    if not 0 <= kw["choice_temperature"] <= MAX_CHOICE_TEMPERATURE:
        raise ValueError(f"model.choice_temperature must lie in [0, {MAX_CHOICE_TEMPERATURE}], "
                         f"got {kw['choice_temperature']}")
    if kw["sampler"] not in SAMPLERS:
        raise ValueError(f"model.sampler must be one of {list(SAMPLERS)}, got {kw['sampler']!r}")
    if kw["val_samples_per_class"] < 0 or kw["sample_every_n_epochs"] < 1:
        raise ValueError("model.val_samples_per_class must be >= 0 and model.sample_every_n_epochs "
                         ">= 1")
