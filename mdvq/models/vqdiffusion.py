"""Class-conditional VQ-Diffusion prior on code maps (phase 2 of mdvq).

The network is diffusers' ``Transformer2DModel`` in discrete mode (``num_vector_embeds = K +
1``, the last token is the mask) with ``norm_type="ada_norm_zero"``, which takes one time step
and one class label per sample. Its per-block ``LabelEmbedding`` has ``num_classes + 1`` rows;
the hard-wired per-block label dropout is switched off and labels are dropped here, once per
sample for every block, to the null class ``num_classes`` (docs/library-facts.md). The corruption,
posterior, loss and samplers live in :mod:`mdvq.models.discrete_diffusion`; the frozen VQ-VAE
(:mod:`mdvq.models.frozen_vqvae`) is stored inside the module, so a checkpoint samples images on
its own.

Logged (nats per code token): ``train/loss`` (what is optimised: ``L_t + aux_weight * w_t *
CE_x0`` importance-weighted), ``{train,val,test}/vb`` (estimate of the whole variational bound
``sum_t L_t``, an upper bound on ``-log p(codes)`` per token; ``log K`` is a uniform guess),
``/aux`` (``x_0`` cross-entropy), ``/masked_acc`` (accuracy of ``x_0`` at masked tokens).
Validation uses fixed noise and stratified time steps, so ``val/vb`` is comparable between
epochs; it is the metric checkpoints monitor.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import Transformer2DModel
from lightning.pytorch import LightningModule

from mdvq.models import frozen_vqvae
from mdvq.models.config_checks import as_tuple
from mdvq.models.discrete_diffusion import (
    SAMPLERS,
    T_SAMPLING,
    MaskReplaceDiffusion,
    check_truncation,
    guided_log_x0,
)
from mdvq.models.frozen_vqvae import FrozenVQVAE, load_frozen_vqvae
from mdvq.models.losses import check_finite
from mdvq.models.optim import configure_optimization
from mdvq.models.prior import ConditionalPrior, data_info
from mdvq.utils.pixels import to_unit

log = logging.getLogger(__name__)

LOGGED = ("loss", "vb", "aux", "masked_acc")
"""Metric names this module logs under ``train/``, ``val/`` and ``test/``."""


class VQDiffusionModule(ConditionalPrior, LightningModule):
    """Train a class-conditional discrete diffusion prior on ``(codes (B, h, w), labels (B,))``.

    Args:
        vqvae: the frozen VQ-VAE: a phase-1 run folder, a diffusers ``VQModel`` folder or a
            ``VQVAEModule`` checkpoint (:func:`~mdvq.models.frozen_vqvae.load_frozen_vqvae`).
        num_classes: number of data classes (checked against the data in
            :meth:`wrap_datamodule`); label ``num_classes`` is the null class.
        image_size: ``(F, T)`` of the spectrograms; with the VQ-VAE's downsampling it gives the
            code grid ``(h, w)``, which must be square (``Transformer2DModel`` learns one
            ``sample_size``).
        num_layers, num_attention_heads, attention_head_dim, dropout, activation_fn:
            ``Transformer2DModel`` arguments (width = heads * head_dim).
        num_train_timesteps, alpha_cum_start, alpha_cum_end, gamma_cum_start, gamma_cum_end:
            the ``VQDiffusionScheduler`` schedule (T steps; cumulative keep and mask ends).
        label_drop_prob: probability of training a sample with the null label, which teaches
            the unconditional model for classifier-free guidance.
        aux_weight: weight of the auxiliary ``x_0`` cross-entropy; ``adaptive_aux`` multiplies
            it by ``2 - t/T`` (official VQ-Diffusion).
        t_sampling: ``"uniform"`` or ``"importance"`` (``p_t ~ sqrt(E[L_t^2])``); the loss is
            divided by ``T p_t`` so it stays an unbiased estimate of the mean ``L_t``.
        optimizer, scheduler: ``functools.partial`` objects as in ``VQVAEModule`` (None: AdamW,
            lr 1e-3).
        sample_steps, sample_guidance: defaults of :meth:`generate` (steps <= T; guidance
            scale ``s`` in ``log p_u + s (log p_c - log p_u)``).
        sampler: default sampling strategy, ``"ancestral"`` (VQ-Diffusion's posterior draws)
            or ``"purity"`` (confident tokens unmasked first, Improved VQ-Diffusion).
        sample_truncation: default truncation rate of the ``x_0`` prediction while sampling
            (keep the most likely codes up to this cumulative probability; 1 = off).
        val_samples_per_class, sample_every_n_epochs: sample grid drawn every n validation
            epochs and after testing (0 samples: off), written to ``output_dir/figures``.
        output_dir: folder for figures (None: the trainer's log folder).
        cache_dir: token cache folder of :meth:`wrap_datamodule` (None: no cache).
        encode_batch_size: spectrograms per VQ-VAE call when building the token cache.
        vqvae_config, vqvae_fingerprint: filled in by the module itself (saved in checkpoints,
            so ``load_from_checkpoint`` rebuilds the VQ-VAE without reading ``vqvae`` again).

    Attributes: ``transformer``, ``diffusion`` (:class:`MaskReplaceDiffusion`), ``vqvae``
    (:class:`FrozenVQVAE`), ``grid`` ``(h, w)``, ``num_codes``, ``null_class``, ``data_info``
    (class names and axes; saved in checkpoints), ``model_kind = "vqdiffusion"``.
    """

    model_kind = "vqdiffusion"
    logged = LOGGED
    experiment = "vqdiffusion"

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
        num_train_timesteps: int = 100,
        alpha_cum_start: float = 0.99999,
        alpha_cum_end: float = 0.000009,
        gamma_cum_start: float = 0.000009,
        gamma_cum_end: float = 0.99999,
        label_drop_prob: float = 0.1,
        aux_weight: float = 5e-4,
        adaptive_aux: bool = True,
        t_sampling: str = "importance",
        optimizer=None,
        scheduler=None,
        sample_steps: int = 20,
        sample_guidance: float = 1.5,
        sampler: str = "ancestral",
        sample_truncation: float = 1.0,
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
        _check_args(num_classes=num_classes, label_drop_prob=label_drop_prob, aux_weight=aux_weight,
                    t_sampling=t_sampling, sample_steps=sample_steps,
                    num_train_timesteps=num_train_timesteps, sample_guidance=sample_guidance,
                    val_samples_per_class=val_samples_per_class,
                    sample_every_n_epochs=sample_every_n_epochs, sampler=sampler,
                    sample_truncation=sample_truncation)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "vqvae_config",
                                          "vqvae_fingerprint"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if vqvae_config is not None:  # rebuilt from a checkpoint: weights come from its state_dict
            from diffusers import VQModel

            self.vqvae = FrozenVQVAE(VQModel.from_config(vqvae_config), vqvae_fingerprint,
                                     source=vqvae)
        else:
            if vqvae is None:
                raise ValueError("model.vqvae must name the trained VQ-VAE (run folder, diffusers "
                                 "folder or .ckpt)")
            self.vqvae = load_frozen_vqvae(vqvae)
        # Stored in checkpoints (not in the logged initial hyperparameters).
        self.hparams["vqvae_config"] = frozen_vqvae.vqvae_config(self.vqvae.model)
        self.hparams["vqvae_fingerprint"] = self.vqvae.fingerprint
        self.grid = self.vqvae.latent_grid(image_size)
        if self.grid[0] != self.grid[1]:
            raise ValueError(f"data.image_size {list(image_size)} gives a {self.grid} code map; "
                             "diffusers' Transformer2DModel needs a square one (set a square "
                             "data.image_size)")
        self.num_codes = self.vqvae.num_codes
        self.num_classes = int(num_classes)
        self.null_class = self.num_classes
        self.transformer = build_transformer(
            self.num_codes, self.grid[0], self.num_classes, num_layers=num_layers,
            num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
            dropout=dropout, activation_fn=activation_fn)
        self.diffusion = MaskReplaceDiffusion(
            self.num_codes, num_train_timesteps, alpha_cum_start, alpha_cum_end,
            gamma_cum_start, gamma_cum_end)
        self.data_info: dict = {}

    # ----------------------------------------------------------------------------- data
    def wrap_datamodule(self, datamodule):
        """The :class:`~mdvq.data.tokens.TokenDataModule` of a spectrogram datamodule (same
        split), after checking its classes and image size against this model's config."""
        from mdvq.data.tokens import TokenDataModule

        size = self.set_up_data(datamodule)
        if self.vqvae.latent_grid(size) != self.grid:
            raise ValueError(f"data.image_size {list(size)} gives a {self.vqvae.latent_grid(size)} "
                             f"code map but the model was built for {self.grid} "
                             f"(model.image_size {list(self.hparams.image_size)})")
        if self.vqvae.image_size and tuple(self.vqvae.image_size) != size:
            log.warning("the VQ-VAE was trained on %s images, the prior's data are %s",
                        list(self.vqvae.image_size), list(size))
        self.data_info = data_info(datamodule)
        return TokenDataModule(datamodule, self.vqvae, cache_dir=self.hparams.cache_dir,
                               encode_batch_size=self.hparams.encode_batch_size)

    def setup(self, stage: str) -> None:
        """Take class names and axes from the trainer's datamodule; refuse callbacks that
        monitor a metric this module never logs (e.g. the phase-1 ``val/psnr``)."""
        self.take_data_info()

    # ----------------------------------------------------------------------------- network
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``log p(x_0 | x_t, t, label)`` ``(B, K, N)`` for tokens ``x_t`` ``(B, N)`` in ``[0, K]``,
        time steps ``t`` ``(B,)`` and labels ``(B,)`` in ``[0, num_classes]`` (last = null)."""
        return self.transformer(x_t, timestep=t, class_labels=labels, return_dict=False)[0]

    def guided_log_x0(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                      guidance: float) -> torch.Tensor:
        """``log p(x_0 | x_t)`` ``(B, K, N)`` with classifier-free guidance scale ``guidance``
        (1: conditional only; otherwise conditional and null-label passes in one batch)."""
        if guidance == 1.0:
            return self(x_t, t, labels)
        null = torch.full_like(labels, self.null_class)
        both = self(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return guided_log_x0(cond, uncond, guidance)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, steps: int | None = None,
                 guidance: float | None = None, generator: torch.Generator | None = None,
                 sampler: str | None = None, truncation: float | None = None) -> torch.Tensor:
        """Sample code maps ``(B, h, w)`` int64 for class ``labels`` ``(B,)`` from the all-mask
        state in ``steps`` steps (None: ``sample_steps``; T with the ancestral sampler: every
        step with diffusers' scheduler) with guidance scale ``guidance`` (None:
        ``sample_guidance``), ``sampler`` (None: the configured one) and truncation rate
        ``truncation`` (None: ``sample_truncation``)."""
        steps = self.hparams.sample_steps if steps is None else int(steps)
        guidance = self.hparams.sample_guidance if guidance is None else float(guidance)
        sampler = self.hparams.get("sampler", "ancestral") if sampler is None else sampler
        truncation = (self.hparams.get("sample_truncation", 1.0) if truncation is None
                      else float(truncation))
        labels = labels.to(self.device).long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = null)")
        was_training = self.training
        self.eval()
        try:
            codes = self.diffusion.sample(
                lambda x, t: self.guided_log_x0(x, t, labels, guidance),
                len(labels), self.grid[0] * self.grid[1], steps, generator, self.device,
                sampler=sampler, truncation=truncation)
        finally:
            self.train(was_training)
        return codes.reshape(len(labels), *self.grid)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Spectrograms ``(B, C, F, T)`` in [0, 1] from code maps ``(B, h, w)`` (frozen VQ-VAE)."""
        return to_unit(self.vqvae.decode_indices(codes.to(self.device)))

    # ----------------------------------------------------------------------------- training
    def _terms(self, codes, labels, t, weight, generator=None):
        x0 = codes.flatten(1)
        x_t = self.diffusion.q_sample(x0, t, generator)
        log_x0 = self(x_t, t, labels)
        terms = self.diffusion.loss_terms(log_x0, x0, x_t, t)
        n = self.diffusion.num_timesteps
        aux_w = self.hparams.aux_weight * ((2.0 - t.float() / n) if self.hparams.adaptive_aux else 1.0)
        loss = (weight * (terms["vb"] + aux_w * terms["aux"])).mean()
        out = {"loss": loss, "vb": n * (weight * terms["vb"]).mean(), "aux": terms["aux"].mean(),
               "masked_acc": terms["masked_acc"].mean()}
        return out, terms

    def _log(self, stage: str, values: dict, batch_size: int) -> None:
        train = stage == "train"
        for name, value in values.items():
            self.log(f"{stage}/{name}", value.detach(), on_step=train, on_epoch=not train,
                     prog_bar=name in ("loss", "vb"), batch_size=batch_size, sync_dist=not train)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """One step: random ``t`` (uniform or importance), corrupt, predict ``x_0``, bound + aux."""
        codes, labels = batch
        bsz = codes.shape[0]
        t, p_t = self.diffusion.sample_timesteps(bsz, self.hparams.t_sampling)
        t, p_t = t.to(self.device), p_t.to(self.device)
        drop = torch.rand(bsz, device=self.device) < self.hparams.label_drop_prob
        labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        values, terms = self._terms(codes, labels, t, 1.0 / (self.diffusion.num_timesteps * p_t))
        if self.hparams.t_sampling == "importance":
            self.diffusion.update_importance(t, terms["vb"])
        check_finite(values["loss"], values, "train", self.global_step, batch_idx)
        self._log("train", values, bsz)
        return values["loss"]

    def _eval_step(self, batch, batch_idx: int, stage: str) -> dict:
        codes, labels = batch
        bsz = codes.shape[0]
        # Fixed noise and stratified t (each t equally often over the split): comparable epochs.
        generator = torch.Generator(device=self.device).manual_seed(10_007 + batch_idx)
        t = (torch.arange(bsz, device=self.device) + batch_idx * bsz) % self.diffusion.num_timesteps
        values, _ = self._terms(codes, labels, t, torch.ones(bsz, device=self.device), generator)
        check_finite(values["loss"], values, stage, self.global_step, batch_idx)
        self._log(stage, values, bsz)
        return {k: v.detach() for k, v in values.items()}

    def _sample_title(self) -> str:
        title = f"{self.hparams.sample_steps} steps, guidance {self.hparams.sample_guidance}"
        sampler = self.hparams.get("sampler", "ancestral")
        truncation = self.hparams.get("sample_truncation", 1.0)
        if sampler != "ancestral":
            title += f", {sampler}"
        return title + (f", truncation {truncation}" if truncation < 1 else "")

    def configure_optimizers(self) -> dict:
        """Optimiser (and per-step schedule) over the transformer's parameters only."""
        return configure_optimization(
            self.transformer.parameters(), self.optimizer_factory, self.scheduler_factory,
            lambda: self.trainer.estimated_stepping_batches)

    # ----------------------------------------------------------------------------- export
    def export_pretrained(self, directory: str | Path) -> Path:
        """Save ``transformer/``, ``scheduler/`` and ``vqvae/`` with diffusers' ``save_pretrained``
        and ``prior.json`` (classes, null class, code grid, axes, sampling defaults)."""
        directory = Path(directory)
        self.transformer.save_pretrained(directory / "transformer")
        self.diffusion.scheduler.save_pretrained(directory / "scheduler")
        self.vqvae.model.save_pretrained(directory / "vqvae")
        meta = {"num_classes": self.num_classes, "null_class": self.null_class,
                "code_grid": list(self.grid), "num_codes": self.num_codes,
                "sample_steps": self.hparams.sample_steps,
                "sample_guidance": self.hparams.sample_guidance,
                "sampler": self.hparams.get("sampler", "ancestral"),
                "sample_truncation": self.hparams.get("sample_truncation", 1.0),
                "vqvae_fingerprint": self.vqvae.fingerprint,
                "loading": "mdvq.models.vqdiffusion.load_transformer(<dir>/transformer) "
                           "(Transformer2DModel.from_pretrained remaps ada_norm_zero to DiT); "
                           "set each block's norm1.emb.class_embedder.dropout_prob to 0",
                **self.data_info}
        (directory / "prior.json").write_text(json.dumps(meta, indent=2))
        return directory


def build_transformer(num_codes: int, grid_side: int, num_classes: int, num_layers: int = 4,
                      num_attention_heads: int = 4, attention_head_dim: int = 32,
                      dropout: float = 0.0, activation_fn: str = "geglu") -> Transformer2DModel:
    """A class-conditional discrete ``Transformer2DModel`` on ``grid_side x grid_side`` code maps.

    Tokens are ``[0, num_codes]`` (``num_codes`` is the mask token, ``num_vector_embeds = K +
    1``); ``norm_type="ada_norm_zero"`` takes one time step and one label in ``[0,
    num_classes]`` per sample (``num_classes`` is the null class). The per-block label dropout
    is switched off (:func:`disable_label_dropout`): the caller drops labels itself. Returns
    log-probabilities ``(B, K, N)`` over the ``K`` codes. Shared by the VQ-Diffusion and the
    masked-token priors.
    """
    transformer = Transformer2DModel(
        num_attention_heads=num_attention_heads,
        attention_head_dim=attention_head_dim,
        num_layers=num_layers,
        dropout=dropout,
        sample_size=grid_side,
        num_vector_embeds=num_codes + 1,
        activation_fn=activation_fn,
        num_embeds_ada_norm=num_classes,
        norm_type="ada_norm_zero",
    )
    disable_label_dropout(transformer)
    return transformer


def load_transformer(directory: str | Path) -> Transformer2DModel:
    """Load an exported ``transformer/`` folder (eval mode, label dropout off).

    ``Transformer2DModel.from_pretrained`` (and ``from_config``) remap ``norm_type=
    "ada_norm_zero"`` to ``DiTTransformer2DModel``, which fails for the discrete model
    (diffusers 0.42); this builds the class directly from ``config.json`` and loads the
    safetensors weights strictly.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    model = Transformer2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    model.load_state_dict(load_file(directory / "diffusion_pytorch_model.safetensors"))
    disable_label_dropout(model)
    return model.eval()


def disable_label_dropout(transformer: Transformer2DModel) -> None:
    """Set every block's ``LabelEmbedding.dropout_prob`` to 0 (labels are dropped by the module,
    once per sample for all blocks). The null-class row (index ``num_classes``) stays."""
    for block in transformer.transformer_blocks:
        emb = getattr(getattr(block, "norm1", None), "emb", None)
        embedder = getattr(emb, "class_embedder", None)
        if embedder is None:
            raise ValueError("the transformer blocks have no class embedder (norm_type must be "
                             "ada_norm_zero)")
        embedder.dropout_prob = 0.0


def _check_args(**kw) -> None:
    """ValueError naming the ``model.<key>`` of an impossible setting."""
    if isinstance(kw["num_classes"], bool) or not isinstance(kw["num_classes"], int) \
            or kw["num_classes"] < 1:
        raise ValueError(f"model.num_classes must be a positive integer, got {kw['num_classes']!r}")
    if not 0 <= kw["label_drop_prob"] < 1:
        raise ValueError(f"model.label_drop_prob must lie in [0, 1), got {kw['label_drop_prob']}")
    if kw["aux_weight"] < 0:
        raise ValueError(f"model.aux_weight must be >= 0, got {kw['aux_weight']}")
    if kw["t_sampling"] not in T_SAMPLING:
        raise ValueError(f"model.t_sampling must be one of {list(T_SAMPLING)}, got {kw['t_sampling']!r}")
    if not 1 <= kw["sample_steps"] <= kw["num_train_timesteps"]:
        raise ValueError(f"model.sample_steps must lie in [1, model.num_train_timesteps="
                         f"{kw['num_train_timesteps']}], got {kw['sample_steps']}")
    if kw["sample_guidance"] < 0:
        raise ValueError(f"model.sample_guidance must be >= 0, got {kw['sample_guidance']}")
    if kw["sampler"] not in SAMPLERS:
        raise ValueError(f"model.sampler must be one of {list(SAMPLERS)}, got {kw['sampler']!r}")
    try:
        check_truncation(kw["sample_truncation"])
    except ValueError as err:
        raise ValueError(f"model.sample_{err}") from None
    if kw["val_samples_per_class"] < 0 or kw["sample_every_n_epochs"] < 1:
        raise ValueError("model.val_samples_per_class must be >= 0 and model.sample_every_n_epochs "
                         ">= 1")
