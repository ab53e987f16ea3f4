"""A frozen, trained VQ-VAE (diffusers ``VQModel``) that maps spectrograms to code maps and back.

:func:`load_frozen_vqvae` accepts

- a run folder of ``python -m mdvq.run model=vqvae`` (its ``summary.json`` names
  ``pretrained_dir``; else its ``pretrained/`` subfolder; else its best or last checkpoint),
- a diffusers ``save_pretrained`` folder of a ``VQModel`` (``config.json`` + weights),
- a Lightning checkpoint (``.ckpt``) of :class:`mdvq.models.VQVAEModule`,

and returns a :class:`FrozenVQVAE`. Only the plain diffusers model is used: indices from
``model.quantize(model.encode(x).latents)``, latents from
``model.quantize.get_codebook_entry(indices, (B, h, w, D))``, images from
``model.decode(z, force_not_quantize=True)`` (docs/library-facts.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import VQModel

from mdvq.core.summary import RunSummary
from mdvq.models.fingerprint import network_fingerprint

log = logging.getLogger(__name__)


def plain_config(model: VQModel) -> dict:
    """The model's diffusers config as plain JSON data (lists, no ``_``-prefixed keys): enough
    for ``VQModel.from_config`` and safe to store in a checkpoint's hyperparameters."""
    cfg = json.loads(json.dumps(dict(model.config), default=str))
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def weights_fingerprint(model: VQModel) -> str:
    """A 16-hex-digit SHA-256 of the config and every weight (names, shapes, dtypes, bytes).

    The same weights give the same fingerprint whether they were loaded from a checkpoint or
    a ``save_pretrained`` folder, so token caches keyed by it are shared between the two.
    """
    return network_fingerprint(plain_config(model), model)


class FrozenVQVAE(torch.nn.Module):
    """A trained VQ-VAE in inference mode: images ``(B, C, F, T)`` in [-1, 1] <-> codes ``(B, h, w)``.

    Args:
        model: the diffusers ``VQModel`` (its parameters are frozen; the module stays in eval
            mode whatever ``.train()`` asks).
        fingerprint: stable identity of the weights for cache keys (None: computed).
        source: where it was loaded from (for messages).
        image_size: ``(F, T)`` it was trained on, when known (None otherwise).

    Attributes: ``num_codes`` (K), ``code_dim`` (D), ``downsampling`` (pixels per code along
    each axis), ``fingerprint``, ``source``, ``image_size``.
    """

    def __init__(self, model: VQModel, fingerprint: str | None = None, source: str | None = None,
                 image_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        cfg = model.config
        self.num_codes = int(cfg.num_vq_embeddings)
        self.code_dim = int(cfg.vq_embed_dim or cfg.latent_channels)
        self.downsampling = 2 ** (len(cfg.block_out_channels) - 1)
        self.fingerprint = fingerprint or weights_fingerprint(model)
        self.source = source
        self.image_size = tuple(int(s) for s in image_size) if image_size else None

    def train(self, mode: bool = True) -> FrozenVQVAE:
        """Stays in eval mode (the VQ-VAE is frozen)."""
        return super().train(False)

    def latent_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Code-map size ``(h, w)`` for ``(F, T)`` images; raises ValueError when it does not divide."""
        f, t = (int(s) for s in image_size)
        if f % self.downsampling or t % self.downsampling:
            raise ValueError(f"data.image_size {[f, t]} must be divisible by the VQ-VAE's "
                             f"downsampling {self.downsampling} ({self.source})")
        return f // self.downsampling, t // self.downsampling

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, h, w)`` int64 of images ``x`` ``(B, C, F, T)`` in [-1, 1]."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = self.model.encode(x.float()).latents
            _, _, (_, _, idx) = self.model.quantize(z)
        return idx.reshape(x.shape[0], z.shape[2], z.shape[3]).long()

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, F, T)`` clamped to [-1, 1] from code indices ``(B, h, w)`` int64."""
        if indices.dim() != 3 or indices.dtype != torch.long:
            raise ValueError(f"indices must be an int64 tensor (B, h, w), got "
                             f"{tuple(indices.shape)} {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ValueError(f"indices must lie in [0, {self.num_codes})")
        b, h, w = indices.shape
        z = self.model.quantize.get_codebook_entry(indices.reshape(-1), (b, h, w, self.code_dim))
        return self.model.decode(z, force_not_quantize=True).sample.clamp(-1, 1)


def load_frozen_vqvae(path: str | Path) -> FrozenVQVAE:
    """Load a :class:`FrozenVQVAE` from a run folder, a diffusers ``VQModel`` folder or a
    ``VQVAEModule`` checkpoint (see the module docstring). Raises FileNotFoundError or
    ValueError naming ``path`` when it is none of these."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"VQ-VAE not found: {path} (give a run folder, a diffusers "
                                "VQModel folder or a VQVAEModule .ckpt)")
    if path.is_file():
        if path.suffix != ".ckpt":
            raise ValueError(f"{path}: a VQ-VAE file must be a Lightning checkpoint (.ckpt) of "
                             "mdvq.models.VQVAEModule")
        return _from_checkpoint(path)
    if (path / "summary.json").is_file():
        return _from_run(path)
    if (path / "config.json").is_file():
        return _from_diffusers(path)
    if (path / "pretrained" / "config.json").is_file():
        return _from_diffusers(path / "pretrained")
    raise FileNotFoundError(f"{path} is neither a run folder (summary.json), a diffusers VQModel "
                            "folder (config.json) nor a folder with pretrained/config.json")


def _from_diffusers(folder: Path, image_size=None) -> FrozenVQVAE:
    try:
        cls = json.loads((folder / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder / 'config.json'}: unreadable diffusers config ({err})") from err
    if cls != "VQModel":
        raise ValueError(f"{folder}: holds a diffusers {cls}, not a VQModel (the prior needs the "
                         "VQ-VAE; a KL-VAE has no codebook)")
    model = VQModel.from_pretrained(folder)
    return FrozenVQVAE(model, source=str(folder), image_size=image_size)


def _from_checkpoint(path: Path) -> FrozenVQVAE:
    from mdvq.models.vqvae import VQVAEModule

    try:
        module = VQVAEModule.load_from_checkpoint(path, map_location="cpu")
    except Exception as err:  # any failure means: not a VQVAEModule checkpoint we can read
        raise ValueError(f"{path}: not a readable checkpoint of mdvq.models.VQVAEModule "
                         f"({type(err).__name__}: {err})") from err
    image_size = module.hparams.get("image_size")
    return FrozenVQVAE(module.to_diffusers(), source=str(path), image_size=image_size)


def _from_run(run: Path) -> FrozenVQVAE:
    summary = RunSummary.read(run, model="vqvae", key="model.vqvae")
    image_size = (summary.config.get("data") or {}).get("image_size")
    if summary.pretrained_dir is not None:
        return _from_diffusers(summary.pretrained_dir, image_size)
    ckpt = summary.checkpoint("best")
    if ckpt is not None:
        log.info("VQ-VAE run %s has no exported model; using checkpoint %s", run, ckpt)
        return _from_checkpoint(ckpt)
    raise FileNotFoundError(f"{run}: the run has no exported VQ-VAE (pretrained/) and no checkpoint")
