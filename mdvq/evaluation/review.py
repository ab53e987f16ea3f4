"""The W&B run of a generation evaluation: its metrics and a table of the scored samples."""

from __future__ import annotations

import os
from pathlib import Path

from mdvq.evaluation.accuracy import predict_proba
from mdvq.utils.loggers import log_review_run, wandb_samples_table


def log_evaluation(model, samples, result: dict, out_dir: str | os.PathLike,
                   batch_size: int = 256, device: str = "cpu", offline: bool | None = None) -> Path:
    """The W&B run of a generation evaluation (job_type "evaluation"): the metrics of
    `result` (from `mdvq.evaluation.generation.evaluate_generation`) as its summary and a table
    of the `samples` (a SampleSet) with the classifier `model`'s class and confidence
    (softmax probability of its top class). Returns the run's folder."""
    probs = predict_proba(model, samples.images, batch_size, device)
    table = wandb_samples_table(samples.images, samples.labels, probs.argmax(1), probs.max(1),
                                samples.class_names)
    metrics = {k: v for k, v in (result.get("metrics") or {}).items() if isinstance(v, (int, float))}
    return log_review_run(out_dir, name=f"evaluation {Path(samples.directory).name}",
                          job_type="evaluation", tables={"samples": table}, summary=metrics,
                          offline=offline)
