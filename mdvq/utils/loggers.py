"""Logger factories: W&B that never blocks or fails without a network or an account, and that
organises a sweep for review (one run per job, grouped by sweep, named by the swept values)."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from mdvq.utils import metric_keys

log = logging.getLogger(__name__)

#: W&B `job_type` of each model kind (`model_kind` of the LightningModule).
JOB_TYPES = {"vqvae": "autoencoder", "klvae": "autoencoder", "vqdiffusion": "prior",
             "latentdiffusion": "prior", "classifier": "classifier"}
#: Short names of swept keys in run names: `model.num_vq_embeddings=1024` -> `K=1024`.
SHORT_KEYS = {"num_vq_embeddings": "K", "commitment_cost": "commitment", "model/codebook": "codebook"}
#: Epoch-level metrics plotted against `epoch` (W&B `define_metric` step metric).
EPOCH_METRICS = ("val/*", "test/*", metric_keys.TRAIN_DEAD_CODES, metric_keys.TRAIN_LOSS_EPOCH,
                 "lr-*")
#: Summary of the keys a dashboard sorts on: the best PSNR (dB, higher is better), the lowest
#: variational bound (nats per token), the best accuracy; usage and perplexity keep their last value.
SUMMARIES = {metric_keys.VAL_PSNR: "max", "val/ssim": "max", metric_keys.VAL_VB: "min",
             metric_keys.VAL_ACC: "max", metric_keys.VAL_CODEBOOK_USAGE: "last",
             "val/perplexity": "last"}


def wandb_account_configured() -> bool:
    """True when W&B credentials exist: WANDB_API_KEY, or an api.wandb.ai entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.exists() and netrc.netrc(path).authenticators("api.wandb.ai") is not None
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_offline(offline: bool | None = None) -> bool:
    """Whether W&B runs offline: `offline` when given, else `WANDB_MODE` (offline/dryrun: yes,
    online: no), else offline unless an account is configured."""
    if offline is not None:
        return bool(offline)
    mode = os.environ.get("WANDB_MODE")
    return mode in ("offline", "dryrun") or (mode != "online" and not wandb_account_configured())


def short_key(key: str) -> str:
    """`model.num_vq_embeddings` -> `K`, `model/codebook` -> `codebook`, else the last part."""
    key = key.lstrip("+~")
    if key in SHORT_KEYS:
        return SHORT_KEYS[key]
    last = key.rsplit(".", 1)[-1]
    return SHORT_KEYS.get(last, last)


def swept_keys(sweep_overrides: list[str], sweeper_params: dict | None = None) -> list[str]:
    """The keys a sweep varies: command-line overrides that Hydra's parser calls sweeps
    (`a=1,2`, `range(...)`, `choice(...)`; a list value `[8,16]` is not one) and the keys of the
    sweeper's `params` (an Optuna search space, or the basic sweeper's)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(list(sweep_overrides))
            if o.is_sweep_override()]
    return keys + [k for k in (sweeper_params or {}) if k not in keys]


def job_name(job_overrides: list[str], keys: list[str]) -> str | None:
    """The run name of a sweep job: its values of the swept `keys`, shortened and in sweep
    order, e.g. `K=1024,commitment=0.25,codebook=healthy`; None when none is swept."""
    values = {}
    for override in job_overrides:
        key, _, value = override.partition("=")
        values[key.lstrip("+~")] = value
    parts = [f"{short_key(k)}={values[k]}" for k in keys if k in values]
    return ",".join(parts) or None


def sweep_identity(task_name: str | None = None) -> dict:
    """`{"group": ..., "name": ...}` of the current Hydra multirun job, else {}.

    The group is `<task_name>/<sweep folder name>` (e.g. `train/2024-05-01_10-00-00`), shared by
    every job of the sweep; the name is the job's swept values (`job_name`), from the sweep's
    `multirun.yaml` (the command line as given) and the sweeper's search space; `job<N>` when
    neither names a swept key.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):  # not inside a Hydra app
        return {}
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return {}
    sweep_dir = Path(hydra_cfg.sweep.dir)
    sweep_overrides: list[str] = []
    try:
        from omegaconf import OmegaConf

        saved = OmegaConf.load(sweep_dir / "multirun.yaml")
        sweep_overrides = list(saved.hydra.overrides.task)
    except (OSError, AttributeError, ValueError, TypeError) as err:
        log.debug("no multirun.yaml in %s (%s)", sweep_dir, err)
    params = hydra_cfg.sweeper.get("params") if "sweeper" in hydra_cfg else None
    keys = swept_keys(sweep_overrides, dict(params) if params else None)
    name = job_name(list(hydra_cfg.overrides.task), keys) or f"job{hydra_cfg.job.num}"
    return {"group": f"{task_name or hydra_cfg.job.name}/{sweep_dir.name}", "name": name}


def model_kind_of(target: str | None) -> str | None:
    """`model_kind` of the LightningModule class `target` (a dotted path), else None."""
    if not target:
        return None
    try:
        from hydra.utils import get_class

        return getattr(get_class(target), "model_kind", None)
    except (ImportError, ValueError, AttributeError):
        return None


def finish_open_wandb_run() -> bool:
    """Finish a W&B run still open in this process (an earlier job's); True when one was."""
    import wandb

    if wandb.run is None:
        return False
    log.info("finishing the still open W&B run %s of an earlier job", wandb.run.name)
    wandb.finish()
    return True


def close_loggers(loggers, failed: bool = False) -> None:
    """Finish the W&B run of each WandbLogger in `loggers` (exit code 1 when `failed`), so the
    next run in this process (the next job of a multirun, the next stage of an experiment)
    starts its own run instead of reusing this one. Other loggers are left as they are."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers or ():
        if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
            experiment = logger._experiment
            if callable(getattr(experiment, "finish", None)):
                experiment.finish(exit_code=1 if failed else 0)
            logger._experiment = None


def define_review_metrics(run) -> None:
    """`define_metric` on a W&B run: epoch-level metrics against `epoch` and the summaries
    (`SUMMARIES`) a dashboard sorts on."""
    if not callable(getattr(run, "define_metric", None)):
        return
    run.define_metric("epoch")
    for pattern in EPOCH_METRICS:
        run.define_metric(pattern, step_metric="epoch")
    for key, summary in SUMMARIES.items():
        run.define_metric(key, step_metric="epoch", summary=summary)


def _review_logger_class():
    from lightning.pytorch.loggers import WandbLogger

    class ReviewWandbLogger(WandbLogger):
        """A `WandbLogger` whose run, once started, has the review metrics defined
        (`define_review_metrics`)."""

        _review_defined = False

        @property
        def experiment(self):
            run = super().experiment
            if not self._review_defined:
                self._review_defined = True
                define_review_metrics(run)
            return run

    return ReviewWandbLogger


def wandb_logger(project: str = "mdvq", save_dir: str = ".", offline: bool | None = None,
                 name: str | None = None, group: str | None = None, job_type: str | None = None,
                 tags: list[str] | tuple[str, ...] = (), model_target: str | None = None,
                 task_name: str | None = None, **kwargs):
    """A Lightning `WandbLogger`, offline unless an account is configured (or `offline` says so).

    `WANDB_MODE=offline|online|disabled` in the environment wins over the automatic choice.
    Offline runs are written under `<save_dir>/wandb/` and can be uploaded with `wandb sync`.

    Every call starts a new W&B run: a run still open in this process (an earlier multirun job)
    is finished first. In a Hydra multirun, `group` defaults to the sweep
    (`<task_name>/<sweep folder>`) and `name` to the job's swept values
    (`K=1024,commitment=0.25,codebook=healthy`); otherwise `name` defaults to `task_name`.
    `job_type` defaults to the stage of `model_target`'s model kind (`JOB_TYPES`: autoencoder,
    prior, classifier) and the tag `model:<kind>` is added to `tags`.
    Extra keyword arguments go to `WandbLogger` (entity, log_model, ...).
    """
    offline = wandb_offline(offline)
    if offline:
        log.info("W&B runs offline (no account configured): files in %s/wandb", save_dir)
        kwargs["log_model"] = False  # artifacts cannot be uploaded offline
    finish_open_wandb_run()
    sweep = sweep_identity(task_name)
    kind = model_kind_of(model_target)
    tags = list(tags or []) + ([f"model:{kind}"] if kind else [])
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs.update(name=name or sweep.get("name") or task_name, group=group or sweep.get("group"),
                  job_type=job_type or JOB_TYPES.get(kind or ""), tags=tags or None)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return _review_logger_class()(project=project, save_dir=str(save_dir), offline=offline, **kwargs)


# ---- tables at the end of a stage (decision, routes, generated samples) -------------------------
def wandb_rows_table(rows: list[dict]):
    """A `wandb.Table` of dict rows (the decision, the routes table): the columns are the union
    of the rows' keys in first-seen order; lists and dicts become JSON text."""
    import json

    import wandb

    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value):
        return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value

    return wandb.Table(columns=columns, data=[[cell(r.get(c)) for c in columns] for r in rows])


def wandb_samples_table(images, asked, predicted, confidence, class_names):
    """A `wandb.Table` of generated samples: `image` (positive Doppler up), `asked` (the class
    asked for), `classified` (the in-domain classifier's top-1 class), `confidence` (its
    probability, [0,1]) and `correct`.

    images `(N, 1, F, T)` in [0,1] (rows in ascending Doppler); asked, predicted `(N,)` class
    indices into `class_names`; confidence `(N,)`.
    """
    import numpy as np
    import wandb

    from mdvq.utils.pixels import to_pixels

    images = np.asarray(images)
    if images.ndim != 4 or not (len(images) == len(asked) == len(predicted) == len(confidence)):
        raise ValueError(f"samples table: images (N, 1, F, T) and N labels, predictions and "
                         f"confidences expected, got {images.shape}, {len(asked)}, "
                         f"{len(predicted)}, {len(confidence)}")
    table = wandb.Table(columns=["image", "asked", "classified", "confidence", "correct"])
    for img, a, p, c in zip(images, asked, predicted, confidence):
        table.add_data(wandb.Image(to_pixels(img[0])), class_names[int(a)], class_names[int(p)], float(c),
                       int(a) == int(p))
    return table


def log_review_run(save_dir: str | os.PathLike, name: str, job_type: str, tables: dict,
                   summary: dict | None = None, group: str | None = None, project: str = "mdvq",
                   offline: bool | None = None) -> Path:
    """One short W&B run holding `tables` ({key: wandb.Table}) and `summary` ({key: number}),
    e.g. the phase-1 decision (job_type "evaluation") or an evaluation's samples; finished
    before returning. Offline as `wandb_logger`; files under `<save_dir>/wandb/`. Returns the
    run's folder."""
    import wandb

    offline = wandb_offline(offline)
    finish_open_wandb_run()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, name=name, job_type=job_type, group=group,
                     dir=str(save_dir), mode="offline" if offline else "online")
    try:
        run.log(dict(tables))
        if summary:
            run.summary.update({k: v for k, v in summary.items() if v is not None})
    finally:
        run.finish()
    return Path(run.dir).parent
