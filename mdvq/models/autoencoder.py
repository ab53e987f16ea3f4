"""What the two phase-1 autoencoders (VQ-VAE, KL-VAE) share: the network arguments they check
and pass to diffusers, and the step that turns a reconstruction into a logged loss."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mdvq.models.losses import check_finite, reconstruction_terms
from mdvq.models.optim import PartialOptimizers
from mdvq.utils.pixels import to_unit

NETWORK_KEYS = (
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "norm_num_groups",
)
"""Constructor arguments both checked (``check_autoencoder_config``) and passed to diffusers."""


def network_args(values: Mapping) -> dict:
    """The :data:`NETWORK_KEYS` entries of ``values`` (a constructor's ``locals()``)."""
    return {key: values[key] for key in NETWORK_KEYS}


class AutoencoderSteps(PartialOptimizers):
    """LightningModule mixin for an autoencoder with ``hparams`` ``recon_loss``,
    ``spectral_weight`` and ``spectral_eps``: the logged objective and the evaluation outputs
    the phase-1 callbacks read (images in [0, 1])."""

    def objective(
        self,
        x: torch.Tensor,
        recon: torch.Tensor,
        extra_loss: torch.Tensor,
        extra_terms: dict[str, torch.Tensor],
        stage: str,
        batch_idx: int,
    ) -> torch.Tensor:
        """``recon_loss (+ spectral) + extra_loss`` for images ``x``, ``recon`` ``(B, C, F, T)`` in
        [-1, 1]; stops on a non-finite value (naming the term), logs the loss and every term
        under ``{stage}/`` (per step in training, per epoch and DDP-synced otherwise)."""
        rec_total, terms = reconstruction_terms(
            recon.float(),
            x.float(),
            self.hparams.recon_loss,
            self.hparams.spectral_weight,
            self.hparams.spectral_eps,
        )
        loss = rec_total + extra_loss
        terms.update(extra_terms)
        check_finite(loss, terms, stage, self.global_step, batch_idx)
        train = stage == "train"
        for name, value in {"loss": loss, **terms}.items():
            self.log(
                f"{stage}/{name}",
                value.detach(),
                on_step=train,
                on_epoch=not train,
                prog_bar=name == "loss",
                batch_size=x.shape[0],
                sync_dist=not train,
            )
        return loss

    @staticmethod
    def eval_outputs(x: torch.Tensor, recon: torch.Tensor, loss: torch.Tensor) -> dict:
        """``{"loss", "target", "recon"}`` with ``target``/``recon`` ``(B, C, F, T)`` in [0, 1]."""
        return {
            "loss": loss.detach(),
            "target": to_unit(x.detach()).float(),
            "recon": to_unit(recon.detach().float()).clamp(0, 1),
        }
