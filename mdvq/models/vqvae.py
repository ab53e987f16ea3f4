"""VQ-VAE LightningModule around diffusers' ``VQModel`` (phase 1 of mdvq).

The network is diffusers' ``VQModel`` built from plain arguments; this module owns the loss,
the optimiser and the logging. Images are ``(B, C, F, T)`` in [-1, 1] (model space); what is
returned for people (``target``, ``recon``) is in [0, 1].

Loss (VQ-VAE paper convention, docs/library-facts.md)::

    loss = recon_loss + spectral_weight * spectral_loss
           + ||sg(z) - e||^2                      # codebook_loss (moves the codes)
           + commitment_cost * ||z - sg(e)||^2    # commit_loss (moves the encoder)

diffusers builds the quantiser in *legacy* mode, where ``beta`` weights the codebook term
instead; this module sets ``quantize.legacy = False`` and ``quantize.beta = commitment_cost``.
Codebook distances are computed in float32 with autocast off.

Codebook health (k-means init, dead-code restart, EMA, cosine and low-dimensional lookup) is
switched on through ``codebook`` (:class:`mdvq.models.codebook.CodebookOptions`); then a
:class:`~mdvq.models.codebook.CodebookQuantizer` replaces diffusers' quantiser in training and
is folded back into a plain ``VQModel`` for export (:meth:`VQVAEModule.to_diffusers`).
``codebook.levels`` selects finite scalar quantisation instead
(:class:`~mdvq.models.codebook.FSQQuantizer`, docs/fsq.md), exported the same way.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from diffusers import VQModel
from lightning.pytorch import LightningModule

from mdvq.models.autoencoder import (
    AutoencoderSteps,
    hparams_ignore,
    loss_config,
    network_args,
)
from mdvq.models.codebook import (
    RECOMMENDED,
    CodebookOptions,
    CodebookQuantizer,
    FSQQuantizer,
    fold_into_vqmodel,
)
from mdvq.models.config_checks import as_tuple, check_autoencoder_config, downsampling_factor


class VQVAEModule(AutoencoderSteps, LightningModule):
    """Train a diffusers ``VQModel`` on ``(x, y)`` batches, x ``(B, C, F, T)`` in [-1, 1].

    Network arguments are passed unchanged to ``VQModel`` (see its documentation), except:
    ``sample_size`` defaults to ``max(image_size)``; ``vq_embed_dim`` defaults to
    ``latent_channels``; ``scaling_factor`` defaults to 1.0 (unused by discrete priors);
    ``lookup_from_codebook`` is not exposed (the module decodes code vectors, not indices).

    Training arguments:
        codebook: the codebook-health switches (a mapping of
            :class:`~mdvq.models.codebook.CodebookOptions` fields, ``conf/model/codebook/``);
            None takes ``codebook.RECOMMENDED`` (as ``conf/model/vqvae.yaml``); all switches off
            (``codebook.PLAIN``) keeps diffusers' quantiser.
        commitment_cost: the VQ-VAE paper's weight on ``||z - sg(e)||^2`` (the codebook term
            has weight 1).
        recon_loss: ``"l1"`` or ``"l2"`` on [-1, 1] images.
        spectral_weight: weight of the L1 distance between log-magnitudes of the 2-D FFT of the
            [0, 1] images (0 disables it); ``spectral_eps`` is its magnitude floor.
        loss: the ``model/loss`` group: None is the plain objective above, a mapping of
            :class:`~mdvq.models.adversarial.AdversarialOptions` adds a PatchGAN discriminator
            (``model/loss=adversarial``, docs/adversarial.md).
        optimizer: ``functools.partial`` awaiting the parameters (``None``: AdamW, lr 1e-3,
            weight decay 0). scheduler: ``functools.partial`` awaiting ``optimizer=`` (stepped
            every optimiser step; ``num_training_steps`` is filled in when left unset) or None.
        image_size: the data's ``(F, T)`` in pixels, checked against the downsampling.

    Attributes: ``model`` (the ``VQModel``), ``num_codes`` (K), ``model_kind = "vqvae"``.
    The optimiser partials are not saved as hyperparameters (they are not plain data), so
    ``VQVAEModule.load_from_checkpoint(path)`` works with torch's safe loading and rebuilds
    the default optimiser.
    """

    model_kind = "vqvae"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",) * 3,
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",) * 3,
        block_out_channels: tuple[int, ...] = (16, 32, 64),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 16,
        sample_size: int | None = None,
        num_vq_embeddings: int = 512,
        norm_num_groups: int = 8,
        vq_embed_dim: int | None = None,
        scaling_factor: float = 1.0,
        norm_type: str = "group",
        mid_block_add_attention: bool = True,
        force_upcast: bool = False,
        commitment_cost: float = 0.25,
        codebook: dict | None = None,
        recon_loss: str = "l1",
        spectral_weight: float = 0.0,
        spectral_eps: float = 1e-2,
        loss: dict | None = None,
        optimizer=None,
        scheduler=None,
        image_size: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__()
        # Plain python values (Hydra passes ListConfig) before save_hyperparameters reads them.
        down_block_types = as_tuple(down_block_types, str, "model.down_block_types")
        up_block_types = as_tuple(up_block_types, str, "model.up_block_types")
        block_out_channels = as_tuple(block_out_channels, int, "model.block_out_channels")
        image_size = as_tuple(image_size, int, "data.image_size")
        vq_embed_dim = latent_channels if vq_embed_dim is None else vq_embed_dim
        sample_size = max(image_size) if sample_size is None and image_size else sample_size
        commitment_cost = float(commitment_cost)
        codebook_options = (
            RECOMMENDED if codebook is None else CodebookOptions.from_mapping(codebook)
        )
        codebook = codebook_options.as_dict()
        if codebook_options.is_fsq and int(num_vq_embeddings) != math.prod(codebook_options.levels):
            raise ValueError(
                f"model.num_vq_embeddings is {num_vq_embeddings} but model.codebook.levels "
                f"{list(codebook_options.levels)} make {math.prod(codebook_options.levels)} codes: "
                "set them equal (conf/model/codebook/fsq*.yaml state it as num_codes)")
        net = network_args(locals())  # checked below and passed to diffusers
        check_autoencoder_config(
            **net,
            image_size=image_size,
            recon_loss=recon_loss,
            spectral_weight=spectral_weight,
            commitment_cost=commitment_cost,
            num_vq_embeddings=num_vq_embeddings,
            vq_embed_dim=vq_embed_dim,
            norm_type=norm_type,
        )
        loss = loss_config(loss)  # model/loss: None (plain) or the checked adversarial options
        self.save_hyperparameters(ignore=hparams_ignore(loss))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.model = VQModel(
            **net,
            act_fn=act_fn,
            sample_size=sample_size,
            num_vq_embeddings=num_vq_embeddings,
            vq_embed_dim=vq_embed_dim,
            scaling_factor=scaling_factor,
            norm_type=norm_type,
            mid_block_add_attention=mid_block_add_attention,
            force_upcast=force_upcast,
        )
        # Paper convention (docs/library-facts.md): beta weights the commitment term only when not legacy.
        self.model.quantize.legacy = False
        self.model.quantize.beta = commitment_cost
        self.num_codes = int(num_vq_embeddings)
        self.code_dim = int(vq_embed_dim)
        self.codebook_options = codebook_options
        self.codebook_quantizer: CodebookQuantizer | FSQQuantizer | None = None
        if codebook_options.is_fsq:  # finite scalar quantisation (docs/fsq.md)
            self.codebook_quantizer = FSQQuantizer(
                self.code_dim, codebook_options.levels, codebook_options.clamp_gradient,
                codebook_options.decorrelation_weight)
            self.model.quantize.requires_grad_(False)
        elif not codebook_options.is_plain:
            self.codebook_quantizer = CodebookQuantizer(
                self.code_dim, self.num_codes, commitment_cost, codebook_options
            )
            # diffusers' own quantiser is bypassed: no gradients (DDP would flag them unused)
            self.model.quantize.requires_grad_(False)
        self.init_adversary(loss, in_channels, image_size)  # model/loss=adversarial: the discriminator

    # ----------------------------------------------------------------------------- network
    @property
    def quantizer(self) -> torch.nn.Module:
        """The active quantiser: the :class:`CodebookQuantizer` when a codebook-health switch
        is on, else diffusers' ``VectorQuantizer`` (codebook in ``.embedding.weight``)."""
        return self.codebook_quantizer or self.model.quantize

    def latent_shape(self, image_size: tuple[int, int]) -> tuple[int, int, int]:
        """``(D, h, w)`` of the quantised latents for an ``(F, T)`` image (D = ``vq_embed_dim``)."""
        f = downsampling_factor(self.hparams.block_out_channels)
        return (self.code_dim, int(image_size[0]) // f, int(image_size[1]) // f)

    def quantize(
        self, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise pre-quantisation latents ``z`` ``(B, D, h, w)`` in float32, autocast off.

        Returns ``(z_q, indices, vq_loss, terms)``: ``z_q`` ``(B, D, h, w)`` float32 with
        straight-through gradients, ``indices`` ``(B, h, w)`` int64, ``vq_loss`` (scalar, with
        graph) ``= codebook_loss + commit_loss`` from diffusers' quantiser, and ``terms`` the two
        detached weighted parts: ``codebook_loss = mean ||sg(z) - e||^2`` and
        ``commit_loss = commitment_cost * mean ||z - sg(e)||^2`` (means over all elements).
        """
        if self.codebook_quantizer is not None:
            return self.codebook_quantizer(z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = z.float()
            z_q, vq_loss, (_, _, idx) = self.model.quantize(zf)
            with torch.no_grad():
                dist = (z_q - zf).square().mean()  # forward value of z_q is e
        idx = idx.reshape(z.shape[0], z.shape[2], z.shape[3])
        terms = {"codebook_loss": dist, "commit_loss": self.model.quantize.beta * dist}
        return z_q, idx, vq_loss, terms

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """Decode quantised latents ``(B, D, h, w)`` to images ``(B, C, F, T)`` in about [-1, 1]."""
        return self.model.decode(z_q, force_not_quantize=True).sample

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Encode, quantise, decode ``x`` ``(B, C, F, T)`` in [-1, 1].

        Returns ``(recon, indices, vq_loss, terms)`` as in :meth:`quantize`, ``recon`` unclamped.
        """
        z = self.model.encode(x).latents
        z_q, idx, vq_loss, terms = self.quantize(z)
        return self.decode_latents(z_q), idx, vq_loss, terms

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` ``(B, C, F, T)`` in [-1, 1], clamped to [-1, 1] (no grad)."""
        return self(x)[0].clamp(-1, 1)

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, h, w)`` int64 of images ``x`` ``(B, C, F, T)`` in [-1, 1]."""
        return self.quantize(self.model.encode(x).latents)[1]

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, F, T)`` in about [-1, 1] (unclamped) from code indices ``(B, h, w)``."""
        if indices.dim() != 3 or indices.dtype != torch.long:
            raise ValueError(
                f"indices must be an int64 tensor (B, h, w), got {tuple(indices.shape)} "
                f"{indices.dtype}"
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ValueError(f"indices must lie in [0, {self.num_codes}), got values outside")
        if self.codebook_quantizer is not None:
            return self.decode_latents(self.codebook_quantizer.codes_to_latents(indices))
        b, h, w = indices.shape
        z_q = self.model.quantize.get_codebook_entry(indices.reshape(-1), (b, h, w, self.code_dim))
        return self.decode_latents(z_q)

    def to_diffusers(self) -> VQModel:
        """A stand-alone diffusers ``VQModel`` (a copy, in eval mode) that encodes, quantises and
        decodes exactly as this module does at inference."""
        if self.codebook_quantizer is not None:
            return fold_into_vqmodel(self.model, self.codebook_quantizer)
        return copy.deepcopy(self.model).eval()

    def export_pretrained(self, directory: str | Path) -> Path:
        """Save :meth:`to_diffusers` with ``save_pretrained`` (``VQModel.from_pretrained`` loads it).

        Note: diffusers does not store the quantiser's ``legacy``/``beta`` training flags; a
        reloaded model reconstructs identically but would train with diffusers' defaults.
        """
        directory = Path(directory)
        self.to_diffusers().save_pretrained(directory)
        return directory

    # ----------------------------------------------------------------------------- training
    def _step(self, batch, batch_idx: int, stage: str):
        x = batch[0]
        recon, idx, vq_loss, vq_terms = self(x)
        loss = self.objective(x, recon, vq_loss, vq_terms, stage, batch_idx)
        return x, recon, idx, loss

    def training_step(self, batch, batch_idx: int) -> dict:
        """One optimisation step; returns ``{"loss", "indices" (B, h, w) int64}``."""
        _, _, idx, loss = self._step(batch, batch_idx, "train")
        return {"loss": loss, "indices": idx.detach()}

    def _eval_step(self, batch, batch_idx: int, stage: str) -> dict:
        x, recon, idx, loss = self._step(batch, batch_idx, stage)
        return {**self.eval_outputs(x, recon, loss), "indices": idx.detach()}

    def validation_step(self, batch, batch_idx: int) -> dict:
        """Returns ``{"loss", "target", "recon" (B, C, F, T) in [0, 1], "indices" (B, h, w)}``."""
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> dict:
        """As :meth:`validation_step`, logged under ``test/``."""
        return self._eval_step(batch, batch_idx, "test")
