"""`SpectrogramDataModule`: any spectrogram source -> resized, split, batched tensors in [-1,1]."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler, TensorDataset

from mdvq.data.arrays import resample_axis
from mdvq.data.dataset import SpectrogramSet, cache_key
from mdvq.data.spectrogram import resize_spectrogram
from mdvq.data.splits import SPLIT_VERSION, describe_split, split_indices, split_lines

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

T = TypeVar("T")


def build_once(load: Callable[[], T], trainer: Any = None) -> T:
    """Call `load` (which reads a cache file, building and writing it atomically when it is
    missing) so that a multi-process run builds the file once and never races on it.

    With an initialised process group of several processes, global rank 0 calls `load` first;
    after a barrier the first process of every other node does (a cache on a node-local disk
    is then built once per node, a cache on a shared disk is found finished); after a second
    barrier every other process calls it and reads the finished file. The barriers have no
    timeout (a gloo group, as Lightning's `prepare_data` barrier), since a first build can take
    long. Ranks come from `trainer` (`global_rank`, `local_rank`) when given, else from
    torch.distributed and `LOCAL_RANK`/`SLURM_LOCALID`. Without a process group (one process,
    or before DDP has started) `load` is just called. Returns what `load` returned.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return load()
    if trainer is not None:
        rank, local = int(trainer.global_rank), int(trainer.local_rank)
    else:
        rank = dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", rank)))
    turns = (rank == 0, rank != 0 and local == 0, rank != 0 and local != 0)
    group = dist.new_group(backend="gloo", timeout=timedelta(days=10000))
    try:
        out = None
        for i, mine in enumerate(turns):
            if i:
                dist.monitored_barrier(group, wait_all_ranks=True)
            if mine:
                out = load()
    finally:
        dist.destroy_process_group(group)
    return out


class EpochShuffleSampler(Sampler[int]):
    """Random order that depends only on (seed, epoch): a run resumed from a checkpoint sees the
    same batches as an uninterrupted one. Lightning calls `set_epoch` before every epoch."""

    def __init__(self, num_examples: int, seed: int):
        self.num_examples = int(num_examples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of `epoch`."""
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_examples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_examples


class SplitLoaders:
    """Lightning's three dataloader hooks for a datamodule holding ``datasets`` (split name ->
    dataset, filled by ``setup()``), ``batch_size``, ``eval_batch_size``, ``num_workers`` and
    ``shuffle_seed`` (and optionally ``pin_memory``, ``persistent_workers``): shuffled training
    batches in an epoch-seeded order (exact resume), validation and test batches in a fixed
    order."""

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        dataset = self.datasets[split]
        sampler = None
        if shuffle:
            seed = torch.initial_seed() if self.shuffle_seed is None else self.shuffle_seed
            sampler = EpochShuffleSampler(len(dataset), seed % (2**31))
        return DataLoader(
            dataset,
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=getattr(self, "pin_memory", False),
            persistent_workers=getattr(self, "persistent_workers", False),
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader("test", shuffle=False)


class SpectrogramDataModule(SplitLoaders, L.LightningDataModule):
    """Loads a spectrogram source once, resizes to `image_size`, splits and serves batches.

    source: any object with `load() -> SpectrogramSet` (simulator, Glasgow files, image
      folder, arrays); sources cache their own expensive processing.
    image_size: (F, T) the models see; examples are resized with area-weighted interpolation.
    val_fraction, test_fraction: split sizes; the rest trains. split_seed fixes the split.
    subject_disjoint: keep each subject (or recording: sources put recording ids in `subjects`
      when no subject is known) in one split when the source gives ids; a warning says when it
      gives none.
    shuffle_seed: seed of the per-epoch training order (None: torch's initial seed, i.e. the
      run's `seed`), so resumed runs see the same batches as uninterrupted ones.
    train_subset: path of a subset manifest (`mdvq.data.subsets`: recording/subject ids or
      positions in the training split): the training split keeps only those examples (the
      data key then names the subset); validation and test stay whole. None: all of it.
    Batches are `(x, label)`: x float32 `(B, C, F, T)` in [-1,1] (`2*x01 - 1`), label int64 `(B,)`.
    After `setup()`: `class_names`, `freqs_hz`/`times_s` (axes of the resized rows/columns, or
    None), `data_key` (identifies the data and the split) and `split_counts`.
    """

    def __init__(
        self,
        source: Any,
        image_size: Sequence[int] = (64, 64),
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        subject_disjoint: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        shuffle_seed: int | None = None,
        train_subset: str | None = None,
    ):
        super().__init__()
        if len(image_size) != 2 or any(int(s) <= 0 for s in image_size):
            raise ValueError(f"data.image_size must be two positive ints (F, T), got {list(image_size)}")
        if batch_size <= 0:
            raise ValueError(f"data.datamodule.batch_size must be positive, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.datamodule.num_workers must be >= 0, got {num_workers}")
        self.source = source
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.subject_disjoint = bool(subject_disjoint)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.shuffle_seed = shuffle_seed
        self.train_subset = None if train_subset in (None, "") else str(train_subset)
        self.train_groups: np.ndarray | None = None  # recording/subject id per training example
        self.class_names: list[str] = []
        self.freqs_hz: np.ndarray | None = None
        self.times_s: np.ndarray | None = None
        self.data_key: str | None = None
        self.split_counts: dict[str, int] = {}
        self.split_indices: dict[str, np.ndarray] = {}
        self.split: dict = {}
        self.meta: dict = {}  # the loaded set's meta (sample rates, recordings per class, ...)
        self.datasets: dict[str, TensorDataset] = {}
        # Lightning calls prepare_data on global rank 0 only, then a barrier; `setup` builds
        # what another node's disk still lacks (build_once), so a shared cache is built once.
        self.prepare_data_per_node = False

    def prepare_data(self) -> None:
        """Build the source's cache once (Lightning calls this on global rank 0 only, the other
        processes wait), so every process's `setup` just reads the finished file."""
        if getattr(self.source, "cache_dir", None):
            self.source.load()

    def setup(self, stage: str | None = None) -> None:
        """Load, resize and split the data (idempotent). A source with a cache is loaded rank
        by rank in a multi-process run (`build_once`): the first builds a missing cache, the
        others read it; a source without one is loaded by every process at once."""
        if self.datasets:
            return
        if getattr(self.source, "cache_dir", None):
            data: SpectrogramSet = build_once(self.source.load, getattr(self, "trainer", None))
        else:
            data = self.source.load()
        data.validate(getattr(self.source, "root", None))
        images = resize_spectrogram(data.images, self.image_size)
        subjects = data.subjects if self.subject_disjoint else None
        if data.subjects is None:
            # the key of this source that gives ids (conf/data/<source>.yaml)
            if hasattr(self.source, "id_pattern"):  # data=folder
                hint = "set data.id_pattern, e.g. data.id_pattern='^(?P<recording>[^_]+)_'"
            elif hasattr(self.source, "subjects_key"):  # data=arrays
                hint = (f"store the ids under the .npz key data.subjects_key="
                        f"{self.source.subjects_key!r}")
            elif hasattr(self.source, "name_pattern"):  # data=iq
                hint = "set data.name_pattern with a (?P<subject>...) group, or data.labels_csv"
            else:
                hint = "give the source per-example subject ids"
            log.warning(
                "%s: the data carry no recording or subject ids, so windows of one recording "
                "may fall into different splits (test accuracy then overstates generalisation); "
                "%s", getattr(self.source, "root", None) or getattr(self.source, "path", None)
                or type(self.source).__name__, hint,
            )
        self.split_indices = split_indices(
            data.labels, subjects, self.val_fraction, self.test_fraction, self.split_seed,
            class_names=data.class_names,
        )
        self.class_names = list(data.class_names)
        self.meta = dict(data.meta)
        self.skipped_files = int(data.meta.get("n_skipped", 0))  # data.on_error=skip
        self.freqs_hz = resample_axis(data.freqs_hz, self.image_size[0])
        self.times_s = resample_axis(data.times_s, self.image_size[1])
        content = data.meta.get("cache_key") or _content_hash(data)
        split = cache_key({"val": self.val_fraction, "test": self.test_fraction, "seed": self.split_seed,
                           "subject_disjoint": subjects is not None, "version": SPLIT_VERSION})
        self.data_key = f"{content}-{self.image_size[0]}x{self.image_size[1]}-split{split}"
        if subjects is not None:
            self.train_groups = np.asarray(subjects)[self.split_indices["train"]].astype(str)
        if self.train_subset is not None:  # keep the manifest's part of the training split only
            from mdvq.data.subsets import manifest_hash, read_manifest, select_train

            manifest = read_manifest(self.train_subset)
            keep = select_train(manifest, self.train_groups, len(self.split_indices["train"]),
                                self.train_subset)
            self.split_indices["train"] = self.split_indices["train"][keep]
            if self.train_groups is not None:
                self.train_groups = self.train_groups[keep]
            self.data_key += f"-sub{manifest_hash(manifest)}"
        x = torch.from_numpy(images).mul_(2.0).sub_(1.0)  # utils.pixels.to_model, in place
        y = torch.from_numpy(data.labels)
        for name in SPLITS:
            idx = torch.from_numpy(self.split_indices[name])
            self.datasets[name] = TensorDataset(x[idx], y[idx])
        self.split_counts = {k: len(v) for k, v in self.datasets.items()}
        if self.split_counts["train"] == 0:
            raise ValueError(f"the training split is empty ({len(data)} examples in all)")
        log.info("data %s: %s examples per split, classes %s", self.data_key, self.split_counts,
                 self.class_names)
        self.split = describe_split(data.labels, subjects, self.split_indices, self.class_names,
                                    by=_group_kind(data))
        self.log_split()

    def log_split(self) -> None:
        """Log how the split was made (by recording, subject or example), the recordings of
        every class in every split with their ids, and a warning for each split where a class
        has a single recording or subject (its accuracy there rests on that one)."""
        by = self.split["by"]
        log.info("split by %s%s:", by, "" if by == "example" else
                 f" ({by}-disjoint: all windows of one {by} in one split)")
        for line in split_lines(self.split):
            log.info("  %s", line)
        for split, classes in self.split["single"].items():
            if self.split_counts.get(split):
                log.warning("the %s split holds a single %s of class(es) %s: its accuracy on "
                            "them rests on that one %s; add recordings, or lower "
                            "data.datamodule.val_fraction/test_fraction", split, by,
                            ", ".join(classes), by)

    @property
    def num_classes(self) -> int:
        """Number of classes (after `setup`)."""
        return len(self.class_names)

    def describe(self) -> dict:
        """Plain-dict description for run summaries: key, classes, split sizes, image size and
        `split` (`mdvq.data.splits.describe_split`: by recording/subject, windows and
        recordings per class and split, the ids of each split, single-recording classes)."""
        return {"data_key": self.data_key, "class_names": self.class_names,
                "split_counts": self.split_counts, "image_size": list(self.image_size),
                "skipped_files": self.skipped_files, "split": self.split}


def _group_kind(data: SpectrogramSet) -> str:
    """What a split group of `data` is: "subject" when the source knows subjects, "recording"
    when its ids are recordings (`meta["has_subjects"]` false, e.g. data=iq without subject
    ids), else "recording or subject" (the source does not say which its ids are)."""
    known = data.meta.get("has_subjects")
    if known is None:
        return "recording or subject"
    return "subject" if known else "recording"


def _content_hash(data: SpectrogramSet) -> str:
    """Hash of the images and labels, for sources that have no cache key."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.images).tobytes())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    return h.hexdigest()[:16]
