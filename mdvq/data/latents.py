"""`LatentDataModule`: the spectrogram splits encoded once by a frozen KL-VAE or VQ-VAE
(cached), scaled.

The latent-diffusion prior trains on autoencoder latents, not pixels. This datamodule wraps a
`SpectrogramDataModule`, keeps its split, encodes every split with the frozen autoencoder
(batched, no grad) and caches, in `<cache_dir>/latents-<key>.npz` (written atomically):

- KL-VAE: the posterior `mean_<split>` and `std_<split>` (N, c, h, w) float32;
- VQ-VAE (the hybrid route): the pre-quantisation latents `latents_<split>` (N, D, h, w)
  float32 (`VQModel.encode(x).latents`: after `quant_conv`, before the quantiser);

and `labels_<split>` (N,) int64. The key hashes the autoencoder's weights fingerprint (under
its kind, "klvae" or "vqvae") and the spectrogram `data_key` (data, image size and split), so
a new autoencoder or new data gives a new file and an unchanged pair is never encoded twice.

Latent scale: the prior sees `(z - shift_factor) * scaling_factor` (diffusers convention).
`scaling_factor = 1 / std` and (optionally) `shift_factor = mean` are measured on the training
split's latents as the prior sees them: with a KL-VAE and `sample_posterior` the variance of
`z ~ q(z|x)` is `Var(mean) + E[std^2]` (exact, no sampling noise), else `Var(mean)` (a VQ-VAE's
latents are deterministic). Stable Diffusion's 0.18215 belongs to its own autoencoder, and the
Latent Diffusion paper's "VQ-regularised latents are close to unit variance" to its own VQ-VAE:
both are measured here, never assumed. The measured global std and mean and the per-channel
std are kept (`latent_stats`) and written to the run summary.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from mdvq.data.datamodule import SPLITS
from mdvq.data.encoded import EncodedDataModule

log = logging.getLogger(__name__)

LATENT_CACHE_VERSION = 1


class PosteriorLatents(Dataset):
    """Scaled latents of one split: item `i` is `(z (c, h, w) float32, label int64)`.

    `z = (mean + std * eps - shift_factor) * scaling_factor` with `eps ~ N(0, I)` when `sample`
    (fresh noise on every access, or noise fixed per item when `fixed_noise`, for comparable
    validation losses), else `(mean - shift_factor) * scaling_factor`. `std` None (a VQ-VAE's
    deterministic latents) allows no sampling.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor | None, labels: torch.Tensor,
                 scaling_factor: float, shift_factor: float, sample: bool,
                 fixed_noise: bool = False) -> None:
        if sample and std is None:
            raise ValueError("sampling latents needs their posterior std")
        self.mean, self.std, self.labels = mean, std, labels
        self.scaling_factor, self.shift_factor = float(scaling_factor), float(shift_factor)
        self.sample, self.fixed_noise = bool(sample), bool(fixed_noise)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.mean[i]
        if self.sample:
            g = torch.Generator().manual_seed(7919 + int(i)) if self.fixed_noise else None
            z = z + self.std[i] * torch.randn(z.shape, generator=g)
        # prior space, diffusers convention (as mdvq.models.frozen_klvae.FrozenKLVAE.scale)
        return (z - self.shift_factor) * self.scaling_factor, self.labels[i]


class LatentDataModule(EncodedDataModule):
    """Scaled KL-VAE or VQ-VAE latents of a spectrogram datamodule's splits, same labels, split
    and axes.

    Args:
        datamodule: a `SpectrogramDataModule` (or anything with `prepare_data`, `setup`,
            `datasets[split].tensors = (x in [-1,1] (N, C, F, T), y (N,))`, `class_names`,
            `freqs_hz`, `times_s`, `data_key`, `image_size`, `batch_size`).
        autoencoder: the frozen autoencoder that encodes the spectrograms: a
            `mdvq.models.frozen_klvae.FrozenKLVAE` (`kind = "klvae"`: `encode_posterior`,
            `latent_shape`) or a `mdvq.models.frozen_vqvae.FrozenVQVAE` (`kind = "vqvae"`:
            `encode_latents`, `latent_shape`).
        cache_dir: folder of the latent cache (None: encode in memory every time).
        sample_posterior: train on `z ~ q(z|x)` (True) or on the posterior mean (False);
            KL-VAE only (a VQ-VAE's latents are deterministic: ignored).
        scaling_factor: fixed scale (None: `1 / std` of the training latents).
        shift_factor: fixed shift (None: the mean of the training latents when `use_shift`,
            else 0).
        use_shift: measure a shift when `shift_factor` is None.
        batch_size, eval_batch_size: None takes the wrapped datamodule's.
        encode_batch_size: spectrograms per encoder call.
        device: where to encode ("auto": CUDA when available, else CPU).
        num_workers, shuffle_seed: as in `SpectrogramDataModule`.

    Batches are `(z (B, c, h, w) float32 scaled, labels (B,) int64)`; training batches sample
    fresh posterior noise, validation and test batches fixed noise per example. After
    `setup()`: `class_names`, `freqs_hz` (Hz), `times_s` (s), `data_key`, `latent_key` (the
    cache key), `latent_shape` (c, h, w), `scaling_factor`, `shift_factor`, `latent_stats`
    (the training latents' measured `std`, `mean` and `channel_std`, before scaling),
    `datasets` and `split_counts`. `autoencoder_kind`: "klvae" or "vqvae".
    """

    cache_prefix = "latents"
    cache_version = LATENT_CACHE_VERSION
    array_kinds = ("mean", "std", "labels")
    encoder_name = "klvae"

    def __init__(
        self,
        datamodule,
        autoencoder,
        cache_dir: str | os.PathLike | None = None,
        sample_posterior: bool = True,
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        use_shift: bool = False,
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        encode_batch_size: int = 256,
        device: str = "auto",
        num_workers: int = 0,
        shuffle_seed: int | None = None,
    ) -> None:
        super().__init__(datamodule, autoencoder, cache_dir, batch_size, eval_batch_size,
                         encode_batch_size, device, num_workers, shuffle_seed)
        self.autoencoder = autoencoder
        self.autoencoder_kind = getattr(autoencoder, "kind", "klvae")
        if self.autoencoder_kind == "vqvae":  # deterministic pre-quantisation latents
            self.array_kinds = ("latents", "labels")
            self.encoder_name = "vqvae"
            sample_posterior = False
        self.sample_posterior = bool(sample_posterior)
        if scaling_factor is not None and not float(scaling_factor) > 0:
            raise ValueError(f"model.scaling_factor must be positive or null, got {scaling_factor}")
        self.fixed_scaling = None if scaling_factor is None else float(scaling_factor)
        self.fixed_shift = None if shift_factor is None else float(shift_factor)
        self.use_shift = bool(use_shift)
        self.latent_shape: tuple[int, int, int] | None = None
        self.scaling_factor: float | None = None
        self.shift_factor: float | None = None
        self.latent_stats: dict = {}

    @property
    def latent_key(self) -> str | None:
        """The latent cache's key (autoencoder fingerprint, data key, format version)."""
        return self.cache_key

    def _encode_split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.autoencoder_kind == "vqvae":
            return {"latents": self.autoencoder.encode_latents(x)}
        mean, std = self.autoencoder.encode_posterior(x)
        return {"mean": mean, "std": std}

    def _empty(self, kind: str, image_size) -> np.ndarray:
        return np.zeros((0, *self.autoencoder.latent_shape(image_size)), dtype=np.float32)

    def _build(self, arrays: dict[str, np.ndarray]) -> None:
        """Measure the scale on the training posteriors, then the per-split datasets."""
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        means = "latents" if self.autoencoder_kind == "vqvae" else "mean"
        std_train = tensors.get("std_train")
        self.scaling_factor, self.shift_factor = self._measure_scale(
            tensors[f"{means}_train"].double(),
            None if std_train is None else std_train.double())
        for split in SPLITS:
            std = tensors.get(f"std_{split}")
            self.datasets[split] = PosteriorLatents(
                tensors[f"{means}_{split}"].float(), None if std is None else std.float(),
                tensors[f"labels_{split}"].long(), self.scaling_factor, self.shift_factor,
                self.sample_posterior, fixed_noise=split != "train")
        self.latent_shape = tuple(int(s) for s in arrays[f"{means}_train"].shape[1:4])

    def _measure_scale(self, mean: torch.Tensor,
                       std: torch.Tensor | None) -> tuple[float, float]:
        """`(scaling_factor, shift_factor)` from the training posteriors (module docstring);
        `std` None: deterministic latents (a VQ-VAE's). Sets `latent_stats`."""
        if mean.numel() < 2:
            raise ValueError("the training split has no latents to measure model.scaling_factor "
                             "on (set it explicitly)")
        if not (torch.isfinite(mean).all() and (std is None or torch.isfinite(std).all())):
            raise ValueError(f"the {self.autoencoder_kind} ({self.autoencoder.source}) gives "
                             "non-finite latents")
        mu = float(mean.mean())
        var = float(mean.var())
        channel_var = mean.transpose(0, 1).flatten(1).var(dim=1)
        if self.sample_posterior and std is not None:
            var += float(std.square().mean())
            channel_var = channel_var + std.square().transpose(0, 1).flatten(1).mean(dim=1)
        self.latent_stats = {"std": var ** 0.5, "mean": mu,
                             "channel_std": [round(float(v) ** 0.5, 6) for v in channel_var]}
        shift = self.fixed_shift if self.fixed_shift is not None else (mu if self.use_shift else 0.0)
        if self.fixed_scaling is not None:
            return self.fixed_scaling, shift
        if not var > 0:
            raise ValueError(f"the training latents have variance {var:g}: cannot measure "
                             "model.scaling_factor (set it explicitly)")
        scale = var ** -0.5
        log.info("latent scale measured on %d training latents: scaling_factor %.5g, "
                 "shift_factor %.5g (std %.4g, mean %.4g)", len(mean), scale, shift, var**0.5, mu)
        return scale, shift

    def describe(self) -> dict:
        """Plain-dict description for run summaries: the spectrogram data's plus the latents'."""
        return {**super().describe(), "autoencoder_kind": self.autoencoder_kind,
                "latent_shape": list(self.latent_shape or ()),
                "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor,
                "latent_std": self.latent_stats.get("std"),
                "latent_mean": self.latent_stats.get("mean"),
                "latent_channel_std": self.latent_stats.get("channel_std"),
                "sample_posterior": self.sample_posterior}
