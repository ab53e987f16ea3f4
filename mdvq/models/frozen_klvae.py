"""A frozen, trained KL-VAE (diffusers ``AutoencoderKL``) for the latent-diffusion prior.

:func:`load_frozen_klvae` accepts

- a run folder of ``python -m mdvq.run model=klvae`` (its ``summary.json`` has ``"model":
  "klvae"`` and names ``pretrained_dir``; else its ``pretrained/`` subfolder; else its best or
  last checkpoint),
- a diffusers ``save_pretrained`` folder of an ``AutoencoderKL`` (``config.json`` + weights),
- a Lightning checkpoint (``.ckpt``) of :class:`mdvq.models.KLVAEModule`,

and returns a :class:`FrozenKLVAE`. A VQ-VAE in any of these forms is refused with a
ValueError naming ``model.autoencoder`` and the kind expected. Only the plain diffusers model
is used: ``encode(x).latent_dist`` (mean and std of the diagonal Gaussian posterior) and
``decode(z).sample`` (docs/library-facts.md).

Latent scale: diffusers pipelines normalise latents as ``(z - shift_factor) * scaling_factor``
and undo it before decoding (``z / scaling_factor + shift_factor``); :meth:`FrozenKLVAE.scale`
and :meth:`FrozenKLVAE.unscale` are those two maps with the values the prior measured.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from mdvq.core.errors import DataError
from mdvq.core.summary import RunSummary
from mdvq.models.fingerprint import network_fingerprint

log = logging.getLogger(__name__)

KEY = "model.autoencoder"
"""The config key that names the KL-VAE (used in every error message)."""

EXPECTED = ("a KL-VAE: a `model=klvae` run folder, a diffusers AutoencoderKL folder or a "
            "KLVAEModule .ckpt")
"""What :data:`KEY` must name."""

SCALE_KEYS = ("scaling_factor", "shift_factor")
"""Config entries that describe the prior's latent normalisation, not the network."""


def klvae_config(model: AutoencoderKL) -> dict:
    """The model's diffusers config as plain JSON data (no ``_``-prefixed keys): enough for
    ``AutoencoderKL.from_config`` and safe to store in a checkpoint's hyperparameters."""
    cfg = json.loads(json.dumps(dict(model.config), default=str))
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def klvae_fingerprint(model: AutoencoderKL) -> str:
    """A 16-hex-digit SHA-256 of the network config and every weight.

    ``scaling_factor`` and ``shift_factor`` are left out: they do not change ``encode`` or
    ``decode``, so the phase-1 KL-VAE and the ``vae/`` folder of an exported prior (which
    carries the measured scale) have the same fingerprint and share latent caches.
    """
    cfg = {k: v for k, v in klvae_config(model).items() if k not in SCALE_KEYS}
    return network_fingerprint(cfg, model)


class FrozenKLVAE(torch.nn.Module):
    """A trained KL-VAE in inference mode: images ``(B, C, F, T)`` in [-1, 1] <-> latents
    ``(B, c, h, w)``.

    Args:
        model: the diffusers ``AutoencoderKL`` (parameters frozen; the module stays in eval
            mode whatever ``.train()`` asks).
        fingerprint: stable identity of the weights for cache keys (None: computed).
        source: where it was loaded from (for messages and sample metadata).
        image_size: ``(F, T)`` it was trained on, when known (None otherwise).

    Attributes: ``latent_channels`` (c), ``downsampling`` (pixels per latent along each axis),
    ``fingerprint``, ``source``, ``image_size``.
    """

    def __init__(self, model: AutoencoderKL, fingerprint: str | None = None,
                 source: str | None = None, image_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        cfg = model.config
        self.latent_channels = int(cfg.latent_channels)
        self.downsampling = 2 ** (len(cfg.block_out_channels) - 1)
        self.fingerprint = fingerprint or klvae_fingerprint(model)
        self.source = source
        self.image_size = tuple(int(s) for s in image_size) if image_size else None

    def train(self, mode: bool = True) -> FrozenKLVAE:
        """Stays in eval mode (the KL-VAE is frozen)."""
        return super().train(False)

    def latent_shape(self, image_size: tuple[int, int]) -> tuple[int, int, int]:
        """``(c, h, w)`` of the latents of ``(F, T)`` images; ValueError when it does not divide."""
        f, t = (int(s) for s in image_size)
        if f % self.downsampling or t % self.downsampling:
            raise ValueError(f"data.image_size {[f, t]} must be divisible by the KL-VAE's "
                             f"downsampling {self.downsampling} ({self.source})")
        return self.latent_channels, f // self.downsampling, t // self.downsampling

    @torch.no_grad()
    def encode_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation ``(B, c, h, w)`` float32 of ``q(z | x)`` for images
        ``x`` ``(B, C, F, T)`` in [-1, 1] (unscaled latents)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            dist = self.model.encode(x.float()).latent_dist
        return dist.mean.float(), dist.std.float()

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, F, T)`` clamped to [-1, 1] from unscaled latents ``(B, c, h, w)``."""
        if z.dim() != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be (B, {self.latent_channels}, h, w), got "
                             f"{tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.model.decode(z.float()).sample.clamp(-1, 1)

    @staticmethod
    def scale(z: torch.Tensor, scaling_factor: float, shift_factor: float) -> torch.Tensor:
        """Prior-space latents ``(z - shift_factor) * scaling_factor`` (diffusers convention)."""
        return (z - shift_factor) * scaling_factor

    @staticmethod
    def unscale(z: torch.Tensor, scaling_factor: float, shift_factor: float) -> torch.Tensor:
        """Decoder-space latents ``z / scaling_factor + shift_factor`` (inverse of :meth:`scale`)."""
        return z / scaling_factor + shift_factor


def load_frozen_klvae(path: str | Path) -> FrozenKLVAE:
    """Load a :class:`FrozenKLVAE` from a KL run folder, a diffusers ``AutoencoderKL`` folder or
    a ``KLVAEModule`` checkpoint (module docstring). FileNotFoundError when ``path`` holds
    none of these; ValueError naming ``model.autoencoder`` when it holds another kind of model
    (a VQ-VAE) or an unreadable file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{KEY}: {path} not found (give {EXPECTED})")
    if path.is_file():
        if path.suffix != ".ckpt":
            raise ValueError(f"{KEY}: {path} is not a Lightning checkpoint (.ckpt); give {EXPECTED}")
        return _from_checkpoint(path)
    if (path / "summary.json").is_file():
        return _from_run(path)
    if (path / "config.json").is_file():
        return _from_diffusers(path)
    if (path / "pretrained" / "config.json").is_file():
        return _from_diffusers(path / "pretrained")
    raise FileNotFoundError(f"{KEY}: {path} is neither a run folder (summary.json), a diffusers "
                            f"folder (config.json) nor a folder with pretrained/config.json; "
                            f"give {EXPECTED}")


def _from_diffusers(folder: Path, image_size=None) -> FrozenKLVAE:
    try:
        cls = json.loads((folder / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError) as err:
        raise ValueError(f"{KEY}: {folder / 'config.json'} is an unreadable diffusers config "
                         f"({err})") from err
    if cls != "AutoencoderKL":
        kind = " (a VQ-VAE)" if cls == "VQModel" else ""
        raise ValueError(f"{KEY}: {folder} holds a diffusers {cls}{kind}, not an AutoencoderKL; "
                         f"the latent-diffusion prior needs {EXPECTED}")
    model = AutoencoderKL.from_pretrained(folder)
    return FrozenKLVAE(model, source=str(folder), image_size=image_size)


def _from_checkpoint(path: Path) -> FrozenKLVAE:
    from mdvq.models.klvae import KLVAEModule

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        keys = set(ckpt.get("state_dict", {}))
    except Exception as err:  # any failure means: not a checkpoint we can read
        raise ValueError(f"{KEY}: {path} is not a readable Lightning checkpoint "
                         f"({type(err).__name__}: {err}); give {EXPECTED}") from err
    if any(k.startswith("model.quantize.") for k in keys):
        raise ValueError(f"{KEY}: {path} is a VQ-VAE checkpoint (VQVAEModule); the "
                         f"latent-diffusion prior needs {EXPECTED}")
    try:
        module = KLVAEModule.load_from_checkpoint(path, map_location="cpu")
    except Exception as err:
        raise ValueError(f"{KEY}: {path} is not a checkpoint of mdvq.models.KLVAEModule "
                         f"({type(err).__name__}: {err}); give {EXPECTED}") from err
    return FrozenKLVAE(module.model, source=str(path), image_size=module.hparams.get("image_size"))


def _from_run(run: Path) -> FrozenKLVAE:
    try:
        summary = RunSummary.read(run, model="klvae", key=KEY)
    except DataError as err:
        raise ValueError(f"{err} (the latent-diffusion prior needs {EXPECTED})") from None
    image_size = (summary.config.get("data") or {}).get("image_size")
    if summary.pretrained_dir is not None:
        return _from_diffusers(summary.pretrained_dir, image_size)
    ckpt = summary.checkpoint("best")
    if ckpt is not None:
        log.info("KL-VAE run %s has no exported model; using checkpoint %s", run, ckpt)
        return _from_checkpoint(ckpt)
    raise FileNotFoundError(f"{KEY}: {run} has no exported KL-VAE (pretrained/) and no checkpoint")
