"""Train on synthetic, test on real (TSTR) beside train on real, test on real (TRTR).

A fresh classifier of the same configuration (architecture, optimiser, trainer settings) as
the in-domain classifier is trained on the generated samples with their requested labels.
Like the train-on-real classifier, it keeps the checkpoint with the best accuracy on the
real validation split; both are then tested on the same real test split. A TSTR/TRTR ratio
near 1 means the samples carry as much class information as the real training data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, TensorDataset

from mdvq.core.artifacts import load_checkpoint
from mdvq.core.compose import build
from mdvq.core.precision import trainer_precision
from mdvq.data.datamodule import EpochShuffleSampler
from mdvq.evaluation.accuracy import loader_accuracy
from mdvq.utils.metric_keys import VAL_ACC
from mdvq.utils.pixels import to_model

log = logging.getLogger(__name__)


class _Transformed(Dataset):
    """`(transform(x), y)` of a dataset of `(x, y)` pairs, a fresh draw per access."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return self.transform(x), y


class SyntheticTrainData(L.LightningDataModule):
    """Training batches from generated samples, validation and test batches from real data.

    ``images01`` ``(N, 1, F, T)`` in [0, 1] and ``labels`` ``(N,)`` int64 are served as
    ``(x in [-1, 1], y)`` in a per-epoch order fixed by ``seed``; ``real`` is a set-up
    ``SpectrogramDataModule`` whose ``val``/``test`` loaders are used unchanged.
    ``class_names`` is the real data's (the classifier checks its class count against it).
    ``transform`` (optional) maps one training example ``(1, F, T)`` in [-1, 1] to an augmented
    one (e.g. ``mdvq.data.augmentation.ClassicalAugment(fill=-1)``), drawn afresh per access.
    """

    def __init__(self, images01: np.ndarray, labels: np.ndarray, real, batch_size: int, seed: int,
                 transform=None):
        super().__init__()
        x = to_model(torch.from_numpy(np.asarray(images01, dtype=np.float32)))
        self.train_set = TensorDataset(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))
        self.transform = transform
        self.real = real
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.class_names = list(real.class_names)

    def train_dataloader(self) -> DataLoader:
        """Generated samples, reshuffled every epoch."""
        sampler = EpochShuffleSampler(len(self.train_set), self.seed)
        data = self.train_set if self.transform is None else _Transformed(self.train_set,
                                                                          self.transform)
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        """The real validation split."""
        return self.real.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        """The real test split."""
        return self.real.test_dataloader()


def train_on_synthetic(
    model_cfg: DictConfig,
    trainer_cfg: DictConfig,
    images01: np.ndarray,
    labels: np.ndarray,
    real,
    out_dir: str | Path,
    seed: int = 1234,
    trainer_overrides: dict | None = None,
    device: str = "cpu",
    callbacks: list | tuple = (),
    train_transform=None,
) -> dict:
    """Train a fresh classifier from ``model_cfg`` on generated samples; test it on real data.

    ``trainer_cfg`` is the Lightning ``Trainer`` config of the train-on-real run (its
    callbacks and loggers are replaced: a checkpoint on ``val/acc`` under
    ``out_dir/checkpoints``, CSV metrics under ``out_dir/csv``); ``trainer_overrides`` (e.g.
    ``{"max_epochs": 2}``) change it. ``real`` is the set-up real datamodule. ``callbacks``
    join the checkpoint, e.g. the judge's ``TrainingBudget`` (``mdvq.callbacks.budget.
    budget_like``) so a small sample set trains as many optimiser steps as the judge did.
    ``train_transform`` (optional) augments every training example (see `SyntheticTrainData`);
    ``images01`` may hold real examples too (a mixed real + synthetic training set).
    Returns ``{"acc": real test accuracy of the best checkpoint, "val_acc", "test_count",
    "train_count", "epochs", "steps" (optimiser steps trained), "checkpoint"}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, workers=True)
    model = build(model_cfg)
    data = SyntheticTrainData(images01, labels, real, real.batch_size, seed, train_transform)
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="epoch_{epoch:03d}",
                                 monitor=VAL_ACC, mode="max", save_top_k=1,
                                 auto_insert_metric_name=False)
    tcfg = OmegaConf.merge(trainer_cfg, trainer_overrides or {})
    tcfg.default_root_dir = str(out_dir)
    trainer: L.Trainer = instantiate(tcfg, callbacks=[checkpoint, *callbacks], precision=trainer_precision(tcfg),
                                     logger=CSVLogger(out_dir, name="csv"))
    trainer.fit(model, datamodule=data)
    best = checkpoint.best_model_path
    if best:
        # its own fresh checkpoint, but opened weights-only like any other (nothing to unpickle)
        model.load_state_dict(load_checkpoint(best, key="TSTR classifier")["state_dict"])
    acc, count = loader_accuracy(model.cpu(), real.test_dataloader(), device=device)
    val = checkpoint.best_model_score
    return {
        "acc": acc,
        "val_acc": float(val) if val is not None else None,
        "test_count": count,
        "train_count": len(data.train_set),
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "checkpoint": best or None,
    }
