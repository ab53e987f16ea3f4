"""`TrainingBudget`: small sets train for at least `min_steps` optimiser steps."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from mdvq.callbacks.budget import TrainingBudget, epochs_for_budget

CONF = Path(__file__).resolve().parents[1] / "conf"


class Tiny(L.LightningModule):
    """One weight; remembers the step count Lightning estimated when building the optimiser."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.estimated = None

    def training_step(self, batch, batch_idx):
        return ((batch[0].mean() - self.w) ** 2).sum()

    def configure_optimizers(self):
        self.estimated = self.trainer.estimated_stepping_batches
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(n=100, batch=32):
    return DataLoader(TensorDataset(torch.rand(n, 2)), batch_size=batch)


def fit(budget, **kw):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[budget], **kw)
    model = Tiny()
    trainer.fit(model, train_dataloaders=loader())
    return trainer, model


def test_epochs_for_budget_hand_values():
    assert epochs_for_budget(500, 4, 8) == 125  # 100 examples, batch 32
    assert epochs_for_budget(500, 66, 8) == 8  # default simulated data: 528 steps, unchanged
    assert epochs_for_budget(500, 3, 8) == 167
    assert epochs_for_budget(0, 3, 8) == 8


def test_default_config_leaves_the_default_simulated_run_unchanged():
    budget = OmegaConf.load(CONF / "callbacks" / "training_budget.yaml").training_budget
    radar = OmegaConf.load(CONF / "data" / "radar.yaml").datamodule.source
    shared = OmegaConf.load(CONF / "data" / "_datamodule.yaml").datamodule
    trainer = OmegaConf.load(CONF / "trainer" / "default.yaml")
    n_train = round(len(radar.classes) * radar.num_per_class
                    * (1 - shared.val_fraction - shared.test_fraction))
    steps = math.ceil(n_train / shared.batch_size) * trainer.max_epochs
    assert 500 <= steps < 600 and budget.min_steps <= steps  # ~2,100 examples: 66 x 8 = 528
    assert "training_budget" in OmegaConf.load(CONF / "callbacks" / "default.yaml").defaults
    for line in (CONF / "callbacks" / "training_budget.yaml").read_text().splitlines():
        if re.match(r"^\s+[A-Za-z_]+:", line) and "_target_" not in line:
            assert "#" in line, line


def test_small_set_trains_for_the_budget_and_says_so(caplog):
    budget = TrainingBudget(min_steps=40)
    with caplog.at_level(logging.WARNING):
        trainer, model = fit(budget, max_epochs=2)
    assert budget.steps_per_epoch == 4 and budget.epochs == 10  # 100 examples / 32 -> 4 steps
    assert trainer.global_step == 40 and trainer.current_epoch == 10
    assert model.estimated == 40  # schedules built from the estimate see the raised length
    assert "training for 10 epochs (40 steps)" in caplog.text
    # with gradient accumulation 2 the 4 batches are 2 optimiser steps per epoch
    budget = TrainingBudget(min_steps=40, max_epochs=15)
    trainer, _ = fit(budget, max_epochs=2, accumulate_grad_batches=2)
    assert budget.steps_per_epoch == 2 and budget.epochs == 15 and trainer.current_epoch == 15


def test_enough_steps_or_deliberate_limits_leave_the_run_alone():
    budget = TrainingBudget(min_steps=8)
    trainer, _ = fit(budget, max_epochs=3)
    assert budget.epochs == 3 and trainer.global_step == 12
    # limit_train_batches=1 is ONE batch (an int), not the whole epoch (1.0)
    for kw in ({"limit_train_batches": 2}, {"limit_train_batches": 1}, {"limit_train_batches": 0.5},
               {"max_steps": 5}, {"fast_dev_run": 2}):
        budget = TrainingBudget(min_steps=40)
        trainer, _ = fit(budget, max_epochs=2, **kw)
        assert budget.epochs is None and trainer.global_step <= 5, kw


@pytest.mark.parametrize("kwargs, key", [({"min_steps": -1}, "min_steps"),
                                         ({"min_steps": 2.5}, "min_steps"),
                                         ({"max_epochs": 0}, "max_epochs")])
def test_bad_arguments_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"callbacks.training_budget.{key}"):
        TrainingBudget(**kwargs)


class Validations(L.Callback):
    """The epochs (0-based) after which validation ran (sanity check excluded)."""

    def __init__(self):
        self.epochs = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.epochs.append(trainer.current_epoch)


class TinyVal(Tiny):
    def validation_step(self, batch, batch_idx):
        self.log("val/loss", ((batch[0].mean() - self.w) ** 2).sum())


def fit_validated(budget, tmp_path, **kw):
    from lightning.pytorch.callbacks import ModelCheckpoint

    seen = Validations()
    last = ModelCheckpoint(dirpath=tmp_path, filename="last-{epoch}", monitor=None, save_top_k=1)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[budget, seen, last], **kw)
    trainer.fit(TinyVal(), train_dataloaders=loader(), val_dataloaders=loader())
    return trainer, seen, last


def test_validation_cadence_hand_values():
    from mdvq.callbacks.budget import validation_cadence

    assert validation_cadence(50, 4, 125) == (12, 132)  # 100 examples: every 12 epochs = 48 steps
    assert validation_cadence(50, 5, 101) == (10, 110)  # 148 examples, the VQ prior's 504 steps
    assert validation_cadence(50, 66, 8) == (1, 8)  # epochs longer than the interval: every epoch
    assert validation_cadence(None, 4, 125) == (1, 125)  # null: every epoch
    assert validation_cadence(50, 4, 125, max_epochs=125) == (5, 125)  # capped: a divisor of 125


def test_validation_cadence_follows_the_budget_on_a_tiny_set(tmp_path):
    # 100 examples / 32 = 4 steps per epoch; 40 steps -> 10 epochs; validate every 12 steps
    # = every 3 epochs, the count rounded up to 12 so that the last epoch is validated
    budget = TrainingBudget(min_steps=40, val_every_steps=12)
    trainer, seen, last = fit_validated(budget, tmp_path / "small", max_epochs=2)
    assert budget.val_every_n_epochs == 3 and budget.epochs == 12
    assert trainer.check_val_every_n_epoch == 3 and trainer.global_step == 48
    assert seen.epochs == [2, 5, 8, 11]  # the last epoch (11) included
    assert Path(last.last_model_path or last.best_model_path).name == "last-epoch=11.ckpt"
    # the budget not raised (enough steps): every epoch, as before
    budget = TrainingBudget(min_steps=8, val_every_steps=12)
    trainer, seen, _ = fit_validated(budget, tmp_path / "large", max_epochs=3)
    assert budget.val_every_n_epochs is None and trainer.check_val_every_n_epoch == 1
    assert seen.epochs == [0, 1, 2]
    # an explicit cadence is the user's: kept
    budget = TrainingBudget(min_steps=40, val_every_steps=12)
    trainer, seen, _ = fit_validated(budget, tmp_path / "own", max_epochs=2,
                                     check_val_every_n_epoch=5)
    assert budget.val_every_n_epochs is None and budget.epochs == 10 and seen.epochs == [4, 9]
    # the shipped config validates about every 50 steps once the budget raised the epochs
    shipped = OmegaConf.load(CONF / "callbacks" / "training_budget.yaml").training_budget
    assert shipped.val_every_steps == 50


# The default simulated data's training split (split v2, subject-disjoint; experiments/routes/
# README.md): the priors' budgets are the steps they take on it, so its run is unchanged.
DEFAULT_TRAIN_EXAMPLES = 2010


@pytest.mark.parametrize("experiment, steps", [("vqdiffusion", 504), ("latentdiffusion", 1920)])
def test_each_prior_has_the_budget_of_its_default_data_steps(experiment, steps):
    from conftest import compose_cfg

    cfg = compose_cfg([f"experiment={experiment}"])
    batch = cfg.model.get("batch_size") or cfg.data.datamodule.batch_size
    default_steps = math.ceil(DEFAULT_TRAIN_EXAMPLES / batch) * cfg.trainer.max_epochs
    assert cfg.callbacks.training_budget.min_steps == default_steps == steps
    assert epochs_for_budget(steps, math.ceil(DEFAULT_TRAIN_EXAMPLES / batch),
                             cfg.trainer.max_epochs) == cfg.trainer.max_epochs  # unchanged
    # 148 training windows (issue 26's recordings): the prior is no longer cut short
    assert epochs_for_budget(steps, math.ceil(148 / batch), cfg.trainer.max_epochs) \
        * math.ceil(148 / batch) >= steps


def test_tstr_budget_is_the_judge_classifiers():
    from mdvq.callbacks.budget import budget_like

    judge = OmegaConf.create({"callbacks": {"training_budget": {
        "_target_": "mdvq.callbacks.budget.TrainingBudget", "min_steps": 300,
        "max_epochs": None, "val_every_steps": 20}}})
    budget = budget_like(judge)
    assert (budget.min_steps, budget.val_every_steps) == (300, 20)
    assert budget_like(judge, min_steps=120).min_steps == 120  # routes.tstr_min_steps
    assert budget_like(OmegaConf.create({})).min_steps == 500  # a run without one: the default
