"""`TokenDataModule`: the spectrogram splits encoded once by a frozen VQ-VAE into code maps (cached).

The prior (phase 2) trains on code maps, not pixels. This datamodule wraps a
`SpectrogramDataModule`, keeps its split, encodes every split with the frozen VQ-VAE (batched,
no grad) and caches `codes_<split>` (N, h, w) int64 and `labels_<split>` (N,) int64 in
`<cache_dir>/tokens-<key>.npz`, written atomically; the key hashes the VQ-VAE fingerprint and
the spectrogram `data_key` (data, image size and split), so a new VQ-VAE or new data gives a
new file and an unchanged pair is never encoded twice.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch.utils.data import TensorDataset

from mdvq.data.datamodule import SPLITS
from mdvq.data.encoded import EncodedDataModule

log = logging.getLogger(__name__)

TOKEN_CACHE_VERSION = 1


class TokenDataModule(EncodedDataModule):
    """Code maps of a spectrogram datamodule's splits, with the same labels, split and axes.

    Args:
        datamodule: a `SpectrogramDataModule` (see `EncodedDataModule`).
        vqvae: the frozen VQ-VAE that encodes the spectrograms
            (`mdvq.models.frozen_vqvae.FrozenVQVAE`: `encode_indices`, `latent_grid`, `num_codes`).
        cache_dir, batch_size, eval_batch_size, encode_batch_size, device, num_workers,
            shuffle_seed: see `EncodedDataModule`.

    Batches are `(codes (B, h, w) int64 in [0, K), labels (B,) int64)`. After `setup()`:
    `class_names`, `freqs_hz` (Hz) and `times_s` (s) of the images, `data_key` (the spectrogram
    data's key: same data and split as phase 1), `token_key` (the cache key), `grid` (h, w),
    `num_codes`, `datasets` and `split_counts`.
    """

    cache_prefix = "tokens"
    cache_version = TOKEN_CACHE_VERSION
    array_kinds = ("codes", "labels")
    encoder_name = "vqvae"

    def __init__(
        self,
        datamodule,
        vqvae,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        encode_batch_size: int = 256,
        device: str = "auto",
        num_workers: int = 0,
        shuffle_seed: int | None = None,
    ) -> None:
        super().__init__(datamodule, vqvae, cache_dir, batch_size, eval_batch_size,
                         encode_batch_size, device, num_workers, shuffle_seed)
        self.vqvae = vqvae
        self.num_codes = vqvae.num_codes
        self.grid: tuple[int, int] | None = None

    @property
    def token_key(self) -> str | None:
        """The token cache's key (VQ-VAE fingerprint, data key, format version)."""
        return self.cache_key

    def _encode_split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"codes": self.vqvae.encode_indices(x)}

    def _empty(self, kind: str, image_size) -> np.ndarray:
        return np.zeros((0, *self.vqvae.latent_grid(image_size)), dtype=np.int64)

    def _build(self, arrays: dict[str, np.ndarray]) -> None:
        for split in SPLITS:
            codes = torch.from_numpy(arrays[f"codes_{split}"]).long()
            labels = torch.from_numpy(arrays[f"labels_{split}"]).long()
            self.datasets[split] = TensorDataset(codes, labels)
        self.grid = tuple(int(s) for s in arrays["codes_train"].shape[1:3])

    def cache_meta(self) -> dict:
        """The base meta plus the codebook size."""
        return {**super().cache_meta(), "num_codes": self.num_codes}

    def describe(self) -> dict:
        """Plain-dict description for run summaries: the spectrogram data's plus the code maps'."""
        return {**super().describe(), "code_grid": list(self.grid or ()),
                "num_codes": self.num_codes}
