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
