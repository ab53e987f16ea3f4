"""`TokenDataModule`: the spectrogram splits encoded once by a frozen VQ-VAE into code maps (cached).

The prior (phase 2) trains on code maps, not pixels. This datamodule wraps a
`SpectrogramDataModule`, keeps its split, encodes every split with the frozen VQ-VAE (batched,
no grad) and caches `codes_<split>` (N, h, w) int64 and `labels_<split>` (N,) int64 in
`<cache_dir>/tokens-<key>.npz`, written atomically; the key hashes the VQ-VAE fingerprint and
the spectrogram `data_key` (data, image size and split), so a new VQ-VAE or new data gives a
new file and an unchanged pair is never encoded twice.
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
from torch.utils.data import TensorDataset

from mdvq.data.datamodule import SPLITS, SplitLoaders
from mdvq.data.dataset import atomic_save_npz, cache_key
from mdvq.models.pretrained import FrozenVQVAE

log = logging.getLogger(__name__)

TOKEN_CACHE_VERSION = 1


class TokenDataModule(SplitLoaders, L.LightningDataModule):
    """Code maps of a spectrogram datamodule's splits, with the same labels, split and axes.

    Args:
        datamodule: a `SpectrogramDataModule` (or anything with `prepare_data`, `setup`,
            `datasets[split].tensors = (x in [-1,1] (N, C, F, T), y (N,))`, `class_names`,
            `freqs_hz`, `times_s`, `data_key`, `image_size`).
        vqvae: the frozen VQ-VAE that encodes the spectrograms.
        cache_dir: folder of the token cache (None: encode in memory every time).
        batch_size, eval_batch_size: None takes the wrapped datamodule's.
        encode_batch_size: spectrograms per encoder call.
        device: where to encode ("auto": CUDA when available, else CPU).
        num_workers, shuffle_seed: as in `SpectrogramDataModule` (training order depends only
            on (seed, epoch), so resumed runs see the same batches).

    Batches are `(codes (B, h, w) int64 in [0, K), labels (B,) int64)`. After `setup()`:
    `class_names`, `freqs_hz` (Hz) and `times_s` (s) of the images, `data_key` (the spectrogram
    data's key: same data and split as phase 1), `token_key` (the cache key), `grid` (h, w),
    `num_codes`, `datasets` and `split_counts`.
    """

    def __init__(
        self,
        datamodule,
        vqvae: FrozenVQVAE,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        encode_batch_size: int = 256,
        device: str = "auto",
        num_workers: int = 0,
        shuffle_seed: int | None = None,
    ) -> None:
        super().__init__()
        self.spectrograms = datamodule
        self.vqvae = vqvae
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.batch_size = int(batch_size or datamodule.batch_size)
        self.eval_batch_size = int(eval_batch_size or getattr(datamodule, "eval_batch_size", None)
                                   or self.batch_size)
        if encode_batch_size < 1:
            raise ValueError(f"encode_batch_size must be positive, got {encode_batch_size}")
        self.encode_batch_size = int(encode_batch_size)
        self.device = device
        self.num_workers = int(num_workers)
        self.shuffle_seed = shuffle_seed if shuffle_seed is not None else getattr(
            datamodule, "shuffle_seed", None)
        self.num_codes = vqvae.num_codes
        self.datasets: dict[str, TensorDataset] = {}
        self.split_counts: dict[str, int] = {}
        self.grid: tuple[int, int] | None = None
        self.token_key: str | None = None

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
        """Doppler axis (Hz) of the images the codes decode to, or None."""
        return self.spectrograms.freqs_hz

    @property
    def times_s(self):
        """Time axis (s) of the images the codes decode to, or None."""
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
        return cache_key({"vqvae": self.vqvae.fingerprint, "data": self.spectrograms.data_key,
                          "version": TOKEN_CACHE_VERSION})

    def cache_path(self) -> Path | None:
        """`<cache_dir>/tokens-<key>.npz` (after the wrapped datamodule's `setup`), or None."""
        return None if self.cache_dir is None else self.cache_dir / f"tokens-{self._key()}.npz"

    def prepare_data(self) -> None:
        """Build the spectrogram cache and the token cache once (rank zero only)."""
        self.spectrograms.prepare_data()
        if self.cache_dir is not None:
            self.spectrograms.setup("fit")
            path = self.cache_path()
            if _read_cache(path) is None:
                self._save(path, self._encode_all())

    def setup(self, stage: str | None = None) -> None:
        """Load (or encode and cache) the code maps of every split (idempotent)."""
        if self.datasets:
            return
        self.spectrograms.setup(stage)
        self.token_key = self._key()
        path = self.cache_path()
        arrays = _read_cache(path) if path is not None else None
        if arrays is None:
            arrays = self._encode_all()
            if path is not None:
                self._save(path, arrays)
        else:
            log.info("loaded cached code maps from %s", path)
        for split in SPLITS:
            codes = torch.from_numpy(arrays[f"codes_{split}"]).long()
            labels = torch.from_numpy(arrays[f"labels_{split}"]).long()
            self.datasets[split] = TensorDataset(codes, labels)
        self.split_counts = {k: len(v) for k, v in self.datasets.items()}
        self.grid = tuple(int(s) for s in arrays["codes_train"].shape[1:3])

    def _encode_all(self) -> dict[str, np.ndarray]:
        """Encode every split; returns the arrays of the cache file."""
        device = torch.device("cuda" if self.device == "auto" and torch.cuda.is_available()
                              else ("cpu" if self.device == "auto" else self.device))
        home = next(self.vqvae.parameters()).device
        vq = self.vqvae.to(device)
        out: dict[str, np.ndarray] = {}
        for split in SPLITS:
            x, y = self.spectrograms.datasets[split].tensors
            codes = [vq.encode_indices(x[i:i + self.encode_batch_size].to(device)).cpu()
                     for i in range(0, len(x), self.encode_batch_size)]
            h, w = self.vqvae.latent_grid(x.shape[-2:])
            out[f"codes_{split}"] = (torch.cat(codes).numpy() if codes
                                     else np.zeros((0, h, w), dtype=np.int64))
            out[f"labels_{split}"] = y.numpy().astype(np.int64)
        self.vqvae.to(home)
        n = sum(len(out[f"labels_{s}"]) for s in SPLITS)
        used = len(np.unique(np.concatenate([out[f"codes_{s}"].ravel() for s in SPLITS])))
        log.info("encoded %d spectrograms to code maps %s; %d of %d codes used", n,
                 out["codes_train"].shape[1:], used, self.num_codes)
        return out

    def _save(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        meta = {"vqvae": self.vqvae.fingerprint, "vqvae_source": self.vqvae.source,
                "data_key": self.spectrograms.data_key, "num_codes": self.num_codes,
                "class_names": self.class_names}
        atomic_save_npz(path, {**arrays, "meta": np.asarray(json.dumps(meta)),
                               "version": np.asarray(TOKEN_CACHE_VERSION)})
        log.info("cached code maps at %s", path)

    # ----------------------------------------------------------------------------- loaders
    def describe(self) -> dict:
        """Plain-dict description for run summaries: the spectrogram data's plus the code maps'."""
        out = dict(self.spectrograms.describe())
        out.update({"token_key": self.token_key, "code_grid": list(self.grid or ()),
                    "num_codes": self.num_codes, "vqvae": self.vqvae.fingerprint,
                    "vqvae_source": self.vqvae.source})
        return out


def _read_cache(path: Path | None) -> dict[str, np.ndarray] | None:
    """The arrays of a token cache file, or None when missing or unreadable (then rebuilt)."""
    if path is None or not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != TOKEN_CACHE_VERSION:
                raise ValueError(f"format {int(z['version'])}, expected {TOKEN_CACHE_VERSION}")
            missing = [f"{kind}_{s}" for s in SPLITS for kind in ("codes", "labels")
                       if f"{kind}_{s}" not in z.files]
            if missing:
                raise ValueError(f"missing arrays {missing}")
            return {k: z[k] for k in z.files if k.startswith(("codes_", "labels_"))}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as err:
        log.warning("rebuilding token cache %s: unreadable (%s)", path, err)
        return None
