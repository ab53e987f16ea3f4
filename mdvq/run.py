"""Command: `python -m mdvq.run model=vqvae data=radar` (Hydra; see conf/config.yaml).

Tasks: `task=fit` trains, tests the best checkpoint, exports the model in diffusers' format and
writes `summary.json` in the run folder (`mdvq.runs.training.train`); `task=preview` writes a
PNG grid of the data and prints the derived settings (frequency resolution, time step, Doppler
span, windows per recording and split); `task=inspect` prints what the data holds (recordings,
windows and duration per class, the split by recording, the derived axes, whether a
recording-disjoint split is possible, optimiser steps per epoch and per stage) and writes
`inspect.json`; `task=phase1` (experiment=phase1) trains the KL-VAE and the VQ-VAE on the
same data and split and writes the decision; `task=routes` (experiment=routes) runs both
generation routes end to end (`mdvq.runs.experiments`); `task=augment` (experiment=augment)
trains classifiers on fractions of the real data with and without synthetic data
(`mdvq.runs.augment`).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mdvq.core.compose import config_dir

log = logging.getLogger("mdvq.run")

TASKS = ("fit", "preview", "inspect", "phase1", "routes", "augment")

#: the stages `task=inspect` estimates steps for: name -> the overrides that select it
STAGES = {"klvae": ["model=klvae"], "vqvae": ["model=vqvae"],
          "classifier": ["experiment=classifier"],
          "latentdiffusion": ["experiment=latentdiffusion"],
          "vqdiffusion": ["experiment=vqdiffusion"],
          "maskedtokens": ["experiment=maskedtokens"]}


def preview(cfg: DictConfig) -> Path:
    """Write `preview.png` (one example per class, physical axes) to the run folder."""
    from mdvq.core.compose import build
    from mdvq.data.preview import write_preview

    datamodule = build(cfg.data.datamodule)
    return write_preview(datamodule, Path(cfg.paths.output_dir) / "preview.png")


def preview_and_settings(cfg: DictConfig) -> Path:
    """`task=preview`: the picture, and the derived settings printed beside it."""
    path = preview(cfg)
    print(Path(path).with_suffix(".txt").read_text(), end="")
    return path


def user_overrides() -> list[str]:
    """The command line's overrides inside a Hydra app (else none)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside a Hydra app (a test composing the config itself)
        return []


def stage_budgets(cfg: DictConfig, overrides: list[str]) -> dict:
    """Per training stage (`STAGES`), from its composed config: the training batch size (the
    model's own `batch_size` where it has one, else data.datamodule.batch_size),
    trainer.max_epochs, callbacks.training_budget.min_steps (None: the stage has no budget) and
    its max_epochs cap. The user's overrides apply except those choosing the task, model,
    experiment or callbacks; a stage that does not compose gets {"error": ...}."""
    from mdvq.core.compose import compose_config

    keep = [o for o in overrides if not re.match(
        r"^[+~]*(task|model|experiment|callbacks|hydra)([.=/]|$)", o)]
    out = {}
    for name, choose in STAGES.items():
        try:
            stage = compose_config([*keep, *choose])
        except Exception as err:  # noqa: BLE001 - reported per stage
            out[name] = {"error": f"does not compose: {err}"}
            continue
        batch = stage.model.get("batch_size") or stage.data.datamodule.batch_size
        budget = (stage.get("callbacks") or {}).get("training_budget") or {}
        out[name] = {"batch_size": int(batch), "max_epochs": int(stage.trainer.max_epochs),
                     "min_steps": budget.get("min_steps"),
                     "budget_max_epochs": budget.get("max_epochs")}
    return out


def inspect(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """`task=inspect`: print what the data holds and what training on it would take
    (`mdvq.data.overview`), write `inspect.json` to the run folder; returns the dict."""
    import json

    from mdvq.core.compose import build
    from mdvq.data.overview import overview, overview_lines

    datamodule = build(cfg.data.datamodule)
    info = overview(datamodule, stage_budgets(cfg, user_overrides() if overrides is None
                                              else overrides))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inspect.json").write_text(json.dumps(info, indent=2, default=str))
    print("\n".join(overview_lines(info)))
    return info


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
        log.info("preview written to %s", preview_and_settings(cfg))
        return None
    if task == "inspect":
        inspect(cfg)
        return None
    if task in ("phase1", "routes"):
        from mdvq.runs import experiments

        getattr(experiments, task)(cfg)
        return None
    if task == "augment":
        from mdvq.runs.augment import augment

        augment(cfg)
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
