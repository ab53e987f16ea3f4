"""Experiments made of several training stages, each an ordinary run folder with its summary.

`phase1`: the KL-VAE, then the VQ-VAE on the same data and split, then the decision rule
(`decision.json` in the experiment folder), with the thresholds of `conf/decision/`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mdvq.evaluation.decision import decide_runs, format_decision, write_decision
from mdvq.runs.compose import compose_config
from mdvq.runs.training import train

log = logging.getLogger(__name__)


def user_overrides(drop: tuple[str, ...] = ("model", "task", "experiment")) -> list[str]:
    """The command line's Hydra overrides, less those of the groups/keys in `drop` (which each
    stage sets itself)."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside a Hydra app (a direct call from Python)
        return []
    return [o for o in overrides if o.split("=")[0].lstrip("+~") not in drop]


def phase1(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Train the KL-VAE, then the VQ-VAE, on the same data and split; write `decision.json`.

    `overrides` (default: the command line's) are applied to both stages. Returns the two
    run summaries and the decision (as a dict)."""
    out_dir = Path(cfg.paths.output_dir)
    extra = user_overrides() if overrides is None else list(overrides)
    runs = {}
    for name in ("klvae", "vqvae"):
        stage = [f"model={name}", "task=fit", f"paths.output_dir={out_dir / name}"]
        runs[name] = train(compose_config(extra + stage))
    decision = decide_runs(out_dir / "vqvae", out_dir / "klvae",
                           psnr_margin=cfg.decision.psnr_margin,
                           usage_threshold=cfg.decision.usage_threshold)
    write_decision(decision, out_dir / "decision.json")
    if "wandb" in (cfg.get("logger") or {}):  # the decision as a W&B table beside the stages
        from mdvq.utils.loggers import log_review_run, wandb_rows_table

        log_review_run(out_dir, "decision", "evaluation",
                       {"decision": wandb_rows_table([decision.to_dict()])},
                       {"continue_vq": int(decision.continue_vq)})
    log.info("phase 1 %s", format_decision(decision))
    return {**runs, "decision": decision.to_dict()}
