"""`EncodedDataModule`: what a frozen autoencoder makes of every split of a spectrogram
datamodule, encoded once and cached; the shared base of the token cache (VQ route) and the
latent cache (KL route).

The wrapped `SpectrogramDataModule` keeps its split, labels and axes; every split is encoded
with the frozen autoencoder (batched, no grad) and cached in `<cache_dir>/<prefix>-<key>.npz`,
written atomically. The key hashes the autoencoder's weights fingerprint and the spectrogram
`data_key` (data, image size and split), so a new autoencoder or new data gives a new file and
an unchanged pair is never encoded twice; an unreadable or outdated file is rebuilt.

In a multi-process (DDP) run the file is encoded once: Lightning calls `prepare_data` on
global rank 0 only while the others wait, and `setup` reads the file rank by rank
(`mdvq.data.datamodule.build_once`), so a process that still finds no file (another node's
disk) encodes it before the others of its node read it. `prepare_data` runs inside the
training processes (also the workers of `ddp_spawn`), where the frozen autoencoder travels
with the datamodule.
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

from mdvq.core.errors import DataError
from mdvq.data.cache_lock import exclusive_build
from mdvq.data.datamodule import SPLITS, SplitLoaders, build_once
from mdvq.data.dataset import atomic_save_npz, cache_key, verified_arrays

log = logging.getLogger(__name__)


class EncodedDataModule(SplitLoaders, L.LightningDataModule):
    """Base of the cached encodings of a spectrogram datamodule's splits.

    Subclasses set `cache_prefix` ("tokens", "latents"), `cache_version`, `array_kinds` (the
    per-split arrays of the cache file, e.g. ("codes", "labels")) and `encoder_name` (the key
    naming the autoencoder in the cache key and meta), and implement `_encode_split(x)` and
    `_build(arrays)` (the datasets from the cached arrays).

    Args:
        datamodule: a `SpectrogramDataModule` (or anything with `prepare_data`, `setup`,
            `datasets[split].tensors = (x in [-1,1] (N, C, F, T), y (N,))`, `class_names`,
            `freqs_hz`, `times_s`, `data_key`, `image_size`, `batch_size`).
        encoder: the frozen autoencoder (with `fingerprint`, `source`, `parameters()`).
        cache_dir: folder of the cache (None: encode in memory every time).
        batch_size, eval_batch_size: None takes the wrapped datamodule's.
        encode_batch_size: spectrograms per encoder call.
        device: where to encode ("auto": CUDA when available, else CPU).
        num_workers, shuffle_seed: as in `SpectrogramDataModule` (training order depends only
            on (seed, epoch), so resumed runs see the same batches).
    """

    cache_prefix = "encoded"
    cache_version = 1
    array_kinds: tuple[str, ...] = ("labels",)
    encoder_name = "encoder"

    def __init__(self, datamodule, encoder, cache_dir: str | os.PathLike | None = None,
                 batch_size: int | None = None, eval_batch_size: int | None = None,
                 encode_batch_size: int = 256, device: str = "auto", num_workers: int = 0,
                 shuffle_seed: int | None = None) -> None:
        super().__init__()
        self.spectrograms = datamodule
        self.encoder = encoder
        self.cache_dir = Path(cache_dir) if cache_dir else None
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
        self.datasets: dict = {}
        self.split_counts: dict[str, int] = {}
        self.cache_key: str | None = None
        self.prepare_data_per_node = False  # global rank 0 only; setup covers other nodes

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
        """Doppler axis (Hz) of the images the encodings decode to, or None."""
        return self.spectrograms.freqs_hz

    @property
    def times_s(self):
        """Time axis (s) of the images the encodings decode to, or None."""
        return self.spectrograms.times_s

    @property
    def data_key(self) -> str | None:
        """The spectrogram data's key (data, image size, split)."""
        return self.spectrograms.data_key

    @property
    def image_size(self) -> tuple[int, int]:
        """`(F, T)` of the spectrograms."""
        return tuple(self.spectrograms.image_size)

    # ----------------------------------------------------------------------------- the cache
    def _key(self) -> str:
        return cache_key({self.encoder_name: self.encoder.fingerprint,
                          "data": self.spectrograms.data_key, "version": self.cache_version})

    def cache_path(self) -> Path | None:
        """`<cache_dir>/<prefix>-<key>.npz` (after the wrapped datamodule's `setup`), or None."""
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{self.cache_prefix}-{self._key()}.npz"

    def prepare_data(self) -> None:
        """Build the spectrogram cache and this cache once (Lightning calls this on global rank
        0 only; the other processes wait, then `setup` reads the files)."""
        self.spectrograms.prepare_data()
        if self.cache_dir is not None:
            self.spectrograms.setup("fit")
            self._load_or_encode(self.cache_path(), announce=False)

    def setup(self, stage: str | None = None) -> None:
        """Load (or encode and cache) every split, then build the datasets (idempotent). In a
        multi-process run the cache is read rank by rank (`build_once`): only a process that
        finds no file encodes it, the others read the finished file."""
        if self.datasets:
            return
        trainer = getattr(self, "trainer", None)
        if getattr(self.spectrograms, "trainer", None) is None:
            self.spectrograms.trainer = trainer  # its setup orders its own cache by rank too
        self.spectrograms.setup(stage)
        self.cache_key = self._key()
        path = self.cache_path()
        if path is None:
            arrays = self._encode_all()
        else:
            arrays = build_once(lambda: self._load_or_encode(path), trainer)
        self._build(arrays)
        self.split_counts = {k: len(v) for k, v in self.datasets.items()}

    def _load_or_encode(self, path: Path, announce: bool = True) -> dict[str, np.ndarray]:
        """The arrays of the cache file at `path`, encoded and written (atomically) first when
        it is missing or unreadable. Processes wanting the same missing file at once take turns
        (`mdvq.data.cache_lock`): one encodes, the others read what it wrote."""
        with exclusive_build(path):
            arrays = self._read_cache(path)
            if arrays is None:
                arrays = self._encode_all()
                self._save(path, arrays)
            elif announce:
                log.info("loaded cached %s from %s", self.cache_prefix, path)
        return arrays

    def _encode_split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode one batch of spectrograms `(B, C, F, T)` in [-1, 1] on the encoding device;
        returns `{kind: tensor}` for every kind of `array_kinds` but labels."""
        raise NotImplementedError

    def _empty(self, kind: str, image_size) -> np.ndarray:
        """The array of `kind` for a split without examples."""
        raise NotImplementedError

    def _build(self, arrays: dict[str, np.ndarray]) -> None:
        """Fill `self.datasets[split]` from the cached arrays."""
        raise NotImplementedError

    def _encode_all(self) -> dict[str, np.ndarray]:
        """Encode every split; returns the arrays of the cache file."""
        device = torch.device("cuda" if self.device == "auto" and torch.cuda.is_available()
                              else ("cpu" if self.device == "auto" else self.device))
        home = next(self.encoder.parameters()).device
        self.encoder.to(device)
        kinds = [k for k in self.array_kinds if k != "labels"]
        out: dict[str, np.ndarray] = {}
        with torch.no_grad():
            for split in SPLITS:
                x, y = self.spectrograms.datasets[split].tensors
                parts: dict[str, list] = {k: [] for k in kinds}
                for i in range(0, len(x), self.encode_batch_size):
                    for k, v in self._encode_split(x[i:i + self.encode_batch_size].to(device)).items():
                        parts[k].append(v.cpu())
                for k in kinds:
                    out[f"{k}_{split}"] = (torch.cat(parts[k]).numpy() if parts[k]
                                           else self._empty(k, x.shape[-2:]))
                out[f"labels_{split}"] = y.numpy().astype(np.int64)
        self.encoder.to(home)
        n = sum(len(out[f"labels_{s}"]) for s in SPLITS)
        log.info("encoded %d spectrograms to %s %s", n, self.cache_prefix,
                 out[f"{kinds[0]}_train"].shape[1:])
        return out

    def cache_meta(self) -> dict:
        """What the cache file records about its inputs (besides the arrays)."""
        return {self.encoder_name: self.encoder.fingerprint,
                f"{self.encoder_name}_source": self.encoder.source,
                "data_key": self.spectrograms.data_key, "class_names": self.class_names}

    def _save(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        atomic_save_npz(path, {**arrays, "meta": np.asarray(json.dumps(self.cache_meta())),
                               "version": np.asarray(self.cache_version)})
        log.info("cached %s at %s", self.cache_prefix, path)

    def _read_cache(self, path: Path | None) -> dict[str, np.ndarray] | None:
        """The arrays of a cache file, or None when missing, unreadable or altered (its content
        checksum missing or different, `verified_arrays`): then rebuilt, with a warning naming
        the file."""
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                z = verified_arrays(npz, path)
                if int(z["version"]) != self.cache_version:
                    raise ValueError(f"format {int(z['version'])}, expected {self.cache_version}")
                missing = [f"{kind}_{s}" for s in SPLITS for kind in self.array_kinds
                           if f"{kind}_{s}" not in z]
                if missing:
                    raise ValueError(f"missing arrays {missing}")
                prefixes = tuple(f"{kind}_" for kind in self.array_kinds)
                return {k: v for k, v in z.items() if k.startswith(prefixes)}
        except DataError as err:  # checksum missing or different; names the file
            log.warning("rebuilding %s cache: %s", self.cache_prefix, err)
            return None
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as err:
            log.warning("rebuilding %s cache %s: unreadable (%s)", self.cache_prefix, path, err)
            return None

    def describe(self) -> dict:
        """Plain-dict description for run summaries: the spectrogram data's plus the cache's.
        The cache key is known once the spectrograms are set up, also in a process that never
        set this datamodule up (the main process of `ddp_spawn`, whose workers did)."""
        out = dict(self.spectrograms.describe())
        key = self.cache_key or (self._key() if self.spectrograms.data_key else None)
        out.update({f"{self.cache_prefix[:-1]}_key": key,
                    self.encoder_name: self.encoder.fingerprint,
                    f"{self.encoder_name}_source": self.encoder.source})
        return out
