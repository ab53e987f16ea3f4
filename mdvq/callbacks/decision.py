"""`DecisionRule`: after a VQ-VAE test, compare it with a KL-VAE baseline (DESIGN.md section 4)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from lightning.pytorch import Callback

from mdvq.callbacks.reporting import resolve_output_dir
from mdvq.decision import (
    DECISION_NAME,
    PSNR_KEY,
    USAGE_KEY,
    decide,
    find_latest_baseline,
    format_decision,
    load_run_summary,
    run_dir_of,
    search_roots,
    summary_metric,
    write_decision,
)

log = logging.getLogger(__name__)

METRIC_NAME = "decision/continue_vq"


class DecisionRule(Callback):
    """At the end of a VQ-VAE test, decides whether to continue with the VQ-VAE or the KL-VAE.

    Reads `test/psnr` (dB) and `test/codebook_usage` of this run from
    `trainer.callback_metrics` and `test/psnr` of a KL-VAE baseline run's summary.json, applies
    `mdvq.decision.decide`, writes `decision.json` to the run folder (rank zero), logs
    `decision/continue_vq` (1 or 0) and the verdict. Modules other than the VQ-VAE are ignored.
    Without a baseline it warns how to give one and writes nothing.

    Args:
        baseline: KL-VAE run folder or its summary.json; checked at construction.
        search_root: used when `baseline` is None: folder (or list of folders) searched for the
            newest summary.json with model "klvae" and the datamodule's `data_key`.
        psnr_margin: the VQ-VAE must beat the KL-VAE's PSNR by this fraction (0.10 = 10 %).
        usage_threshold: codebook usage the VQ-VAE must exceed (fraction of codes in [0,1]).
        output_dir: folder for decision.json; None means `trainer.log_dir`.
    """

    def __init__(
        self,
        baseline: str | None = None,
        search_root: str | list[str] | None = None,
        psnr_margin: float = 0.10,
        usage_threshold: float = 0.80,
        output_dir: str | None = None,
    ):
        if not psnr_margin >= 0:
            raise ValueError(f"callbacks.decision_rule.psnr_margin must be >= 0, got {psnr_margin}")
        if not 0.0 <= usage_threshold <= 1.0:
            raise ValueError(
                f"callbacks.decision_rule.usage_threshold must be in [0,1], got {usage_threshold}"
            )
        if baseline is not None:  # fail before training, not after it
            summary, path = load_run_summary(baseline, "klvae")
            summary_metric(summary, PSNR_KEY, path)
        self.baseline = baseline
        self.search_root = search_roots(search_root)
        self.psnr_margin = psnr_margin
        self.usage_threshold = usage_threshold
        self.output_dir = output_dir
        self._dir: Path | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._dir = resolve_output_dir(trainer, self.output_dir)

    def _find_baseline(self, data_key: str | None) -> Path | str | None:
        if self.baseline is not None:
            return self.baseline
        if self.search_root is None or data_key is None:
            return None
        return find_latest_baseline(self.search_root, data_key, model="klvae")

    def on_test_end(self, trainer, pl_module) -> None:
        if getattr(pl_module, "model_kind", None) != "vqvae" or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        missing = [k for k in (PSNR_KEY, USAGE_KEY) if k not in metrics]
        if missing:
            log.warning(
                "DecisionRule: %s not logged by this test (add the reconstruction_metrics and "
                "codebook_monitor callbacks); no decision written",
                missing,
            )
            return
        data_key = getattr(trainer.datamodule, "data_key", None) if trainer.datamodule else None
        baseline = self._find_baseline(data_key)
        if baseline is None:
            log.warning(
                "DecisionRule: no KL-VAE baseline with data_key %r under %s; no decision written. "
                "Train the KL-VAE on the same data first (model=klvae), or give its run: "
                "callbacks.decision_rule.baseline=RUN_DIR, or decide later with "
                "`python -m mdvq.decide VQ_RUN KL_RUN`",
                data_key,
                self.search_root,
            )
            return
        try:
            summary, path = load_run_summary(baseline, "klvae")
            decision = decide(
                float(metrics[PSNR_KEY]),
                float(metrics[USAGE_KEY]),
                summary_metric(summary, PSNR_KEY, path),
                psnr_margin=self.psnr_margin,
                usage_threshold=self.usage_threshold,
            )
        except ValueError as err:  # an unusable baseline (DataError) or NaN figures
            log.warning("DecisionRule: no decision written: %s", err)
            return
        if data_key is not None and summary.get("data_key") != data_key:
            log.warning(
                "DecisionRule: baseline %s used data_key %r, this run %r: not the same held-out "
                "split",
                path,
                summary.get("data_key"),
                data_key,
            )
        decision = dataclasses.replace(
            decision, vq_run=str(self._dir), kl_run=run_dir_of(summary, path), data_key=data_key
        )
        out = write_decision(decision, self._dir / DECISION_NAME)
        value = float(decision.continue_vq)
        metrics[METRIC_NAME] = torch.tensor(value)
        for logger in trainer.loggers:
            logger.log_metrics({METRIC_NAME: value}, step=trainer.global_step)
            logger.save()
        log.info("%s\nwrote %s", format_decision(decision), out)
