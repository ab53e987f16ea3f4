"""Tests of the in-domain classifier (mdvq.models.classifier) and `mdvq.run model=classifier`."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from conftest import CONF, compose_cfg
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from mdvq.models.classifier import SpectrogramClassifier
from mdvq.runs.summary import RunSummary
from mdvq.runs.training import train


def classifier_overrides(tmp: Path, cache: Path, per_class: int = 8, size: int = 16) -> list[str]:
    """`mdvq.run experiment=classifier data=radar` on a small simulated set, quiet, outputs in tmp."""
    return [
        "experiment=classifier",
        "data=radar",
        f"data.image_size=[{size},{size}]",
        f"data.datamodule.source.num_per_class={per_class}",
        "data.datamodule.source.num_subjects=10",
        "data.datamodule.source.progress=false",
        "data.datamodule.batch_size=16",
        f"paths.output_root={tmp}",
        f"paths.output_dir={tmp / 'run'}",
        f"paths.cache_dir={cache}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger=csv",
    ]


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize("path", ["model/classifier.yaml", "callbacks/classifier.yaml"])
def test_every_yaml_key_has_a_comment(path):
    for line in (CONF / path).read_text().splitlines():
        if re.match(r"^\s*[A-Za-z_]+:", line):
            assert "#" in line, f"{path}: no comment on {line!r}"


def test_yaml_matches_constructor_defaults():
    cfg = OmegaConf.load(CONF / "model" / "classifier.yaml")
    model = instantiate(cfg)
    assert dict(model.hparams) == dict(SpectrogramClassifier().hparams)
    assert isinstance(model.optimizer_factory, functools.partial)
    assert model.optimizer_factory.keywords == {"lr": 0.002, "weight_decay": 0.0001}
    assert 0.05e6 < sum(p.numel() for p in model.parameters()) < 0.5e6  # CPU-sized


def test_experiment_selects_classifier_callbacks(tmp_path):
    cfg = compose_cfg(["experiment=classifier", f"paths.output_dir={tmp_path}"])
    assert set(cfg.callbacks) == {"model_checkpoint", "lr_monitor", "epoch_lines", "wandb_review"}
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc"
    assert cfg.callbacks.model_checkpoint.mode == "max"
    # the command line still wins, and other models keep the phase-1 callbacks
    cfg = compose_cfg(["experiment=classifier", "callbacks=default", f"paths.output_dir={tmp_path}"])
    assert "reconstruction_metrics" in cfg.callbacks
    cfg = compose_cfg([f"paths.output_dir={tmp_path}"])
    assert cfg.callbacks.model_checkpoint.monitor == "val/psnr"


# --------------------------------------------------------------------------- module
def test_shapes_of_logits_and_features():
    model = SpectrogramClassifier(num_classes=4, channels=(8, 16, 32)).eval()
    for size in ((64, 64), (16, 24)):
        x = torch.rand(3, 1, *size) * 2 - 1
        assert model(x).shape == (3, 4)
        assert model.features(x).shape == (3, 32) == (3, model.feature_dim)
        assert (model.features(x) >= 0).all()  # pooled after ReLU


@pytest.mark.parametrize("kwargs, key", [
    ({"num_classes": 1}, "model.num_classes"),
    ({"channels": []}, "model.channels"),
    ({"channels": "16"}, "model.channels"),
    ({"convs_per_block": 0}, "model.convs_per_block"),
    ({"dropout": 1.0}, "model.dropout"),
    ({"label_smoothing": -0.1}, "model.label_smoothing"),
])
def test_bad_arguments_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        SpectrogramClassifier(**kwargs)


class Ridges(L.LightningDataModule):
    """`n_classes` classes told apart by the row of a bright ridge; has `class_names`."""

    def __init__(self, n_classes: int = 3, n: int = 96):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % n_classes
        self.x = torch.rand(n, 1, 16, 16, generator=g) * 0.4 - 1
        self.x[torch.arange(n), 0, 3 + 4 * self.y, :] = 1.0
        self.class_names = [f"c{i}" for i in range(n_classes)]

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=32)

    test_dataloader = val_dataloader


def quiet_trainer(**kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kw)


def test_num_classes_is_checked_against_the_data():
    model = SpectrogramClassifier(num_classes=4, channels=(8, 16))
    with pytest.raises(ValueError, match=r"model.num_classes=4 .* 3 classes"):
        quiet_trainer(max_epochs=1).fit(model, datamodule=Ridges(n_classes=3))


def test_learns_separable_classes_and_logs_accuracy(tmp_path):
    L.seed_everything(0)
    model = SpectrogramClassifier(num_classes=3, channels=(8, 16, 32), dropout=0.0)
    trainer = quiet_trainer(max_epochs=6)
    trainer.fit(model, datamodule=Ridges())
    assert {"train/loss", "train/acc", "val/acc", "val/loss"} <= set(trainer.logged_metrics)
    (out,) = trainer.test(model, datamodule=Ridges(), verbose=False)
    assert out["test/acc"] > 0.9 and out["test/loss"] < 0.8  # chance: 1/3 and ln 3 = 1.1
    # class names travel with the checkpoint; the reloaded model predicts the same
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    again = SpectrogramClassifier.load_from_checkpoint(tmp_path / "c.ckpt").eval()
    assert again.class_names == ["c0", "c1", "c2"]
    x = Ridges().x[:8]
    torch.testing.assert_close(again(x), model.eval()(x))


# --------------------------------------------------------------------------- end to end
def test_run_trains_the_classifier_on_simulated_data_well_above_chance(tmp_path):
    """`mdvq.run experiment=classifier data=radar` end to end on 6 x 40 simulated spectrograms."""
    cfg = compose_cfg(classifier_overrides(tmp_path, tmp_path / "cache", per_class=40, size=32)
                      + ["trainer.max_epochs=12"])
    summary = train(cfg)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["status"] == "finished" and on_disk["model"] == "classifier"
    assert "pretrained_dir" not in on_disk  # nothing to export
    best_path = RunSummary.read(tmp_path / "run", model="classifier").checkpoint("best")
    assert best_path is not None
    metrics = summary["metrics"]
    assert {"val/acc", "test/acc", "test/loss"} <= set(metrics)
    chance = 1 / 6
    assert metrics["test/acc"] > 3 * chance, metrics  # well above chance (6 classes)
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    assert best["class_names"] == on_disk["data"]["class_names"]
