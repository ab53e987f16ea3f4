"""What the two phase-1 autoencoders (VQ-VAE, KL-VAE) share: the network arguments they check
and pass to diffusers, and the step that turns a reconstruction into a logged loss (and, with
the adversarial objective ``model/loss=adversarial``, into optimiser steps of the autoencoder
and its discriminator: :mod:`mdvq.models.adversarial`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mdvq.models.adversarial import AdversarialOptions, Adversary
from mdvq.models.discriminator import smallest_image
from mdvq.models.losses import check_finite, multi_resolution_spectral_loss, reconstruction_terms
from mdvq.models.optim import PartialOptimizers, configure_optimization
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


def loss_config(loss: Mapping | None) -> dict | None:
    """The checked ``model.loss`` mapping as plain data (None for the plain objective, which
    then stays out of the hyperparameters: plain checkpoints are unchanged)."""
    options = AdversarialOptions.from_mapping(loss)
    return None if options is None else options.as_dict()


def hparams_ignore(loss: dict | None) -> list[str]:
    """Constructor arguments ``save_hyperparameters`` leaves out: the optimiser partials, and
    ``loss`` when it is the plain objective (None)."""
    return ["optimizer", "scheduler"] + (["loss"] if loss is None else [])


def _do_nothing() -> None:
    return None


class AutoencoderSteps(PartialOptimizers):
    """LightningModule mixin for an autoencoder with ``hparams`` ``recon_loss``,
    ``spectral_weight`` and ``spectral_eps``: the logged objective and the evaluation outputs
    the phase-1 callbacks read (images in [0, 1]).

    With ``model/loss=adversarial`` (:meth:`init_adversary`) the module holds an
    :class:`~mdvq.models.adversarial.Adversary` (``self.adversary``) and optimises manually
    with two optimisers (autoencoder, discriminator); otherwise ``self.adversary`` is None and
    Lightning optimises automatically, exactly as before the adversarial objective existed.
    """

    # ------------------------------------------------------------------------- adversarial set-up
    def init_adversary(self, loss: dict | None, in_channels: int,
                       image_size: tuple[int, int] | None = None) -> None:
        """Build the discriminator for the checked ``loss`` (:func:`loss_config`; None: plain).

        Called after the autoencoder is built, so the autoencoder's initial weights do not
        depend on the objective (same seed, same start).
        """
        self._adopted_clip: tuple[float | None, str | None] = (None, None)
        self.adversary: Adversary | None = None
        if loss is None:
            return
        options = AdversarialOptions.from_mapping(loss)
        need = smallest_image(options.disc_layers)
        if image_size and min(image_size) < need:
            raise ValueError(f"model.loss.disc_layers={options.disc_layers} needs images of at "
                             f"least {need}x{need} pixels (data.image_size={list(image_size)}); "
                             "use fewer layers")
        self.adversary = Adversary(options, in_channels)
        self.automatic_optimization = False

    def configure_callbacks(self):
        """Before Lightning checks the trainer (and before any data is loaded), the adversarial
        objective checks ``model.loss.disc_start`` against ``trainer.max_steps`` and the
        precision, and takes over ``trainer.gradient_clip_val`` / ``gradient_clip_algorithm``:
        Lightning refuses automatic clipping with manual optimisation, so the module clips the
        autoencoder's gradients itself with the same settings. Adds no callbacks."""
        if self.adversary is None:
            return []
        trainer = self.trainer
        start = self.adversary.options.disc_start
        max_steps = getattr(trainer, "max_steps", -1)
        if max_steps is not None and max_steps >= 0 and start >= max_steps:
            raise ValueError(f"model.loss.disc_start={start} is not before trainer.max_steps="
                             f"{max_steps}: the discriminator would never join; lower "
                             "model.loss.disc_start or raise trainer.max_steps")
        if str(trainer.precision) in ("16", "16-mixed"):
            raise ValueError("trainer.precision=16-mixed is not supported with "
                             "model/loss=adversarial (one backward pass feeds two optimisers: "
                             "a loss scale per optimiser would be needed); use bf16-mixed or "
                             "32-true")
        if trainer.gradient_clip_val:
            self._adopted_clip = (float(trainer.gradient_clip_val),
                                  trainer.gradient_clip_algorithm or "norm")
            trainer.gradient_clip_val = None
        return []

    def configure_optimizers(self):
        """Plain: the ``optimizer``/``scheduler`` partials over every parameter. Adversarial:
        those over the autoencoder's parameters, plus Adam(``disc_lr``, ``disc_betas``) over
        the discriminator's (taming's choice)."""
        if self.adversary is None:
            return super().configure_optimizers()
        ae = [p for name, p in self.named_parameters() if not name.startswith("adversary.")]
        conf = configure_optimization(ae, self.optimizer_factory, self.scheduler_factory,
                                      lambda: self.trainer.estimated_stepping_batches)
        o = self.adversary.options
        disc = torch.optim.Adam(self.adversary.discriminator.parameters(), lr=o.disc_lr,
                                betas=tuple(o.disc_betas))
        schedulers = [conf["lr_scheduler"]] if "lr_scheduler" in conf else []
        return [conf["optimizer"], disc], schedulers

    # ------------------------------------------------------------------------------ objective
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
        under ``{stage}/`` (per step in training, per epoch and DDP-synced otherwise).

        With the adversarial objective, training also adds the generator's adversarial terms
        and takes both optimiser steps (:meth:`adversarial_step`; the returned loss is then
        detached); evaluation adds the discriminator's logits and accuracy to what is logged.
        """
        rec_total, terms = reconstruction_terms(
            recon.float(),
            x.float(),
            self.hparams.recon_loss,
            self.hparams.spectral_weight,
            self.hparams.spectral_eps,
        )
        if self.adversary is not None:
            o = self.adversary.options
            if o.multires_weight > 0:
                mr = multi_resolution_spectral_loss(to_unit(recon.float()), to_unit(x.float()),
                                                    o.multires_windows, o.multires_eps)
                terms["multires_loss"] = mr
                rec_total = rec_total + o.multires_weight * mr
        loss = rec_total + extra_loss
        terms.update(extra_terms)
        if self.adversary is not None:
            if stage == "train":
                loss = self.adversarial_step(x, recon, rec_total, loss, terms, batch_idx)
            else:
                terms.update(self.adversary.discriminator_terms(x, recon)[1])
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

    def adversarial_step(self, x: torch.Tensor, recon: torch.Tensor, rec_total: torch.Tensor,
                         loss: torch.Tensor, terms: dict, batch_idx: int) -> torch.Tensor:
        """One training batch of the adversarial objective (manual optimisation); returns the
        autoencoder's loss (detached) and adds the adversarial terms to ``terms``.

        One backward pass of ``L_AE + L_D`` feeds both optimisers: the generator's terms see
        the discriminator with detached parameters and the discriminator's loss sees detached
        reconstructions, so each optimiser gets exactly its own gradient (as Lightning's
        two-optimiser GAN example, whose discriminator step also uses the reconstruction made
        before the generator step), the autoencoder's backward runs once, and under DDP every
        parameter gets a gradient in that one pass (``find_unused_parameters=False`` works).
        Before ``disc_start`` the discriminator is neither used nor stepped.
        The discriminator's step goes through the strategy (precision plugin, hooks) but is not
        counted in ``trainer.global_step``: steps, ``max_steps``, ``disc_start`` and schedules
        all count training batches, as with the plain objective.
        """
        adv = self.adversary
        opt_ae, opt_disc = self.optimizers()
        active = adv.active()
        if active:
            g_loss, g_terms = adv.generator_terms(x, recon, rec_total, self._last_layer())
            d_loss, d_terms = adv.discriminator_terms(x, recon)
            loss = loss + g_loss
            terms.update(g_terms)
            terms.update(d_terms)
        else:
            d_loss = adv.idle_loss()
        check_finite(loss + d_loss, terms, "train", self.global_step, batch_idx)
        opt_ae.zero_grad(set_to_none=True)
        opt_disc.zero_grad(set_to_none=True)
        self.manual_backward(loss + d_loss)
        clip, algorithm = getattr(self, "_adopted_clip", (None, None))
        if clip:
            self.clip_gradients(opt_ae, gradient_clip_val=clip, gradient_clip_algorithm=algorithm)
        opt_ae.step()
        if active:
            self.trainer.strategy.optimizer_step(opt_disc.optimizer, _do_nothing)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        adv.steps += 1
        return loss.detach()

    def _last_layer(self) -> torch.Tensor:
        """The decoder's last convolution weight (where taming takes the adaptive weight)."""
        return self.model.decoder.conv_out.weight

    @staticmethod
    def eval_outputs(x: torch.Tensor, recon: torch.Tensor, loss: torch.Tensor) -> dict:
        """``{"loss", "target", "recon"}`` with ``target``/``recon`` ``(B, C, F, T)`` in [0, 1]."""
        return {
            "loss": loss.detach(),
            "target": to_unit(x.detach()).float(),
            "recon": to_unit(recon.detach().float()).clamp(0, 1),
        }
