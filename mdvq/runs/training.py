"""Train one configured model: fit, test, export, and always leave a `summary.json`.

`train(cfg)` is the library behind `python -m mdvq.run` (and behind every stage of the phase-1
and routes experiments, the TSTR classifier, ...): it builds the datamodule, model, callbacks,
loggers and trainer from a composed config with Hydra's `instantiate`, fits, tests the best
checkpoint, exports the model in diffusers' format and writes the run summary
(`mdvq.core.summary.RunSummary`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
from hydra.utils import get_class
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mdvq.callbacks.csv_log import KeepCSVColumns
from mdvq.callbacks.process_group import ReleaseProcessGroup
from mdvq.core.artifacts import SAFE, checkpoint_problem, load_checkpoint
from mdvq.core.compose import build, instantiate_collection
from mdvq.core.errors import DataError
from mdvq.core.precision import trainer_precision
from mdvq.core.summary import RunSummary
from mdvq.runs.signals import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    StopTogetherOnSigterm,
    interruption,
    signal_name,
    sigterm_guard,
)
from mdvq.utils.loggers import close_loggers

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """Fit, test and export one model as configured; returns this attempt's summary.

    The story: refuse to start over a finished run (`refuse_finished_run`), record the attempt
    as `running`, fit, test the best checkpoint, export, record the outcome. Every attempt is
    recorded in `summary.json` without losing an earlier one (`RunSummary.start`): a failed or
    interrupted attempt on a finished run keeps the finished record on top and adds itself
    under `attempts`. Also a run that fails while being built (a bad config) is recorded as
    `failed` with the error, then the error is raised.
    A run stopped by SIGTERM (a scheduler's time limit, SLURM preemption) records
    `signal: "SIGTERM"` and the checkpoint to resume from, and raises Lightning's
    `SIGTERMException` with exit status 143 (128 + 15), so a scheduler sees a failed job and can
    requeue it; Ctrl-C likewise exits 130 (`mdvq.runs.signals`). Checkpoints saved are at epoch
    ends. `ckpt_path=last` resumes the interrupted run in its own run folder
    (`resolve_ckpt_path`).
    """
    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:  # DDP children re-run this after rank 0 started the attempt
        refuse_finished_run(out_dir, cfg.get("ckpt_path"), bool(cfg.get("overwrite", False)))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary.start(out_dir, model_kind(cfg))
    _write_summary(summary)  # `running`: a run killed outright (SIGKILL, OOM) stays visible
    state = _RunState()
    with sigterm_guard(lambda: state.trainer) as received:
        try:
            _fit_and_test(cfg, out_dir, summary, state)
        except Exception as err:
            state.checkpoints = state.checkpoints or _checkpoints(state.trainer, summary)
            if not received:
                summary.update(status="failed", error=f"{type(err).__name__}: {err}")
                log.error("run failed: %s (%s)", err, _kept(state.checkpoints))
                raise
            # a `ddp_spawn` worker stopped by the forwarded SIGTERM: the main process sees it fail
            _record_interruption(summary, err, received["signal"], state)
            raise SIGTERMException(EXIT_SIGTERM) from err
        except BaseException as err:  # Ctrl-C, SIGTERM (timeout, SLURM preemption)
            state.checkpoints = state.checkpoints or _checkpoints(state.trainer, summary)
            name = signal_name(err)
            _record_interruption(summary, err, name, state)
            if name == "SIGTERM":
                raise SIGTERMException(EXIT_SIGTERM) from err
            if name == "SIGINT":
                raise SystemExit(EXIT_SIGINT) from err
            raise
        finally:
            _finish_record(cfg, out_dir, summary, state, started)
    return summary.data


@dataclass
class _RunState:
    """What a run has built so far (None until built), for the record of a failed attempt."""

    datamodule: object = None
    model: object = None
    trainer: object = None
    loggers: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    checkpoints: dict | None = None


def _fit_and_test(cfg: DictConfig, out_dir: Path, summary: RunSummary, state: _RunState) -> None:
    """Build everything from the config, fit, then test the best checkpoint."""
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), out_dir)
    L.seed_everything(cfg.seed, workers=True)
    state.datamodule = build(cfg.data.datamodule)
    state.model = build(cfg.model)
    # A model that trains on something derived from the spectrograms (a prior on cached code
    # maps or latents) wraps the datamodule: `model.wrap_datamodule(dm) -> DataModule`.
    if callable(getattr(state.model, "wrap_datamodule", None)):
        state.datamodule = state.model.wrap_datamodule(state.datamodule)
    callbacks = instantiate_collection(cfg.get("callbacks")) + [
        KeepCSVColumns(), ReleaseProcessGroup(), StopTogetherOnSigterm()]
    state.loggers = instantiate_collection(cfg.get("logger"))
    precision = trainer_precision(cfg.trainer)
    summary.update(precision=precision)
    state.trainer = trainer = build(cfg.trainer, callbacks=callbacks,
                                    logger=state.loggers or False, precision=precision)
    for lg in state.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer.fit(state.model, datamodule=state.datamodule, ckpt_path=ckpt_path, **SAFE)
    state.metrics.update(_floats(trainer.callback_metrics))
    # read before testing: `test(ckpt_path="best")` restores the checkpoint callback's state
    # saved in the best file, whose `last_model_path` is empty when it is from epoch 0
    state.checkpoints = _checkpoints(trainer, summary)
    if cfg.get("test"):
        ckpt = "best" if state.checkpoints["best"] else None
        trainer.test(state.model, datamodule=state.datamodule, ckpt_path=ckpt, **SAFE)
        state.metrics.update(_floats(trainer.callback_metrics))
    summary.update(status="finished")


def _record_interruption(summary: RunSummary, err: BaseException, name: str | None,
                         state: _RunState) -> None:
    summary.update(status="interrupted", signal=name,
                   error=interruption(err, name, state.trainer, state.checkpoints))
    log.error("run %s", summary.data["error"])


def _finish_record(cfg: DictConfig, out_dir: Path, summary: RunSummary, state: _RunState,
                   started: float) -> None:
    """Fill in and write this attempt's summary (and export a finished model)."""
    datamodule = state.datamodule
    has_data = getattr(datamodule, "data_key", None) and hasattr(datamodule, "describe")
    checkpoints = state.checkpoints or _checkpoints(state.trainer, summary)
    described = datamodule.describe() if has_data else None
    trainer = state.trainer
    summary.update(
        metrics=state.metrics,
        data_key=getattr(datamodule, "data_key", None),
        data=described,
        skipped_files=(described or {}).get("skipped_files"),
        checkpoints={k: summary.relative(v) for k, v in checkpoints.items()},
        wall_time_s=round(time.time() - started, 2),
        # optimiser steps and epochs this run's model has trained (a resumed run counts its
        # earlier attempts' too); None when no trainer was built
        trained_steps=None if trainer is None else int(trainer.global_step),
        epochs=None if trainer is None else int(trainer.current_epoch),
        parameters=_trainable_parameters(state.model),
        finished_at=datetime.now(timezone.utc).isoformat(),
        config=_config_dict(cfg),
    )
    if summary.finished and cfg.get("export") and hasattr(state.model, "export_pretrained"):
        summary.update(pretrained_dir=summary.relative(_export(state.model, out_dir / "pretrained")))
    _write_summary(summary)
    close_loggers(state.loggers, failed=not summary.finished)  # one W&B run per run


def refuse_finished_run(out_dir: Path, ckpt_path, overwrite: bool) -> None:
    """FileExistsError when `out_dir` holds a finished run and this one would start afresh
    (no `ckpt_path`, no `overwrite=true`): its checkpoints and export would be replaced."""
    if ckpt_path not in (None, "") or overwrite or not RunSummary.exists(out_dir):
        return
    try:
        earlier = RunSummary.read(out_dir)
    except DataError:
        return  # unreadable: `RunSummary.start` keeps the file aside
    if earlier.finished:
        raise FileExistsError(
            f"{out_dir} holds a finished {earlier.model} run (summary.json, checkpoints/, "
            "pretrained/): refusing to start a fresh run over it. Resume or extend it with "
            "ckpt_path=last, start elsewhere with a new hydra.run.dir=<folder>, or replace its "
            "checkpoints with overwrite=true (its summary is kept under `attempts`)")


def _trainable_parameters(model) -> int | None:
    """Trainable parameters of the module (a prior's frozen autoencoder is not counted)."""
    if model is None:
        return None
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


RESUME_FILE = Path("checkpoints") / "last.ckpt"


def resolve_ckpt_path(value, run_dir: str | Path) -> str | None:
    """The checkpoint `trainer.fit` resumes from, for the config key `ckpt_path`.

    - None: start fresh.
    - "last": the run folder's newest checkpoint to resume from: `checkpoints/last.ckpt`
      (rewritten after every validation) or Lightning's `hpc_ckpt_<n>.ckpt` (written into the
      run folder on SLURM's requeue signal, see README), whichever is newer. Missing: a
      FileNotFoundError naming `ckpt_path` and the folder (a resumed run must run in the
      interrupted run's folder, e.g. `hydra.run.dir=<run folder>`). Lightning's own
      `ckpt_path="last"` looks in the same folder but starts from scratch with a warning when
      nothing is there, and only inside the training processes; this fails before anything runs.
    - "auto": as "last", but start fresh when there is no checkpoint yet: for a job a scheduler
      may requeue (the first start has none, a requeued one resumes).
    - "hpc", "registry", "best": passed to Lightning as they are.
    - a path: checked with `check_checkpoint` (readable, not truncated).
    Returns the path as a string, a Lightning keyword, or None.
    """
    if value is None or str(value) == "":
        return None
    value = str(value)
    if value in ("hpc", "registry", "best"):
        return value
    if value not in ("last", "auto"):
        return str(check_checkpoint(value, key="ckpt_path"))
    run_dir = Path(run_dir)
    found = [p for p in [run_dir / RESUME_FILE, *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if not found:
        if value == "auto":
            log.info("ckpt_path=auto: no checkpoint in %s yet, starting fresh", run_dir)
            return None
        raise FileNotFoundError(
            f"ckpt_path=last: no checkpoint to resume from in the run folder {run_dir} (looked "
            f"for {RESUME_FILE} and hpc_ckpt_*.ckpt). Resume in the interrupted run's folder "
            "(hydra.run.dir=<run folder>), give the file (ckpt_path=<run folder>/"
            f"{RESUME_FILE}), or use ckpt_path=auto to start fresh when there is none")
    newest = max(found, key=lambda p: p.stat().st_mtime)
    log.info("ckpt_path=%s: resuming from %s", value, newest)
    return str(check_checkpoint(newest, key="ckpt_path"))


def check_checkpoint(path: str | Path, key: str = "ckpt_path") -> Path:
    """Check that `path` is a readable PyTorch checkpoint before Lightning loads it.

    torch's own errors for a corrupt or truncated file name no file and suggest
    `weights_only=False` (loading untrusted code); this raises FileNotFoundError or DataError
    naming the config `key`, the file and what is wrong, and ValueError when the file holds
    pickled objects beyond tensors and plain data (`mdvq.core.artifacts.load_checkpoint`: it is
    never unpickled). Reads the whole file (the zip archive's CRC check, then a weights-only
    load). Returns the path.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{key}: no checkpoint at {path}")
    if not path.is_file():
        raise DataError(path, f"{key}: is a folder, not a checkpoint file (e.g. give "
                        "<run folder>/checkpoints/last.ckpt)")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise DataError(path, f"{key}: {problem}")
    # weights-only: a pickle that would run code is refused here
    load_checkpoint(path, key, archive_checked=True)
    return path


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
    """Write summary.json; when that fails (a full disk) log the record itself, then raise."""
    try:
        log.info("summary: %s", summary.write())
    except OSError as err:
        log.error("could not write %s (%s); the run's record: %s", summary.path, err,
                  json.dumps(summary.data, default=str)[:20000])
        raise


def _floats(metrics) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _checkpoints(trainer, summary: RunSummary) -> dict[str, str | None]:
    """{"best": path, "last": path} of the trainer's checkpoint callbacks: only files inside
    the run folder that are whole (a checkpoint cut short by a full disk is never named)."""
    found = {"best": _best_checkpoint(trainer), "last": _last_checkpoint(trainer)}
    kept = {}
    for which, path in found.items():
        problem = checkpoint_problem(path) if path else None
        if path and (problem or not summary.contains(path)):
            log.warning("%s checkpoint %s not recorded: %s", which, path,
                        problem or f"outside the run folder {summary.run_dir}")
            path = None
        kept[which] = path
    return kept


def _best_checkpoint(trainer) -> str | None:
    cb = getattr(trainer, "checkpoint_callback", None)
    path = (cb.best_model_path or None) if cb is not None else None
    return path if path and Path(path).is_file() else None


def _last_checkpoint(trainer) -> str | None:
    """The newest checkpoint written to resume from: a callback's `last_model_path`, the
    latest file of a callback without a monitor (conf/callbacks/last_checkpoint.yaml), or a
    `last.ckpt` in a callback's folder (a `ddp_spawn` worker sends none of these paths back to
    the main process, only the best one)."""
    found = []
    for cb in getattr(trainer, "checkpoint_callbacks", None) or []:
        found.append(getattr(cb, "last_model_path", None))
        if getattr(cb, "monitor", "") is None:
            found.append(getattr(cb, "best_model_path", None))
        if getattr(cb, "dirpath", None):
            found.append(Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}")
    existing = {Path(p) for p in found if p and Path(p).is_file()}
    return str(max(existing, key=lambda p: p.stat().st_mtime)) if existing else None


def _kept(checkpoints: dict) -> str:
    """Where the run's checkpoints are, for a log line; says so when none was written."""
    where = [f"{k}: {v}" for k, v in checkpoints.items() if v]
    return "checkpoints kept: " + ", ".join(where) if where else "no checkpoint was written"


