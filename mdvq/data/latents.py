"""`LatentDataModule`: the spectrogram splits encoded once by a frozen KL-VAE (cached), scaled.

The latent-diffusion prior trains on KL-VAE latents, not pixels. This datamodule wraps a
`SpectrogramDataModule`, keeps its split, encodes every split with the frozen KL-VAE (batched,
no grad) and caches the posterior `mean_<split>` and `std_<split>` (N, c, h, w) float32 and
`labels_<split>` (N,) int64 in `<cache_dir>/latents-<key>.npz`, written atomically; the key
hashes the KL-VAE fingerprint and the spectrogram `data_key` (data, image size and split), so a
new KL-VAE or new data gives a new file and an unchanged pair is never encoded twice.

Latent scale: the prior sees `(z - shift_factor) * scaling_factor` (diffusers convention).
`scaling_factor = 1 / std` and (optionally) `shift_factor = mean` are measured on the training
split's latents as the prior sees them: with `sample_posterior` the variance of `z ~ q(z|x)`
is `Var(mean) + E[std^2]` (exact, no sampling noise), else `Var(mean)`. Stable Diffusion's
0.18215 belongs to its own autoencoder, not to these latents.
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
    validation losses), else `(mean - shift_factor) * scaling_factor`.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, labels: torch.Tensor,
                 scaling_factor: float, shift_factor: float, sample: bool,
                 fixed_noise: bool = False) -> None:
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
    """Scaled KL-VAE latents of a spectrogram datamodule's splits, same labels, split and axes.

    Args:
        datamodule: a `SpectrogramDataModule` (or anything with `prepare_data`, `setup`,
            `datasets[split].tensors = (x in [-1,1] (N, C, F, T), y (N,))`, `class_names`,
            `freqs_hz`, `times_s`, `data_key`, `image_size`, `batch_size`).
        autoencoder: the frozen KL-VAE that encodes the spectrograms
            (`mdvq.models.frozen_klvae.FrozenKLVAE`: `encode_posterior`, `latent_shape`).
        cache_dir: folder of the latent cache (None: encode in memory every time).
        sample_posterior: train on `z ~ q(z|x)` (True) or on the posterior mean (False).
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
    cache key), `latent_shape` (c, h, w), `scaling_factor`, `shift_factor`, `datasets` and
    `split_counts`.
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
        self.sample_posterior = bool(sample_posterior)
        if scaling_factor is not None and not float(scaling_factor) > 0:
            raise ValueError(f"model.scaling_factor must be positive or null, got {scaling_factor}")
        self.fixed_scaling = None if scaling_factor is None else float(scaling_factor)
        self.fixed_shift = None if shift_factor is None else float(shift_factor)
        self.use_shift = bool(use_shift)
        self.latent_shape: tuple[int, int, int] | None = None
        self.scaling_factor: float | None = None
        self.shift_factor: float | None = None

    @property
    def latent_key(self) -> str | None:
        """The latent cache's key (KL-VAE fingerprint, data key, format version)."""
        return self.cache_key

    def _encode_split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, std = self.autoencoder.encode_posterior(x)
        return {"mean": mean, "std": std}

    def _empty(self, kind: str, image_size) -> np.ndarray:
        return np.zeros((0, *self.autoencoder.latent_shape(image_size)), dtype=np.float32)

    def _build(self, arrays: dict[str, np.ndarray]) -> None:
        """Measure the scale on the training posteriors, then the per-split datasets."""
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        self.scaling_factor, self.shift_factor = self._measure_scale(
            tensors["mean_train"].double(), tensors["std_train"].double())
        for split in SPLITS:
            self.datasets[split] = PosteriorLatents(
                tensors[f"mean_{split}"].float(), tensors[f"std_{split}"].float(),
                tensors[f"labels_{split}"].long(), self.scaling_factor, self.shift_factor,
                self.sample_posterior, fixed_noise=split != "train")
        self.latent_shape = tuple(int(s) for s in arrays["mean_train"].shape[1:4])

    def _measure_scale(self, mean: torch.Tensor, std: torch.Tensor) -> tuple[float, float]:
        """`(scaling_factor, shift_factor)` from the training posteriors (module docstring)."""
        if mean.numel() < 2:
            raise ValueError("the training split has no latents to measure model.scaling_factor "
                             "on (set it explicitly)")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError(f"the KL-VAE ({self.autoencoder.source}) gives non-finite latents")
        mu = float(mean.mean())
        var = float(mean.var())
        if self.sample_posterior:
            var += float(std.square().mean())
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
        return {**super().describe(), "latent_shape": list(self.latent_shape or ()),
                "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor,
                "sample_posterior": self.sample_posterior}
