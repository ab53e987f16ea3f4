"""Main entry: `python -m mdvq.run model=vqvae data=radar` (Hydra; see conf/config.yaml).

Tasks: `task=fit` trains, tests the best checkpoint, exports the autoencoder in diffusers'
format and writes `summary.json` in the run folder; `task=preview` writes a PNG grid of the
data; `task=phase1` (experiment=phase1) trains the KL-VAE and the VQ-VAE on the same data and
split and writes the decision. `train(cfg)` is usable without the command line.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mdvq.callbacks.process_group import ReleaseProcessGroup

log = logging.getLogger("mdvq.run")


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, re-raising a configuration error (ValueError, TypeError) as
    itself rather than wrapped in Hydra's InstantiationException, so the message naming the
    offending key is the one the user sees."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, TypeError, FileNotFoundError)):
            raise cause from None
        raise


def instantiate_collection(cfg: DictConfig | None) -> list:
    """Instantiate every entry with a `_target_` in a group such as `callbacks` or `logger`."""
    if not cfg:
        return []
    return [build(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def train(cfg: DictConfig) -> dict:
    """Fit, test and export one model as configured; returns the run summary (also written).

    Every run leaves a `summary.json`, also one that fails while being built (a bad config):
    status `failed` or `interrupted` (Ctrl-C, SIGTERM) with the error, then the error is raised.
    """
    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"model": _model_kind(cfg), "status": "running", "run_dir": str(out_dir.resolve())}
    metrics: dict[str, float] = {}
    datamodule = model = trainer = None
    try:
        L.seed_everything(cfg.seed, workers=True)
        datamodule = build(cfg.data.datamodule)
        model = build(cfg.model)
        # A model that trains on something derived from the spectrograms (the VQ-Diffusion prior
        # on cached code maps) wraps the datamodule: `model.wrap_datamodule(dm) -> DataModule`.
        if callable(getattr(model, "wrap_datamodule", None)):
            datamodule = model.wrap_datamodule(datamodule)
        callbacks = instantiate_collection(cfg.get("callbacks")) + [ReleaseProcessGroup()]
        loggers = instantiate_collection(cfg.get("logger"))
        trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        for lg in loggers:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(_floats(trainer.callback_metrics))
        if cfg.get("test"):
            ckpt = "best" if _best_checkpoint(trainer) else None
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
            metrics.update(_floats(trainer.callback_metrics))
        summary["status"] = "finished"
    except Exception as err:
        summary.update(status="failed", error=f"{type(err).__name__}: {err}")
        log.error("run failed: %s (checkpoints kept in %s)", err, out_dir / "checkpoints")
        raise
    except BaseException as err:  # Ctrl-C, SIGTERM (timeout, SLURM preemption)
        summary.update(status="interrupted", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        has_data = getattr(datamodule, "data_key", None) and hasattr(datamodule, "describe")
        summary.update(
            metrics=metrics,
            data_key=getattr(datamodule, "data_key", None),
            data=datamodule.describe() if has_data else None,
            checkpoints={"best": _best_checkpoint(trainer), "last": _last_checkpoint(trainer)},
            wall_time_s=round(time.time() - started, 2),
            finished_at=datetime.now(timezone.utc).isoformat(),
            config=_config_dict(cfg),
        )
        if summary["status"] == "finished" and cfg.get("export") and hasattr(model, "export_pretrained"):
            summary["pretrained_dir"] = _export(model, out_dir / "pretrained")
        _write_summary(summary, out_dir / "summary.json")
    return summary


def _model_kind(cfg: DictConfig) -> str:
    """`model_kind` of the configured LightningModule class (e.g. "vqvae"), known before it is
    built; else the class name of `model._target_`."""
    target = str(cfg.model.get("_target_", "unknown"))
    try:
        return get_class(target).model_kind
    except (ImportError, ValueError, AttributeError):
        return target.rsplit(".", 1)[-1]


def _config_dict(cfg: DictConfig) -> dict:
    """The resolved config as plain data (unresolved where an interpolation cannot resolve)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return OmegaConf.to_container(cfg, resolve=False)


@rank_zero_only
def _export(model, directory: Path) -> str:
    model.export_pretrained(directory)
    return str(directory.resolve())


@rank_zero_only
def _write_summary(summary: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)
    log.info("summary: %s", path)


def _floats(metrics) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _best_checkpoint(trainer) -> str | None:
    cb = getattr(trainer, "checkpoint_callback", None)
    return (cb.best_model_path or None) if cb is not None else None


def _last_checkpoint(trainer) -> str | None:
    cb = getattr(trainer, "checkpoint_callback", None)
    path = getattr(cb, "last_model_path", None) if cb is not None else None
    return path or None


def preview(cfg: DictConfig) -> Path:
    """Write `preview.png` (one example per class, physical axes) to the run folder."""
    from mdvq.data.preview import write_preview

    datamodule = build(cfg.data.datamodule)
    return write_preview(datamodule, Path(cfg.paths.output_dir) / "preview.png")


def phase1(cfg: DictConfig) -> dict:
    """Train the KL-VAE, then the VQ-VAE against it on the same data and split; write the decision."""
    from hydra import compose

    from mdvq.decision import decide_runs, write_decision

    out_dir = Path(cfg.paths.output_dir)
    user = [o for o in HydraConfig.get().overrides.task if not o.split("=")[0].lstrip("+~") in ("model", "task")]
    runs = {}
    for name in ("klvae", "vqvae"):
        extra = [f"model={name}", "task=fit", f"paths.output_dir={out_dir / name}"]
        if name == "vqvae":
            extra.append(f"callbacks.decision_rule.baseline={out_dir / 'klvae'}")
        run_cfg = compose(config_name="config", overrides=user + extra)
        runs[name] = train(run_cfg)
    verdict = decide_runs(out_dir / "vqvae", out_dir / "klvae",
                          psnr_margin=cfg.callbacks.decision_rule.psnr_margin,
                          usage_threshold=cfg.callbacks.decision_rule.usage_threshold)
    write_decision(verdict, out_dir / "decision.json")
    log.info("phase 1 decision: %s", verdict)
    return runs


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | tuple[float, ...] | None:
    """Hydra entry; returns `cfg.optimized_metric` of the run for sweepers: a float for one key,
    a tuple for a list of keys (multi-objective Optuna), None if unset.

    A failed run leaves a `status: failed` summary.json (written by `train`) and re-raises:
    Hydra's basic sweeper then finishes the batch and exits non-zero, and the Optuna sweeper records a failed trial. A
    missing or non-finite objective raises too, as a NaN returned to Optuna 2.x crashes the
    study instead of failing the trial.
    """
    task = cfg.get("task", "fit")
    if task == "preview":
        log.info("preview written to %s", preview(cfg))
        return None
    if task == "phase1":
        phase1(cfg)
        return None
    if task != "fit":
        raise ValueError(f"task must be one of fit, preview, phase1; got {task!r}")
    summary = train(cfg)
    keys = cfg.get("optimized_metric")
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


if __name__ == "__main__":
    main()
