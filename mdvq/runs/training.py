"""Train one configured model: fit, test, export, and always leave a `summary.json`.

`train(cfg)` is the library behind `python -m mdvq.run` (and behind every stage of the phase-1
and routes experiments, the TSTR classifier, ...): it builds the datamodule, model, callbacks,
loggers and trainer from a composed config with Hydra's `instantiate`, fits, tests the best
checkpoint, exports the model in diffusers' format and writes the run summary
(`mdvq.core.summary.RunSummary`).
"""

from __future__ import annotations

import logging
import signal
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import torch.distributed as dist
from hydra.utils import get_class
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mdvq.callbacks.csv_log import KeepCSVColumns
from mdvq.callbacks.process_group import ReleaseProcessGroup
from mdvq.core.compose import build, instantiate_collection
from mdvq.core.errors import DataError
from mdvq.core.precision import trainer_precision
from mdvq.core.summary import RunSummary
from mdvq.utils.loggers import close_loggers

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """Fit, test and export one model as configured; returns the run summary (also written).

    Every run leaves a `summary.json`, also one that fails while being built (a bad config):
    status `failed` or `interrupted` (Ctrl-C, SIGTERM) with the error, then the error is raised.
    A run stopped by SIGTERM (a scheduler's time limit, SLURM preemption) records
    `signal: "SIGTERM"` and the checkpoint to resume from, and raises Lightning's
    `SIGTERMException` with exit status 143 (128 + 15), so a scheduler sees a failed job and can
    requeue it; Ctrl-C likewise exits 130 (128 + 2). Checkpoints saved are at epoch ends.
    Under `ddp_spawn` (trainer=ddp_cpu) the main process passes the SIGTERM on to its worker
    processes, which stop the same way. `ckpt_path=last` resumes the interrupted run in its own
    run folder (`resolve_ckpt_path`).
    """
    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary.new(out_dir, model_kind(cfg))
    summary.update(run_dir=str(out_dir.resolve()))
    metrics: dict[str, float] = {}
    checkpoints = None
    datamodule = model = trainer = None
    received: dict[str, str] = {}
    previous_handler = _stop_on_sigterm(lambda: trainer, received)
    loggers: list = []
    try:
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), out_dir)
        L.seed_everything(cfg.seed, workers=True)
        datamodule = build(cfg.data.datamodule)
        model = build(cfg.model)
        # A model that trains on something derived from the spectrograms (a prior on cached code
        # maps or latents) wraps the datamodule: `model.wrap_datamodule(dm) -> DataModule`.
        if callable(getattr(model, "wrap_datamodule", None)):
            datamodule = model.wrap_datamodule(datamodule)
        callbacks = instantiate_collection(cfg.get("callbacks")) + [
            KeepCSVColumns(), ReleaseProcessGroup(), StopTogetherOnSigterm()]
        loggers = instantiate_collection(cfg.get("logger"))
        precision = trainer_precision(cfg.trainer)
        summary.update(precision=precision)
        trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                        precision=precision)
        for lg in loggers:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(_floats(trainer.callback_metrics))
        # read before testing: `test(ckpt_path="best")` restores the checkpoint callback's state
        # saved in the best file, whose `last_model_path` is empty when it is from epoch 0
        checkpoints = _checkpoints(trainer)
        if cfg.get("test"):
            ckpt = "best" if checkpoints["best"] else None
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
            metrics.update(_floats(trainer.callback_metrics))
        summary.update(status="finished")
    except Exception as err:
        if not received:
            checkpoints = checkpoints or _checkpoints(trainer)
            summary.update(status="failed", error=f"{type(err).__name__}: {err}")
            log.error("run failed: %s (%s)", err, _kept(checkpoints))
            raise
        # a `ddp_spawn` worker stopped by the forwarded SIGTERM: the main process sees it fail
        checkpoints = checkpoints or _checkpoints(trainer)
        summary.update(status="interrupted", signal=received["signal"],
                       error=_interruption(err, received["signal"], trainer, checkpoints))
        log.error("run %s", summary.data["error"])
        raise SIGTERMException(128 + signal.SIGTERM) from err
    except BaseException as err:  # Ctrl-C, SIGTERM (timeout, SLURM preemption)
        checkpoints = checkpoints or _checkpoints(trainer)
        name = _signal_name(err)
        summary.update(status="interrupted", signal=name,
                       error=_interruption(err, name, trainer, checkpoints))
        log.error("run %s", summary.data["error"])
        if name == "SIGTERM":
            raise SIGTERMException(128 + signal.SIGTERM) from err
        if name == "SIGINT":
            raise SystemExit(128 + signal.SIGINT) from err
        raise
    finally:
        _restore_sigterm(previous_handler)
        has_data = getattr(datamodule, "data_key", None) and hasattr(datamodule, "describe")
        checkpoints = checkpoints or _checkpoints(trainer)
        described = datamodule.describe() if has_data else None
        summary.update(
            metrics=metrics,
            data_key=getattr(datamodule, "data_key", None),
            data=described,
            skipped_files=(described or {}).get("skipped_files"),
            checkpoints={k: summary.relative(v) for k, v in checkpoints.items()},
            wall_time_s=round(time.time() - started, 2),
            parameters=_trainable_parameters(model),
            finished_at=datetime.now(timezone.utc).isoformat(),
            config=_config_dict(cfg),
        )
        if summary.finished and cfg.get("export") and hasattr(model, "export_pretrained"):
            summary.update(pretrained_dir=summary.relative(_export(model, out_dir / "pretrained")))
        _write_summary(summary)
        close_loggers(loggers, failed=not summary.finished)  # one W&B run per run, not per process
    return summary.data


class StopTogetherOnSigterm(Callback):
    """In a multi-process run, marks a SIGTERM without a collective inside the signal handler.

    Lightning's SIGTERM handler broadcasts a tensor from rank 0 inside the handler; when the
    ranks are signalled at different points of a batch (SLURM signals every task, the main
    process of `ddp_spawn` forwards the signal to its workers), that broadcast meets another
    collective (a gradient all-reduce) and the job hangs instead of stopping. Once Lightning has
    installed its handler (before the sanity check and before training) this one replaces it
    in processes of a group of several: it only marks the signal (and, in the process that
    launched the others with `ddp`, passes it on to them, as Lightning's does). Lightning's loop
    broadcasts the mark at the start of the next batch, so every rank stops there together
    (SIGTERMException, exit 143). Lightning restores the previous handler at the end of the run.
    """

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        """Install the handler before the sanity check's validation batches."""
        self._install(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        """Install the handler (again: Lightning re-registers its own before each stage)."""
        self._install(trainer)

    @staticmethod
    def _install(trainer) -> None:
        if not (dist.is_available() and dist.is_initialized() and trainer.world_size > 1):
            return
        connector = trainer._signal_connector

        def handler(signum, frame):
            if not connector.received_sigterm:
                log.info("rank %d: SIGTERM, stopping after the current batch", trainer.global_rank)
                launcher = trainer.strategy.launcher
                if launcher is not None and trainer.global_rank == 0:
                    launcher.kill(signum)  # `ddp` children (a spawn worker has no processes)
            connector.received_sigterm = True

        try:
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            pass


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
    naming the config `key`, the file and what is wrong. Reads the whole file once (the zip
    archive's CRC check). Returns the path.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{key}: no checkpoint at {path}")
    if not path.is_file():
        raise DataError(path, f"{key}: is a folder, not a checkpoint file (e.g. give "
                        "<run folder>/checkpoints/last.ckpt)")
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        raise DataError(path, f"{key}: not a PyTorch checkpoint, or truncated ({size} bytes; "
                        "torch.save writes a zip archive). Resume from another checkpoint, e.g. "
                        "the run's checkpoints/last.ckpt or its best epoch_*.ckpt")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise DataError(path, f"{key}: corrupt checkpoint archive ({err})") from err
    if bad is not None:
        raise DataError(path, f"{key}: corrupt checkpoint: entry {bad!r} fails its CRC check "
                        "(damaged while copied or written?)")
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        raise DataError(path, f"{key}: a zip archive without data.pkl, not a torch.save file")
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
    log.info("summary: %s", summary.write())


def _floats(metrics) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _checkpoints(trainer) -> dict[str, str | None]:
    """{"best": path, "last": path} of the trainer's checkpoint callback (existing files only)."""
    return {"best": _best_checkpoint(trainer), "last": _last_checkpoint(trainer)}


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


def _signal_name(err: BaseException) -> str | None:
    """"SIGTERM" for Lightning's SIGTERMException, "SIGINT" for Ctrl-C (Lightning turns a
    KeyboardInterrupt inside fit into `SystemExit(1)`), else None."""
    if isinstance(err, SIGTERMException):
        return "SIGTERM"
    if isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt):
        return "SIGINT"
    return None


def _interruption(err: BaseException, name: str | None, trainer, checkpoints: dict) -> str:
    """The summary's error text of an interrupted run: the signal, where it stopped, and the
    checkpoint to resume from."""
    if name is None:
        return f"{type(err).__name__}: {err}"
    where = ""
    if trainer is not None and trainer.state.status is not None:
        where = f" at epoch {trainer.current_epoch}, step {trainer.global_step}"
    last = checkpoints.get("last")
    then = (f"resume with ckpt_path={last}" if last else
            "no checkpoint was written yet (one is saved at the end of each epoch): run again")
    return f"stopped by {name}{where}; {then}"


def _stop_on_sigterm(get_trainer, received: dict | None = None):
    """Install a SIGTERM handler that raises Lightning's SIGTERMException while no trainer is
    running (data generation, model building), so a run stopped then still writes its summary
    and exits 143. While fitting, Lightning's own handler (which calls this one too) only marks
    the signal and stops the loop after the current batch. In the main process of `ddp_spawn`,
    where Lightning installs no handler (its loop runs in the spawned workers), it sends the
    signal on to the workers, notes it in `received["signal"]`, waits for them to stop after
    their current batch (at most `_WORKER_STOP_S`) and raises SIGTERMException: the workers
    leave with status 0 and no results, for which Lightning's main process would otherwise
    wait forever. Returns the previous handler (`_NOT_INSTALLED` outside the main thread,
    where handlers cannot be set)."""

    def handler(signum, frame):
        trainer = get_trainer()
        if trainer is None or trainer.state.status != TrainerStatus.RUNNING:
            raise SIGTERMException()
        launcher = getattr(trainer.strategy, "launcher", None)
        if isinstance(launcher, _MultiProcessingLauncher) and launcher.procs:
            if received is not None:
                received["signal"] = "SIGTERM"
            launcher.kill(signum)
            for proc in launcher.procs:
                proc.join(_WORKER_STOP_S)
            raise SIGTERMException()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return _NOT_INSTALLED
    return signal.SIG_DFL if previous is None else previous  # None: set outside Python


_NOT_INSTALLED = object()
_WORKER_STOP_S = 300  # seconds the main process of ddp_spawn waits for its workers to stop


def _restore_sigterm(previous) -> None:
    """Put back the SIGTERM handler `_stop_on_sigterm` replaced."""
    if previous is not _NOT_INSTALLED:
        signal.signal(signal.SIGTERM, previous)
