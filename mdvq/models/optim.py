"""The optimiser and optional per-step LR schedule of every model, built from
``functools.partial`` objects (lightning-hydra-template style ``_partial_: true`` configs).

- :func:`configure_optimization`: Lightning's ``configure_optimizers`` answer from the partials;
- :class:`PartialOptimizers`: the LightningModule mixin that calls it.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable

import torch


def default_optimizer() -> functools.partial:
    """AdamW with lr 1e-3 and no weight decay, as a partial awaiting the parameters."""
    return functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.0)


def configure_optimization(
    params: Iterable[torch.nn.Parameter],
    optimizer: Callable[..., torch.optim.Optimizer] | None,
    scheduler: Callable[..., object] | None,
    total_steps: Callable[[], float],
) -> dict:
    """Build Lightning's ``configure_optimizers`` answer from partials.

    ``optimizer(params)`` builds the optimiser (``None``: :func:`default_optimizer`).
    ``scheduler(optimizer=...)`` builds an LR schedule stepped every optimiser step; when its
    signature has a ``num_training_steps`` argument that the partial leaves unset (e.g.
    ``diffusers.optimization.get_cosine_schedule_with_warmup``), it is filled with
    ``total_steps()`` (the trainer's estimated number of optimiser steps).
    """
    opt = (optimizer or default_optimizer())(params)
    if scheduler is None:
        return {"optimizer": opt}
    kwargs = {}
    given = getattr(scheduler, "keywords", {}) or {}
    try:
        names = inspect.signature(scheduler).parameters
    except (TypeError, ValueError):
        names = {}
    if "num_training_steps" in names and "num_training_steps" not in given:
        steps = total_steps()
        if not math.isfinite(steps):
            raise ValueError(
                "model.scheduler needs num_training_steps: set trainer.max_steps or "
                "trainer.max_epochs, or model.scheduler.num_training_steps"
            )
        kwargs["num_training_steps"] = int(steps)
    sched = scheduler(optimizer=opt, **kwargs)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class PartialOptimizers:
    """LightningModule mixin: ``configure_optimizers`` from ``self.optimizer_factory`` and
    ``self.scheduler_factory`` (``functools.partial`` objects or None, see
    :func:`configure_optimization`); the schedule's ``num_training_steps`` defaults to the
    trainer's estimated optimiser steps."""

    def configure_optimizers(self) -> dict:
        """Optimiser (and per-step schedule) from the ``optimizer``/``scheduler`` partials."""
        return configure_optimization(
            self.parameters(),
            self.optimizer_factory,
            self.scheduler_factory,
            lambda: self.trainer.estimated_stepping_batches,
        )
