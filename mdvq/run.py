"""Command: `python -m mdvq.run model=vqvae data=radar` (Hydra; see conf/config.yaml).

Tasks: `task=fit` trains, tests the best checkpoint, exports the model in diffusers' format and
writes `summary.json` in the run folder (`mdvq.runs.training.train`); `task=preview` writes a
PNG grid of the data; `task=phase1` (experiment=phase1) trains the KL-VAE and the VQ-VAE on the
same data and split and writes the decision; `task=routes` (experiment=routes) runs both
generation routes end to end (`mdvq.runs.experiments`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mdvq.core.compose import config_dir

log = logging.getLogger("mdvq.run")

TASKS = ("fit", "preview", "phase1", "routes")


def preview(cfg: DictConfig) -> Path:
    """Write `preview.png` (one example per class, physical axes) to the run folder."""
    from mdvq.core.compose import build
    from mdvq.data.preview import write_preview

    datamodule = build(cfg.data.datamodule)
    return write_preview(datamodule, Path(cfg.paths.output_dir) / "preview.png")


def objective(summary: dict, keys) -> float | tuple[float, ...] | None:
    """`cfg.optimized_metric` read from a run summary, for sweepers: a float for one key, a
    tuple for a list of keys (multi-objective Optuna), None if unset. A missing or non-finite
    value raises (a NaN returned to Optuna 2.x crashes the study instead of failing the trial)."""
    if not keys:
        return None
    values = []
    for key in [keys] if isinstance(keys, str) else list(keys):
        value = summary["metrics"].get(key)
        if value is None:
            raise KeyError(f"optimized_metric {key!r} was not logged; logged: {sorted(summary['metrics'])}")
        if not math.isfinite(value):
            raise ValueError(f"optimized_metric {key!r} is {value} (not finite) in {summary['run_dir']}")
        values.append(value)
    return values[0] if len(values) == 1 else tuple(values)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | tuple[float, ...] | None:
    """Hydra entry; returns `cfg.optimized_metric` of the run for sweepers.

    A failed run leaves a `status: failed` summary.json (written by `train`) and re-raises:
    Hydra's basic sweeper then finishes the batch and exits non-zero, and the Optuna sweeper
    records a failed trial.
    """
    task = cfg.get("task", "fit")
    if task == "preview":
        log.info("preview written to %s", preview(cfg))
        return None
    if task in ("phase1", "routes"):
        from mdvq.runs import experiments

        getattr(experiments, task)(cfg)
        return None
    if task != "fit":
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    from mdvq.runs.training import train  # Lightning: imported only when a run starts (--help)

    return objective(train(cfg), cfg.get("optimized_metric"))


def cli() -> None:
    """`python -m mdvq.run ...`: Hydra's entry, and when composing fails on an unknown
    `data.<key>` (Hydra: "Key '<key>' is not in struct"), a hint on stderr naming where that key
    lives in the chosen data config (`mdvq.core.compose.unknown_key_hint`)."""
    import sys

    try:
        main()
    except SystemExit as stop:
        if stop.code not in (0, None):
            from mdvq.core.compose import unknown_key_hint

            hint = unknown_key_hint([a for a in sys.argv[1:] if not a.startswith("-")])
            if hint:
                print(hint, file=sys.stderr)
        raise


if __name__ == "__main__":
    cli()
