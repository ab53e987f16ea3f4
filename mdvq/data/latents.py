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

import json
import logging
import os
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset

from mdvq.data.datamodule import SPLITS, SplitLoaders
from mdvq.data.dataset import atomic_save_npz, cache_key
from mdvq.models.frozen_klvae import FrozenKLVAE

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
        return FrozenKLVAE.scale(z, self.scaling_factor, self.shift_factor), self.labels[i]


class LatentDataModule(SplitLoaders, L.LightningDataModule):
    """Scaled KL-VAE latents of a spectrogram datamodule's splits, same labels, split and axes.

    Args:
        datamodule: a `SpectrogramDataModule` (or anything with `prepare_data`, `setup`,
            `datasets[split].tensors = (x in [-1,1] (N, C, F, T), y (N,))`, `class_names`,
            `freqs_hz`, `times_s`, `data_key`, `image_size`, `batch_size`).
        autoencoder: the frozen KL-VAE that encodes the spectrograms.
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

    def __init__(
        self,
        datamodule,
        autoencoder: FrozenKLVAE,
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
        super().__init__()
        self.spectrograms = datamodule
        self.autoencoder = autoencoder
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.sample_posterior = bool(sample_posterior)
        if scaling_factor is not None and not float(scaling_factor) > 0:
            raise ValueError(f"model.scaling_factor must be positive or null, got {scaling_factor}")
        self.fixed_scaling = None if scaling_factor is None else float(scaling_factor)
        self.fixed_shift = None if shift_factor is None else float(shift_factor)
        self.use_shift = bool(use_shift)
        self.batch_size = int(batch_size or datamodule.batch_size)
        self.eval_batch_size = int(eval_batch_size or getattr(datamodule, "eval_batch_size", None)
                                   or self.batch_size)
        if encode_batch_size < 1:
            raise ValueError(f"model.encode_batch_size must be positive, got {encode_batch_size}")
        self.encode_batch_size = int(encode_batch_size)
        self.device = device
        self.num_workers = int(num_workers)
        self.shuffle_seed = shuffle_seed if shuffle_seed is not None else getattr(
            datamodule, "shuffle_seed", None)
        self.datasets: dict[str, PosteriorLatents] = {}
        self.split_counts: dict[str, int] = {}
        self.latent_shape: tuple[int, int, int] | None = None
        self.latent_key: str | None = None
        self.scaling_factor: float | None = None
        self.shift_factor: float | None = None

    # ----------------------------------------------------------------------------- attributes
    @property
    def class_names(self) -> list[str]:
        """Class names of the wrapped data."""
        return list(self.spectrograms.class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def freqs_hz(self):
        """Doppler axis (Hz) of the images the latents decode to, or None."""
        return self.spectrograms.freqs_hz

    @property
    def times_s(self):
        """Time axis (s) of the images the latents decode to, or None."""
        return self.spectrograms.times_s

    @property
    def data_key(self) -> str | None:
        """The spectrogram data's key (data, image size, split)."""
        return self.spectrograms.data_key

    @property
    def image_size(self) -> tuple[int, int]:
        """`(F, T)` of the spectrograms."""
        return tuple(self.spectrograms.image_size)

    # ----------------------------------------------------------------------------- building
    def _key(self) -> str:
        return cache_key({"klvae": self.autoencoder.fingerprint,
                          "data": self.spectrograms.data_key, "version": LATENT_CACHE_VERSION})

    def cache_path(self) -> Path | None:
        """`<cache_dir>/latents-<key>.npz` (after the wrapped datamodule's `setup`), or None."""
        return None if self.cache_dir is None else self.cache_dir / f"latents-{self._key()}.npz"

    def prepare_data(self) -> None:
        """Build the spectrogram cache and the latent cache once (rank zero only)."""
        self.spectrograms.prepare_data()
        if self.cache_dir is not None:
            self.spectrograms.setup("fit")
            path = self.cache_path()
            if _read_cache(path) is None:
                self._save(path, self._encode_all())

    def setup(self, stage: str | None = None) -> None:
        """Load (or encode and cache) the posteriors of every split and measure the scale
        (idempotent)."""
        if self.datasets:
            return
        self.spectrograms.setup(stage)
        self.latent_key = self._key()
        path = self.cache_path()
        arrays = _read_cache(path) if path is not None else None
        if arrays is None:
            arrays = self._encode_all()
            if path is not None:
                self._save(path, arrays)
        else:
            log.info("loaded cached latents from %s", path)
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        self.scaling_factor, self.shift_factor = self._measure_scale(
            tensors["mean_train"].double(), tensors["std_train"].double())
        for split in SPLITS:
            self.datasets[split] = PosteriorLatents(
                tensors[f"mean_{split}"].float(), tensors[f"std_{split}"].float(),
                tensors[f"labels_{split}"].long(), self.scaling_factor, self.shift_factor,
                self.sample_posterior, fixed_noise=split != "train")
        self.split_counts = {k: len(v) for k, v in self.datasets.items()}
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

    def _encode_all(self) -> dict[str, np.ndarray]:
        """Encode every split; returns the arrays of the cache file."""
        device = torch.device("cuda" if self.device == "auto" and torch.cuda.is_available()
                              else ("cpu" if self.device == "auto" else self.device))
        home = next(self.autoencoder.parameters()).device
        ae = self.autoencoder.to(device)
        out: dict[str, np.ndarray] = {}
        for split in SPLITS:
            x, y = self.spectrograms.datasets[split].tensors
            means, stds = [], []
            for i in range(0, len(x), self.encode_batch_size):
                m, s = ae.encode_posterior(x[i:i + self.encode_batch_size].to(device))
                means.append(m.cpu())
                stds.append(s.cpu())
            shape = (0, *self.autoencoder.latent_shape(x.shape[-2:]))
            out[f"mean_{split}"] = (torch.cat(means).numpy() if means
                                    else np.zeros(shape, dtype=np.float32))
            out[f"std_{split}"] = (torch.cat(stds).numpy() if stds
                                   else np.zeros(shape, dtype=np.float32))
            out[f"labels_{split}"] = y.numpy().astype(np.int64)
        self.autoencoder.to(home)
        n = sum(len(out[f"labels_{s}"]) for s in SPLITS)
        log.info("encoded %d spectrograms to latents %s", n, out["mean_train"].shape[1:])
        return out

    def _save(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        meta = {"klvae": self.autoencoder.fingerprint, "klvae_source": self.autoencoder.source,
                "data_key": self.spectrograms.data_key, "class_names": self.class_names}
        atomic_save_npz(path, {**arrays, "meta": np.asarray(json.dumps(meta)),
                               "version": np.asarray(LATENT_CACHE_VERSION)})
        log.info("cached latents at %s", path)

    # ----------------------------------------------------------------------------- loaders
    def describe(self) -> dict:
        """Plain-dict description for run summaries: the spectrogram data's plus the latents'."""
        out = dict(self.spectrograms.describe())
        out.update({"latent_key": self.latent_key, "latent_shape": list(self.latent_shape or ()),
                    "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor,
                    "sample_posterior": self.sample_posterior,
                    "klvae": self.autoencoder.fingerprint, "klvae_source": self.autoencoder.source})
        return out


def _read_cache(path: Path | None) -> dict[str, np.ndarray] | None:
    """The arrays of a latent cache file, or None when missing or unreadable (then rebuilt)."""
    if path is None or not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != LATENT_CACHE_VERSION:
                raise ValueError(f"format {int(z['version'])}, expected {LATENT_CACHE_VERSION}")
            missing = [f"{kind}_{s}" for s in SPLITS for kind in ("mean", "std", "labels")
                       if f"{kind}_{s}" not in z.files]
            if missing:
                raise ValueError(f"missing arrays {missing}")
            return {k: z[k] for k in z.files if k.startswith(("mean_", "std_", "labels_"))}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as err:
        log.warning("rebuilding latent cache %s: unreadable (%s)", path, err)
        return None
