"""The adversarial autoencoder objective (VQGAN / Latent Diffusion, taming-transformers'
``VQLPIPSWithDiscriminator`` without LPIPS): options, GAN losses, the adaptive weight and the
:class:`Adversary` module that holds the discriminator.

Generator (autoencoder) objective, from step ``disc_start`` on::

    L = L_rec + (kl | vq terms) + d * L_G + feature_weight * L_FM
    d = disc_weight * clamp(||grad_w L_rec|| / (||grad_w L_G|| + 1e-4), 0, 1e4)

with ``w`` the decoder's last convolution weight, ``L_rec`` the reconstruction terms (pixel,
2-D spectral, multi-resolution spectral), ``L_G`` the generator's GAN loss (``-mean D(x')`` for
the hinge loss, ``mean softplus(-D(x'))`` for the non-saturating one) and ``L_FM`` the
discriminator feature-matching distance. The discriminator minimises
``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x')))`` (hinge) or
``0.5 * (mean softplus(-D(x)) + mean softplus(D(x')))`` (non-saturating) on detached
reconstructions. LPIPS is left out: its ImageNet VGG/AlexNet weights cannot be downloaded here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mdvq.models.discriminator import DISC_NORMS, PatchDiscriminator

LOSS_NAMES = ("plain", "adversarial")
"""Accepted values of ``model.loss.name``."""

GAN_LOSSES = ("hinge", "non_saturating")
"""Accepted values of ``model.loss.gan_loss``."""

ADAPTIVE_EPS = 1e-4
ADAPTIVE_MAX = 1e4


@dataclasses.dataclass(frozen=True)
class AdversarialOptions:
    """The ``model.loss`` config of ``model/loss=adversarial`` (conf/model/loss/adversarial.yaml,
    where every field is commented). ``disc_start`` counts training batches (generator steps)."""

    name: str = "adversarial"
    gan_loss: str = "hinge"
    disc_weight: float = 0.1
    disc_start: int = 0
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.5, 0.9)
    disc_channels: int = 32
    disc_layers: int = 3
    disc_norm: str = "group"
    feature_weight: float = 0.0
    multires_weight: float = 0.0
    multires_windows: tuple[int, ...] = (8, 16, 32)
    multires_eps: float = 1e-2

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> AdversarialOptions | None:
        """Options from a config mapping; None (or ``name: plain``) means the plain objective.

        Raises ``ValueError`` naming ``model.loss.<key>`` for an unknown key, an unknown
        ``name`` or ``gan_loss``, a negative weight or learning rate, a negative ``disc_start``.
        """
        if values is None:
            return None
        values = dict(values)
        name = values.get("name", "adversarial")
        if name not in LOSS_NAMES:
            raise ValueError(f"model.loss.name must be one of {list(LOSS_NAMES)} (the "
                             f"model/loss group), got {name!r}")
        if name == "plain":
            return None
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"model.loss: unknown key(s) {unknown}; valid: {sorted(fields)}")
        opts = cls(**values)
        opts = dataclasses.replace(
            opts,
            disc_betas=tuple(float(b) for b in opts.disc_betas),
            multires_windows=tuple(int(w) for w in opts.multires_windows),
        )
        opts.check()
        return opts

    def check(self) -> None:
        """Raise ``ValueError`` naming the key of the first impossible value."""
        if self.gan_loss not in GAN_LOSSES:
            raise ValueError(f"model.loss.gan_loss must be one of {list(GAN_LOSSES)}, "
                             f"got {self.gan_loss!r}")
        for key in ("disc_weight", "feature_weight", "multires_weight"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"model.loss.{key} must be a number >= 0, got {value!r}")
        if not (isinstance(self.disc_lr, (int, float)) and self.disc_lr > 0):
            raise ValueError(f"model.loss.disc_lr must be > 0, got {self.disc_lr!r}")
        if isinstance(self.disc_start, bool) or not isinstance(self.disc_start, int) \
                or self.disc_start < 0:
            raise ValueError(f"model.loss.disc_start must be an integer >= 0 (training steps), "
                             f"got {self.disc_start!r}")
        if len(self.disc_betas) != 2 or not all(0 <= b < 1 for b in self.disc_betas):
            raise ValueError(f"model.loss.disc_betas must be two numbers in [0, 1), "
                             f"got {list(self.disc_betas)}")
        if self.disc_norm not in DISC_NORMS:
            raise ValueError(f"model.loss.disc_norm must be one of {list(DISC_NORMS)}, "
                             f"got {self.disc_norm!r}")
        if not self.multires_windows or any(w < 2 for w in self.multires_windows):
            raise ValueError(f"model.loss.multires_windows must list window sizes >= 2 pixels, "
                             f"got {list(self.multires_windows)}")
        if not self.multires_eps > 0:
            raise ValueError(f"model.loss.multires_eps must be > 0, got {self.multires_eps!r}")

    def as_dict(self) -> dict:
        """Plain-data form (saved as a hyperparameter; lists for the tuples)."""
        out = dataclasses.asdict(self)
        out["disc_betas"] = list(self.disc_betas)
        out["multires_windows"] = list(self.multires_windows)
        return out


# ------------------------------------------------------------------------------- losses
def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor,
                       kind: str) -> torch.Tensor:
    """The discriminator's loss (scalar) from patch logits of real and reconstructed images:
    hinge ``0.5 (mean relu(1 - real) + mean relu(1 + fake))`` or non-saturating
    ``0.5 (mean softplus(-real) + mean softplus(fake))`` (taming's ``hinge_d_loss`` /
    ``vanilla_d_loss``)."""
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    if kind == "non_saturating":
        return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())
    raise ValueError(f"model.loss.gan_loss must be one of {list(GAN_LOSSES)}, got {kind!r}")


def generator_loss(logits_fake: torch.Tensor, kind: str) -> torch.Tensor:
    """The generator's GAN loss (scalar): ``-mean(fake)`` (hinge, as taming) or
    ``mean softplus(-fake)`` = ``-mean log sigmoid(fake)`` (non-saturating)."""
    if kind == "hinge":
        return -logits_fake.mean()
    if kind == "non_saturating":
        return F.softplus(-logits_fake).mean()
    raise ValueError(f"model.loss.gan_loss must be one of {list(GAN_LOSSES)}, got {kind!r}")


def feature_matching_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Mean over the discriminator's blocks of the mean L1 distance between its activations on
    real (detached) and reconstructed images (pix2pixHD / MelGAN / HiFi-GAN); the logits (the
    last entry) are left out."""
    pairs = list(zip(real[:-1], fake[:-1], strict=True))
    return sum(F.l1_loss(f, r.detach()) for r, f in pairs) / len(pairs)


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    eps: float = ADAPTIVE_EPS, max_weight: float = ADAPTIVE_MAX) -> torch.Tensor:
    """taming's adaptive weight ``clamp(||grad_w rec|| / (||grad_w gan|| + eps), 0, max)``
    (detached scalar, float32) at the weight ``w = last_layer`` (the decoder's last conv).

    Both gradients are taken with ``torch.autograd.grad`` (graph retained; nothing accumulates
    in ``.grad``, so DDP's gradient hooks do not fire).
    """
    g_rec, = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    g_gan, = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)
    weight = g_rec.float().norm() / (g_gan.float().norm() + eps)
    return torch.clamp(weight, 0.0, max_weight).detach()


class Adversary(nn.Module):
    """The discriminator and the generator-step counter of the adversarial objective.

    ``discriminator`` (:class:`PatchDiscriminator`) and the buffer ``steps`` (training batches
    taken, int64) live in the LightningModule's state dict, so a checkpoint resumes them; the
    diffusers export never holds them. :meth:`generator_terms` runs the discriminator with
    detached parameters (no gradient of the generator's loss reaches the discriminator);
    :meth:`discriminator_terms` sees detached images (no gradient reaches the autoencoder).
    """

    def __init__(self, options: AdversarialOptions, in_channels: int = 1) -> None:
        super().__init__()
        self.options = options
        self.discriminator = PatchDiscriminator(in_channels, options.disc_channels,
                                                options.disc_layers, options.disc_norm)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def active(self) -> bool:
        """Whether the discriminator has joined (``steps >= disc_start``)."""
        return int(self.steps) >= self.options.disc_start

    def _frozen(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The discriminator's features and logits of ``x`` computed with detached parameters."""
        params = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        return torch.func.functional_call(self.discriminator, params, (x,), {"features": True},
                                          strict=False)

    def generator_terms(self, x: torch.Tensor, recon: torch.Tensor, rec_loss: torch.Tensor,
                        last_layer: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """``(loss, terms)``: the adversarial part of the generator's loss for images ``x`` and
        reconstructions ``recon`` ``(B, C, F, T)`` in [-1, 1]; ``rec_loss`` is the
        reconstruction objective for the adaptive weight at ``last_layer`` (None: weight 1).
        ``terms``: ``gan_loss``, ``d_weight`` (adaptive weight x disc_weight) and, when on,
        ``feature_loss``."""
        o = self.options
        fake = self._frozen(recon.float())
        g_loss = generator_loss(fake[-1], o.gan_loss)
        if last_layer is not None and torch.is_grad_enabled():
            d_weight = adaptive_weight(rec_loss, g_loss, last_layer) * o.disc_weight
        else:
            d_weight = torch.tensor(float(o.disc_weight), device=recon.device)
        loss = d_weight * g_loss
        terms = {"gan_loss": g_loss, "d_weight": d_weight}
        if o.feature_weight > 0:
            with torch.no_grad():
                real = self._frozen(x.float())
            fm = feature_matching_loss(real, fake)
            loss = loss + o.feature_weight * fm
            terms["feature_loss"] = fm
        return loss, terms

    def discriminator_terms(self, x: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``(loss, terms)``: the discriminator's loss on ``x`` and detached ``recon``; terms
        ``disc_loss``, ``logits_real``, ``logits_fake`` (mean patch logits) and
        ``disc_accuracy`` (share of patches on the right side of 0)."""
        real = self.discriminator(x.detach().float())
        fake = self.discriminator(recon.detach().float())
        loss = discriminator_loss(real, fake, self.options.gan_loss)
        with torch.no_grad():
            acc = 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean())
        return loss, {"disc_loss": loss, "logits_real": real.mean(), "logits_fake": fake.mean(),
                      "disc_accuracy": acc}

    def idle_loss(self) -> torch.Tensor:
        """``0 * sum(parameters)``: before ``disc_start`` every discriminator parameter still
        gets a (zero) gradient, so DDP (``find_unused_parameters=False``) sees them all used."""
        return sum(p.sum() for p in self.discriminator.parameters()) * 0.0

