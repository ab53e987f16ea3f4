"""Tests of the in-domain classifier (mdvq.models.classifier) and `mdvq.run experiment=classifier`."""

from __future__ import annotations

import functools
import json
import re

import lightning as L
import numpy as np
import pytest
import torch
from conftest import CONF, compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from mdvq.core.summary import RunSummary
from mdvq.models.classifier import SpectrogramClassifier


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
    assert model.optimizer_factory.keywords == {"lr": 0.002, "weight_decay": 0.01}
    assert model.hparams.num_classes is None and model.hparams.doppler_bins == 8
    assert 0.05e6 < sum(p.numel() for p in model.parameters()) < 0.5e6  # CPU-sized


def test_experiment_selects_classifier_callbacks(tmp_path):
    cfg = compose_cfg(["experiment=classifier", f"paths.output_dir={tmp_path}"])
    assert set(cfg.callbacks) == {"model_checkpoint", "last_checkpoint", "lr_monitor", "early_stopping",
                                  "training_budget", "epoch_lines", "wandb_review"}
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc"
    assert cfg.callbacks.model_checkpoint.mode == "max"
    assert cfg.callbacks.early_stopping.monitor == "val/loss"
    assert cfg.callbacks.early_stopping.mode == "min"
    # the command line still wins, and other models keep the phase-1 callbacks
    cfg = compose_cfg(["experiment=classifier", "callbacks=default", f"paths.output_dir={tmp_path}"])
    assert "reconstruction_metrics" in cfg.callbacks
    cfg = compose_cfg([f"paths.output_dir={tmp_path}"])
    assert cfg.callbacks.model_checkpoint.monitor == "val/psnr"


# --------------------------------------------------------------------------- module
def test_shapes_of_logits_and_features():
    for kw, dim in (({"embed_dim": 24}, 24), ({"doppler_bins": 0}, 32)):
        model = SpectrogramClassifier(num_classes=4, channels=(8, 16, 32), **kw).eval()
        for size in ((64, 64), (16, 24)):
            x = torch.rand(3, 1, *size) * 2 - 1
            assert model(x).shape == (3, 4)
            assert model.features(x).shape == (3, dim) == (3, model.feature_dim)
            assert (model.features(x) >= 0).all()  # after ReLU


def test_features_see_doppler_position_but_not_time_position():
    """Moving a line along Doppler changes the features; moving it along time does not."""
    torch.manual_seed(0)
    model = SpectrogramClassifier(num_classes=2, channels=(8, 16), time_shift=0.0).eval()
    blind = SpectrogramClassifier(num_classes=2, channels=(8, 16), doppler_bins=0).eval()
    x = -torch.ones(3, 1, 64, 64)
    x[0, 0, 24, 24:30] = 1  # a short line at Doppler row 24
    x[1, 0, 24, 32:38] = 1  # the same line 8 frames later
    x[2, 0, 40, 24:30] = 1  # the same line at Doppler row 40
    f = model.features(x)
    assert torch.allclose(f[0], f[1], atol=1e-5)  # time pooling: time position is irrelevant
    assert (f[0] - f[2]).abs().max() > 1e-4  # Doppler position is seen (blind: < 1e-5 below)
    g = blind.features(x)  # global pooling, lines away from the borders: cannot tell them apart
    torch.testing.assert_close(g[0], g[2], atol=1e-5, rtol=1e-5)


def test_augmentation_moves_time_only_and_keeps_the_range():
    model = SpectrogramClassifier(num_classes=2, channels=(8,), time_shift=0.5, noise_std=0.0)
    x = -torch.ones(16, 1, 8, 10)
    x[:, 0, 3, 0] = 1.0
    out = model.augment(x)
    rows, cols = torch.nonzero(out[:, 0] == 1.0, as_tuple=True)[1:]
    assert (rows == 3).all() and len(set(cols.tolist())) > 1  # moved along time only
    assert torch.equal(out.sum((-2, -1)), x.sum((-2, -1)))  # a circular shift: nothing lost
    noisy = SpectrogramClassifier(num_classes=2, channels=(8,), time_shift=0.0,
                                  noise_std=0.1).augment(x)
    assert noisy.min() >= -1 and noisy.max() <= 1 and 0.02 < (noisy - x).abs().mean() < 0.1


@pytest.mark.parametrize("kwargs, key", [
    ({"num_classes": 1}, "model.num_classes"),
    ({"channels": []}, "model.channels"),
    ({"channels": "16"}, "model.channels"),
    ({"convs_per_block": 0}, "model.convs_per_block"),
    ({"dropout": 1.0}, "model.dropout"),
    ({"label_smoothing": -0.1}, "model.label_smoothing"),
    ({"doppler_bins": -1}, "model.doppler_bins"),
    ({"time_shift": 1.5}, "model.time_shift"),
    ({"noise_std": -0.1}, "model.noise_std"),
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


def test_num_classes_comes_from_the_data_when_not_given(tmp_path):
    model = SpectrogramClassifier(channels=(8, 16))
    with pytest.raises(RuntimeError, match="model.num_classes is unknown"):
        model(torch.zeros(1, 1, 16, 16))
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, datamodule=Ridges(n_classes=4))
    assert model.num_classes == 4 and model(torch.zeros(2, 1, 16, 16)).shape == (2, 4)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    again = SpectrogramClassifier.load_from_checkpoint(tmp_path / "c.ckpt")
    assert again.num_classes == 4 and again.class_names == [f"c{i}" for i in range(4)]


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
def test_run_trains_the_classifier_on_simulated_data_well_above_chance(classifier_dir):
    """`mdvq.run experiment=classifier data=radar` end to end on 6 x 40 simulated spectrograms
    (the session's shared run, tests/conftest.py `classifier_dir`)."""
    on_disk = json.loads((classifier_dir / "summary.json").read_text())
    assert on_disk["status"] == "finished" and on_disk["model"] == "classifier"
    assert "pretrained_dir" not in on_disk  # nothing to export
    best_path = RunSummary.read(classifier_dir, model="classifier").checkpoint("best")
    assert best_path is not None
    metrics = on_disk["metrics"]
    assert {"val/acc", "test/acc", "test/loss"} <= set(metrics)
    chance = 1 / 6
    assert metrics["test/acc"] > 3 * chance, metrics  # well above chance (6 classes)
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    assert best["class_names"] == on_disk["data"]["class_names"]


# --------------------------------------------------------------------------- position matters
def position_only_set(n_classes=4, recordings=3, windows=8, size=(32, 16), seed=0):
    """A recorded-style set: `n_classes` x `recordings` recordings cut into `windows` windows.

    Every class shows the same pattern (two intermittent spectral lines 3 Doppler rows apart);
    only its Doppler position differs (rows 5 + 6c, jittered by a row per recording).
    `subjects` are the recording ids, so the split is recording-disjoint.
    """
    from mdvq.data.dataset import SpectrogramSet

    rng = np.random.default_rng(seed)
    f, t = size
    images, labels, recs = [], [], []
    for c in range(n_classes):
        for r in range(recordings):
            base = 5 + 6 * c + rng.integers(-1, 2)
            for _ in range(windows):
                x = rng.uniform(0.0, 0.35, size=(f, t))
                amp = rng.uniform(0.6, 1.0, size=t) * (rng.uniform(size=t) < 0.7)
                for row in (base, base + 3):
                    x[row] = np.maximum(x[row], amp)
                    x[row + 1] = np.maximum(x[row + 1], 0.5 * amp)
                images.append(x[None])
                labels.append(c)
                recs.append(f"c{c}r{r}")
    return SpectrogramSet(images=np.stack(images), labels=labels, subjects=recs,
                          class_names=[f"pos{c}" for c in range(n_classes)])


def profile_baseline_accuracy(dm) -> float:
    """Hand-built baseline: nearest class centroid of the time-averaged Doppler profile
    (blurred over +-1 bin), trained on the train split, scored on the test split."""
    def profiles(split):
        x, y = dm.datasets[split].tensors
        p = ((x + 1) / 2).mean(-1).flatten(1)
        p = torch.nn.functional.conv1d(p[:, None], torch.tensor([[[0.25, 0.5, 0.25]]]),
                                       padding=1)[:, 0]
        return p, y

    p, y = profiles("train")
    centroids = torch.stack([p[y == c].mean(0) for c in range(int(y.max()) + 1)])
    q, yq = profiles("test")
    return float((torch.cdist(q, centroids).argmin(1) == yq).float().mean())


def test_classifier_sees_doppler_position_where_a_position_blind_model_cannot():
    from conftest import InMemorySource

    from mdvq.data.datamodule import SpectrogramDataModule

    dm = SpectrogramDataModule(InMemorySource(position_only_set()), image_size=(32, 16),
                               batch_size=16, val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    accuracy = {}
    for bins in (8, 0):
        L.seed_everything(0)
        model = SpectrogramClassifier(channels=(8, 16, 32), doppler_bins=bins,
                                      optimizer=functools.partial(torch.optim.AdamW, lr=3e-3))
        trainer = quiet_trainer(max_epochs=30, num_sanity_val_steps=0)
        trainer.fit(model, datamodule=dm)
        accuracy[bins] = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    baseline = profile_baseline_accuracy(dm)
    assert baseline >= 0.9, baseline
    assert accuracy[8] >= baseline - 0.05, (accuracy, baseline)  # position-aware: passes
    assert accuracy[0] <= 0.5, accuracy  # global average pooling: near chance (0.25)
