"""`DecisionRule`: after a VQ-VAE test, apply the phase-1 rule against a given KL-VAE run."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from lightning.pytorch import Callback

from mdvq.core.summary import RunSummary
from mdvq.evaluation.decision import (
    DECISION_NAME,
    PSNR_KEY,
    SELECTIONS_KEY,
    USAGE_KEY,
    decide,
    format_decision,
    write_decision,
)
from mdvq.utils.figures import resolve_output_dir

log = logging.getLogger(__name__)

METRIC_NAME = "decision/continue_vq"


class DecisionRule(Callback):
    """At the end of a VQ-VAE test, decides whether to continue with the VQ-VAE or the KL-VAE.

    Reads `test/psnr` (dB) and `test/codebook_usage` of this run from
    `trainer.callback_metrics` and `test/psnr` of the KL-VAE `baseline` run's summary, applies
    `mdvq.evaluation.decision.decide`, writes `decision.json` to the run folder (rank zero),
    logs `decision/continue_vq` (1 or 0) and the verdict. Modules other than the VQ-VAE are
    ignored. There is no search for a baseline: give it (`callbacks.decision_rule.baseline`),
    or decide after both runs with `python -m mdvq.decide` or `experiment=phase1`.

    Args:
        baseline: KL-VAE run folder or its summary.json; checked at construction.
        psnr_margin: the VQ-VAE must beat the KL-VAE's PSNR by this fraction (0.10 = 10 %).
        usage_threshold: codebook usage the VQ-VAE must exceed (fraction of codes in [0,1]).
        output_dir: folder for decision.json; None means `trainer.log_dir`.
    """

    def __init__(self, baseline: str, psnr_margin: float, usage_threshold: float,
                 output_dir: str | None = None):
        if not baseline:
            raise ValueError("callbacks.decision_rule.baseline: give the KL-VAE run folder to "
                             "compare with (or decide later with python -m mdvq.decide)")
        if not psnr_margin >= 0:
            raise ValueError(f"decision.psnr_margin must be >= 0, got {psnr_margin}")
        if not 0.0 <= usage_threshold <= 1.0:
            raise ValueError(f"decision.usage_threshold must be in [0,1], got {usage_threshold}")
        # fail before training, not after it
        self.baseline = RunSummary.read(baseline, model="klvae", key="callbacks.decision_rule.baseline")
        self.baseline.metric(PSNR_KEY)
        self.psnr_margin = psnr_margin
        self.usage_threshold = usage_threshold
        self.output_dir = output_dir
        self._dir: Path | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._dir = resolve_output_dir(trainer, self.output_dir)

    def on_test_end(self, trainer, pl_module) -> None:
        if getattr(pl_module, "model_kind", None) != "vqvae" or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        missing = [k for k in (PSNR_KEY, USAGE_KEY) if k not in metrics]
        if missing:
            log.warning("DecisionRule: %s not logged by this test (add the reconstruction_metrics "
                        "and codebook_monitor callbacks); no decision written", missing)
            return
        data_key = getattr(trainer.datamodule, "data_key", None) if trainer.datamodule else None
        selections = metrics.get(SELECTIONS_KEY)
        try:
            decision = decide(float(metrics[PSNR_KEY]), float(metrics[USAGE_KEY]),
                              self.baseline.metric(PSNR_KEY), psnr_margin=self.psnr_margin,
                              usage_threshold=self.usage_threshold,
                              usage_selections=None if selections is None else float(selections),
                              num_codes=getattr(pl_module, "num_codes", None))
        except ValueError as err:  # NaN figures
            log.warning("DecisionRule: no decision written: %s", err)
            return
        if data_key is not None and self.baseline.data_key != data_key:
            log.warning("DecisionRule: baseline %s used data_key %r, this run %r: not the same "
                        "held-out split", self.baseline.path, self.baseline.data_key, data_key)
        decision = dataclasses.replace(decision, vq_run=str(self._dir),
                                       kl_run=str(self.baseline.run_dir), data_key=data_key)
        out = write_decision(decision, self._dir / DECISION_NAME)
        value = float(decision.continue_vq)
        metrics[METRIC_NAME] = torch.tensor(value)
        for logger in trainer.loggers:
            logger.log_metrics({METRIC_NAME: value}, step=trainer.global_step)
            logger.save()
        log.info("%s\nwrote %s", format_decision(decision), out)
