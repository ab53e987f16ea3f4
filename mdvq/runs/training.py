"""Train one configured model: fit, test, export, and always leave a `summary.json`.

`train(cfg)` is the library behind `python -m mdvq.run` (and behind every stage of the phase-1
and routes experiments, the TSTR classifier, ...): it builds the datamodule, model, callbacks,
loggers and trainer from a composed config with Hydra's `instantiate`, fits, tests the best
checkpoint, exports the model in diffusers' format and writes the run summary
(`mdvq.runs.summary.RunSummary`).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mdvq.callbacks.process_group import ReleaseProcessGroup
from mdvq.runs.summary import RunSummary
from mdvq.utils.loggers import close_loggers

log = logging.getLogger(__name__)


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
    summary = RunSummary.new(out_dir, model_kind(cfg))
    summary.update(run_dir=str(out_dir.resolve()))
    metrics: dict[str, float] = {}
    datamodule = model = trainer = None
    loggers: list = []
    try:
        L.seed_everything(cfg.seed, workers=True)
        datamodule = build(cfg.data.datamodule)
        model = build(cfg.model)
        # A model that trains on something derived from the spectrograms (a prior on cached code
        # maps or latents) wraps the datamodule: `model.wrap_datamodule(dm) -> DataModule`.
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
        summary.update(status="finished")
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
            checkpoints={"best": summary.relative(_best_checkpoint(trainer)),
                         "last": summary.relative(_last_checkpoint(trainer))},
            wall_time_s=round(time.time() - started, 2),
            finished_at=datetime.now(timezone.utc).isoformat(),
            config=_config_dict(cfg),
        )
        if summary.finished and cfg.get("export") and hasattr(model, "export_pretrained"):
            summary.update(pretrained_dir=summary.relative(_export(model, out_dir / "pretrained")))
        _write_summary(summary)
        close_loggers(loggers, failed=not summary.finished)  # one W&B run per run, not per process
    return summary.data


def model_kind(cfg: DictConfig) -> str:
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
def _write_summary(summary: RunSummary) -> None:
    log.info("summary: %s", summary.write())


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
