"""`TrainingBudget`: training length follows the data, so small sets still get enough steps."""

from __future__ import annotations

import logging
import math

from lightning.pytorch import Callback

log = logging.getLogger(__name__)


def epochs_for_budget(min_steps: int, steps_per_epoch: int, max_epochs: int) -> int:
    """Epochs needed for at least `min_steps` optimiser steps, never fewer than `max_epochs`.

    steps_per_epoch: optimiser steps per epoch (training batches / gradient accumulation).
    E.g. 100 examples in batches of 32 = 4 steps per epoch: 500 steps need 125 epochs.
    """
    if steps_per_epoch < 1:
        return max_epochs
    return max(int(max_epochs), math.ceil(int(min_steps) / int(steps_per_epoch)))


def validation_cadence(val_every_steps: int | None, steps_per_epoch: int, epochs: int,
                       max_epochs: int | None = None) -> tuple[int, int]:
    """`(n, epochs)`: validate every `n` epochs, about every `val_every_steps` optimiser steps.

    `epochs` is rounded up to a multiple of `n` so that the last epoch is validated (Lightning
    validates after epoch `e` when `(e + 1) % n == 0`); where that would pass `max_epochs`
    (an upper bound), `n` shrinks to the largest divisor of `epochs` at most the target.
    E.g. 4 steps per epoch, 50 steps between validations -> n = 12; 125 epochs -> 132.
    `val_every_steps` None (or an epoch already that long) keeps n = 1, epochs unchanged.
    """
    if not val_every_steps or steps_per_epoch < 1:
        return 1, int(epochs)
    n = max(1, int(val_every_steps) // int(steps_per_epoch))
    rounded = math.ceil(int(epochs) / n) * n
    if max_epochs is None or rounded <= max_epochs:
        return n, rounded
    while epochs % n:
        n -= 1
    return n, int(epochs)


class TrainingBudget(Callback):
    """Raise the epoch count at fit start so that at least `min_steps` optimiser steps run.

    `trainer.max_epochs` is a floor: a large set keeps it (the default simulated set, ~2,100
    training examples in batches of 32 for 8 epochs = ~530 steps, is above the default 500),
    a small one gets more epochs (a 100-example set: 4 steps per epoch -> 125 epochs). Early
    stopping and `trainer.max_steps` still end training earlier. The callback stands down, with
    a log line, when training was deliberately shortened: `fast_dev_run`, `overfit_batches`,
    `limit_train_batches` below the whole epoch, or an explicit `max_steps`.

    When it raises the epoch count, short epochs would each pay a full validation pass and its
    figures: it then also sets `trainer.check_val_every_n_epoch` so that validation (and the
    checkpoints saved after it) comes about every `val_every_steps` optimiser steps, and rounds
    the epoch count up so that the last epoch is validated (`validation_cadence`). A run whose
    epochs it leaves alone, or one given `trainer.check_val_every_n_epoch` other than 1, keeps
    its cadence. Early stopping's `patience` counts validations, so it then spans more epochs.

    Args:
        min_steps: the least number of optimiser steps a fit runs (0 disables the budget).
        max_epochs: an upper bound on the raised epoch count (None: no bound).
        val_every_steps: optimiser steps between validations when the budget raised the epoch
            count (None: validate every epoch).

    After `setup`, `epochs` holds the epoch count chosen, `steps_per_epoch` the count it
    is based on (both None when the budget stood down) and `val_every_n_epochs` the
    validation cadence set (None when left alone). Acts in `setup`, before the
    optimisers are built, so a schedule sized from `trainer.estimated_stepping_batches` sees
    the raised length.
    """

    def __init__(self, min_steps: int = 500, max_epochs: int | None = None,
                 val_every_steps: int | None = None):
        if isinstance(min_steps, bool) or int(min_steps) != min_steps or min_steps < 0:
            raise ValueError(
                f"callbacks.training_budget.min_steps must be an integer >= 0, got {min_steps!r}"
            )
        if max_epochs is not None and max_epochs < 1:
            raise ValueError(
                f"callbacks.training_budget.max_epochs must be >= 1 or null, got {max_epochs!r}"
            )
        if val_every_steps is not None and (isinstance(val_every_steps, bool)
                                            or int(val_every_steps) != val_every_steps
                                            or val_every_steps < 1):
            raise ValueError("callbacks.training_budget.val_every_steps must be an integer >= 1 "
                             f"or null, got {val_every_steps!r}")
        self.val_every_steps = None if val_every_steps is None else int(val_every_steps)
        self.val_every_n_epochs: int | None = None
        self.min_steps = int(min_steps)
        self.max_epochs = None if max_epochs is None else int(max_epochs)
        self.epochs: int | None = None
        self.steps_per_epoch: int | None = None

    def _stand_down(self, trainer) -> str | None:
        """Why the budget does not apply to this fit, or None when it does."""
        if self.min_steps == 0:
            return "min_steps=0"
        if trainer.fast_dev_run:
            return "fast_dev_run"
        if trainer.overfit_batches:
            return "overfit_batches"
        limit = trainer.limit_train_batches  # an int counts batches (1 = one batch), a float a share
        if isinstance(limit, int) or limit < 1.0:
            return f"limit_train_batches={limit}"
        if trainer.max_steps != -1:
            return f"max_steps={trainer.max_steps}"
        if trainer.max_epochs is None or trainer.max_epochs < 0:
            return "max_epochs unbounded"
        return None

    def setup(self, trainer, pl_module, stage: str) -> None:
        """At fit: count the optimiser steps per epoch and raise `max_epochs` when too few."""
        if stage != "fit":
            return
        self.epochs = self.steps_per_epoch = self.val_every_n_epochs = None
        reason = self._stand_down(trainer)
        if reason is not None:
            log.info("training budget: not applied (%s)", reason)
            return
        # The same count Lightning uses for schedules (it sets the train dataloader up once).
        trainer.fit_loop.setup_data()
        batches = trainer.num_training_batches
        if not math.isfinite(batches) or batches < 1:
            log.info("training budget: not applied (%s training batches per epoch)", batches)
            return
        steps = math.ceil(batches / trainer.accumulate_grad_batches)
        before = int(trainer.fit_loop.max_epochs)
        epochs = epochs_for_budget(self.min_steps, steps, before)
        if self.max_epochs is not None:
            epochs = max(before, min(epochs, self.max_epochs))
        if epochs > before and trainer.check_val_every_n_epoch == 1:
            n, epochs = validation_cadence(self.val_every_steps, steps, epochs,
                                           None if self.max_epochs is None
                                           else max(before, self.max_epochs))
            if n > 1:
                trainer.check_val_every_n_epoch = self.val_every_n_epochs = n
                log.info("training budget: validating every %d epochs (%d optimiser steps; "
                         "callbacks.training_budget.val_every_steps=%d)", n, n * steps,
                         self.val_every_steps)
        self.steps_per_epoch, self.epochs = steps, epochs
        if epochs > before:
            trainer.fit_loop.max_epochs = epochs
            log.warning(
                "training budget: %d optimiser steps per epoch x max_epochs=%d = %d steps < "
                "min_steps=%d; training for %d epochs (%d steps) instead "
                "(callbacks.training_budget.min_steps=0 turns this off)",
                steps, before, steps * before, self.min_steps, epochs, steps * epochs,
            )
        else:
            log.info("training budget: %d epochs x %d steps = %d >= min_steps=%d; unchanged",
                     before, steps, steps * before, self.min_steps)


def budget_like(config, min_steps: int | None = None) -> TrainingBudget:
    """A `TrainingBudget` equal to the one in a run's `config` (`callbacks.training_budget`;
    500 optimiser steps, validation every 50 when the run had none): the TSTR classifier trains
    to the judge classifier's budget. `min_steps` (not None) replaces its step count."""
    budget = ((config or {}).get("callbacks") or {}).get("training_budget") or {}
    if not str(budget.get("_target_", "TrainingBudget")).endswith("TrainingBudget"):
        budget = {}
    steps = budget.get("min_steps", 500) if min_steps is None else min_steps
    return TrainingBudget(min_steps=int(steps), max_epochs=budget.get("max_epochs"),
                          val_every_steps=budget.get("val_every_steps", 50))
