"""Experiments made of several training stages, each an ordinary run folder with its summary.

`phase1`: the KL-VAE, then the VQ-VAE on the same data and split, then the decision rule
(`decision.json` in the experiment folder), with the thresholds of `conf/decision/`.
`routes`: the generation routes end to end (autoencoders, the phase-1 rule, the classifier,
the prior of every row of `routes.sampling.priors` (`ROUTE_ROWS`), sampling, evaluation),
written as `routes.json` / `routes.md` with `real_examples.png` (docs/routes.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mdvq.callbacks.budget import budget_like
from mdvq.core.compose import compose_config
from mdvq.core.summary import RunSummary, find_runs, free_name
from mdvq.evaluation.decision import decide_runs, format_decision, write_decision
from mdvq.evaluation.physical_fidelity import route_summary as physics_summary
from mdvq.runs.training import RESUME_FILE, train
from mdvq.utils.metric_keys import TEST_ACC, TEST_CODEBOOK_USAGE, TEST_PSNR, TEST_SSIM
from mdvq.utils.tables import markdown_table

log = logging.getLogger(__name__)


def user_overrides(drop: tuple[str, ...] = ("model", "task", "experiment"),
                   drop_below: tuple[str, ...] = ()) -> list[str]:
    """The command line's Hydra overrides, less the keys in `drop` (which each stage sets
    itself) and every key below a node of `drop_below` (e.g. "model" drops `model.lr=...`)."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside a Hydra app (a direct call from Python)
        return []
    kept = []
    for o in overrides:
        key = o.split("=")[0].lstrip("+~")
        if key in drop or any(key.startswith(node + ".") for node in drop_below):
            continue
        kept.append(o)
    return kept


def phase1(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Train the KL-VAE, then the VQ-VAE, on the same data and split; write `decision.json`.

    `overrides` (default: the command line's) are applied to both stages. Returns the two
    run summaries and the decision (as a dict)."""
    out_dir = Path(cfg.paths.output_dir)
    extra = user_overrides() if overrides is None else list(overrides)
    runs = {}
    for name in ("klvae", "vqvae"):  # a finished stage is reused, an interrupted one resumed
        runs[name] = train_stage(name, extra + [f"model={name}"], out_dir / name)
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


# ---------------------------------------------------------------------------------- routes
#: the stages every routes run trains before its priors, in order: (stage, Hydra overrides
#: choosing it); both autoencoders always train, so the phase-1 rule is decided as in phase 1
BASE_STAGES = (
    ("klvae", ["model=klvae"]),
    ("vqvae", ["model=vqvae"]),
    ("classifier", ["experiment=classifier"]),
)
#: the latent of each autoencoder stage, as the factor analysis of routes.md names it
LATENTS = {"klvae": "kl", "vqvae": "vq"}


@dataclass(frozen=True)
class RouteRow:
    """One row of `experiment=routes`: an autoencoder stage, a prior stage trained on it, and how
    that prior is sampled. Rows naming the same `prior` stage share one training of it (e.g.
    `hybrid` and `hybrid_unsnapped`: one prior, sampled twice).

    Attributes:
        name: the row's key in `routes.sampling.priors`, `routes.json` (`route`) and its folders
            (`samples_<name>`, `eval_<name>`).
        label: what the row compares, in words (shown in routes.md and the report).
        autoencoder: the autoencoder stage the prior reads (`klvae` or `vqvae`).
        prior: the prior stage, also its folder name and its key in `routes.stage_overrides`,
            `routes.sampling.steps` / `.guidance`.
        choose: the Hydra overrides choosing the prior (e.g. `experiment=latentdiffusion`).
        autoencoder_key: the model key that receives the autoencoder's run folder.
        prior_family: `continuous` (diffusion on real-valued latents) or `discrete` (on codes).
        sampling: per-row sampling options: `sampler` / `truncation` go to `sample_prior`, any
            other key (e.g. `decode_quantized`) is set on the loaded prior.
    """

    name: str
    label: str
    autoencoder: str
    prior: str
    choose: tuple[str, ...]
    autoencoder_key: str
    prior_family: str
    sampling: dict = field(default_factory=dict)

    @property
    def latent(self) -> str:
        """`kl` (a Gaussian latent) or `vq` (the VQ-VAE's latent) (`LATENTS`)."""
        return LATENTS[self.autoencoder]

    @property
    def experiment(self) -> str | None:
        """The `experiment=` config choosing the prior, if any."""
        return next((o.split("=", 1)[1] for o in self.choose if o.startswith("experiment=")),
                    None)


#: every row experiment=routes knows; `routes.sampling.priors` picks which run, in its order
ROUTE_ROWS = (
    RouteRow("kl", "KL latent + latent diffusion", "klvae", "latentdiffusion",
             ("experiment=latentdiffusion",), "model.autoencoder", "continuous"),
    RouteRow("vq", "VQ latent + VQ-Diffusion", "vqvae", "vqdiffusion",
             ("experiment=vqdiffusion",), "model.vqvae", "discrete"),
    RouteRow("hybrid", "VQ latent + continuous prior (hybrid)", "vqvae", "hybrid",
             ("experiment=latentdiffusion",), "model.autoencoder", "continuous"),
    RouteRow("hybrid_unsnapped", "VQ latent + continuous prior (hybrid, decoded unsnapped)",
             "vqvae", "hybrid", ("experiment=latentdiffusion",), "model.autoencoder",
             "continuous", {"decode_quantized": False}),
    RouteRow("maskedtokens", "VQ latent + masked-token prior", "vqvae", "maskedtokens",
             ("experiment=maskedtokens",), "model.vqvae", "discrete"),
)
#: sampling options that are arguments of `sample_prior` (the others are set on the prior)
SAMPLER_OPTIONS = ("sampler", "truncation")


def select_rows(names, rows=ROUTE_ROWS) -> list[RouteRow]:
    """The rows named by `routes.sampling.priors` (a list, or one name), in its order;
    ValueError naming the key and the known rows for an unknown or repeated name, an empty
    list, two rows sharing a prior stage but training it differently, or a row whose prior
    experiment this checkout lacks (`conf/experiment/<name>.yaml`)."""
    from mdvq.core.compose import config_dir

    known = {r.name: r for r in rows}
    names = [names] if isinstance(names, str) else list(names or [])
    if not names:
        raise ValueError(f"routes.sampling.priors is empty: name at least one row of "
                         f"{list(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"routes.sampling.priors: unknown rows {unknown}; the known rows are "
                         f"{list(known)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"routes.sampling.priors names {repeated} more than once")
    chosen = [known[n] for n in names]
    for row in chosen:
        first = next(r for r in chosen if r.prior == row.prior)
        if (first.autoencoder, first.choose, first.autoencoder_key) != (
                row.autoencoder, row.choose, row.autoencoder_key):
            raise ValueError(f"routes.sampling.priors: rows {first.name!r} and {row.name!r} share "
                             f"the prior stage {row.prior!r} but train it differently (autoencoder "
                             "or overrides); give the second its own prior stage")
        experiment = row.experiment
        if experiment and not (config_dir() / "experiment" / f"{experiment}.yaml").is_file():
            raise ValueError(f"routes.sampling.priors: row {row.name!r} needs "
                             f"experiment={experiment}, which this checkout lacks "
                             f"({config_dir() / 'experiment' / (experiment + '.yaml')})")
    return chosen


def prior_budget_overrides(budget) -> list[str]:
    """The overrides `routes.prior_budget` adds to every prior stage: None keeps each prior's own
    `callbacks.training_budget.min_steps`; an integer >= 1 sets it for all (optimiser steps)."""
    if budget is None:
        return []
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"routes.prior_budget must be null or an integer >= 1 (optimiser "
                         f"steps), got {budget!r}")
    return [f"callbacks.training_budget.min_steps={budget}"]


def apply_sampling_options(module, row: RouteRow) -> dict:
    """Set the row's prior settings (`row.sampling` less `SAMPLER_OPTIONS`) on a loaded prior:
    through its `set_<key>(value)` method where it has one (e.g. the latent-diffusion prior's
    `set_decode_quantized`, which checks the autoencoder is a VQ-VAE), else in its `hparams` and
    as an attribute; returns the `sample_prior` arguments. ValueError naming the row when the
    prior has no such setting."""
    kwargs = {}
    for key, value in row.sampling.items():
        if key in SAMPLER_OPTIONS:
            kwargs[key] = value
            continue
        setter = getattr(module, f"set_{key}", None)
        if callable(setter):
            setter(value)
            continue
        hparams = getattr(module, "hparams", {})
        if key not in hparams and not hasattr(module, key):
            raise ValueError(f"routes row {row.name!r}: its prior ({type(module).__name__}) has "
                             f"no setting {key!r} to sample with")
        if key in hparams:
            hparams[key] = value
        if hasattr(module, key):
            setattr(module, key, value)
    return kwargs


#: config keys that do not change what a stage trains (where it writes, what it logs, how)
_VOLATILE = ("paths", "hydra", "ckpt_path", "task_name", "callbacks", "logger", "physics")


class StageFailed(RuntimeError):
    """A stage of a multi-stage experiment failed; the message names it. Finished stages stay."""


#: callbacks that decide how long a stage trains: part of the fingerprint (a prior trained before
#: it had a step budget is trained again, not reused)
_TRAINING_LENGTH = ("training_budget",)

#: Trainer settings that change what a run prints, not what it trains: not in the fingerprint
#: (a run trained with the progress bar off is reusable by a stage that has it on)
_COSMETIC_TRAINER = ("enable_progress_bar", "enable_model_summary")


def config_fingerprint(config: dict) -> str:
    """A hash of a resolved config without where its outputs go (`paths`, ...): two runs with
    the same fingerprint trained the same model on the same data for the same length (the
    callbacks of `_TRAINING_LENGTH` count, the other callbacks and the trainer's printing settings
    `_COSMETIC_TRAINER` do not). Keys set to null count as absent (`_without_nulls`): adding an
    option with a null default keeps earlier runs reusable."""
    import hashlib
    import json

    kept = _fingerprinted(config)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fingerprinted(config: dict) -> dict:
    """The part of a resolved config that `config_fingerprint` hashes."""
    kept = {k: v for k, v in config.items() if k not in _VOLATILE}
    if isinstance(kept.get("trainer"), dict):
        kept["trainer"] = {k: v for k, v in kept["trainer"].items() if k not in _COSMETIC_TRAINER}
    callbacks = config.get("callbacks") or {}
    kept["training_length"] = {k: callbacks.get(k) for k in _TRAINING_LENGTH if k in callbacks}
    return _without_nulls(kept)


def config_differences(ours: dict, theirs: dict, limit: int = 6) -> str:
    """The fingerprinted keys where two resolved configs differ (each with its folders masked,
    `_portable`), as 'key: ours vs theirs' items joined by '; ' (at most `limit`, then how many
    more), for messages that refuse a run."""
    def flat(node, prefix=""):
        if isinstance(node, dict) and node:
            return {k: v for key, sub in node.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node}

    a, b = flat(_fingerprinted(_portable(ours))), flat(_fingerprinted(_portable(theirs)))
    diff = [f"{k}: {a.get(k, '<absent>')} vs {b.get(k, '<absent>')}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    more = f"; and {len(diff) - limit} more" if len(diff) > limit else ""
    return "; ".join(diff[:limit]) + more


def _without_nulls(node):
    """`node` without the mapping entries whose value is None or an empty mapping, at every
    depth: a key set to null or `{}` (an option at its "off"/"measured" default) fingerprints like
    an absent key, so a run made before that option existed is still recognised as the same
    config."""
    if isinstance(node, dict):
        kept = {k: _without_nulls(v) for k, v in node.items() if v is not None}
        return {k: v for k, v in kept.items() if v != {}}
    if isinstance(node, list):
        return [_without_nulls(v) for v in node]
    return node


def _resolved(cfg: DictConfig) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def _portable(config: dict) -> dict:
    """`config` with its run folder replaced by `<run>` (its own paths, e.g.
    `trainer.default_root_dir`) and the folder that holds it (the experiment folder: a routes or
    augment run, or the outputs folder of a single run) by `<exp>` (its siblings' paths: a
    prior's `model.autoencoder`, augment's `train_subset`), in every string. Runs of one config
    in two folders of any names, or a whole experiment folder renamed or copied, fingerprint
    alike."""
    run_dir = (config.get("paths") or {}).get("output_dir")
    if not run_dir:
        return config
    root = str(Path(run_dir).parent)

    def swap(node):
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        if isinstance(node, str):
            for folder, mask in ((run_dir, "<run>"), (root, "<exp>")):  # its own folder first
                if node == folder or node.startswith(folder.rstrip("/") + "/"):
                    return mask + node[len(folder):]
        return node

    return swap(config)


def _moved_fingerprint(config: dict) -> str:
    """The config fingerprint of a run, independent of the folder it was trained in."""
    return config_fingerprint(_portable(config))


def _data_key(cfg: DictConfig) -> str | None:
    """The data key (data + split) the config's datamodule gives (loads the cached data)."""
    from mdvq.core.compose import build

    datamodule = build(cfg.data.datamodule)
    datamodule.setup("fit")
    return datamodule.data_key


def upstream_override(key: str, summary: dict) -> str:
    """The Hydra override `+upstream.<key>='<finished_at>'` that ties a stage to the run it reads
    (`summary`: that run's summary data). It is part of the stage's config fingerprint, so a
    prior whose autoencoder was trained again (same folder, new weights) is not reused."""
    finished = summary.get("finished_at") or "unknown"
    return f"+upstream.{key}='{finished}'"


def train_stage(name: str, overrides: list[str], out_dir: Path) -> dict:
    """Train one stage into `out_dir`; returns its summary (with `reused`).

    - A finished run of the same config (fingerprint) and data key (data and split) there is
      reused as it is.
    - An interrupted one (SIGTERM, Ctrl-C, or killed while `running`) of the same config and data
      resumes from its `checkpoints/last.ckpt`, as `ckpt_path=last` does for a single run: one
      set of checkpoints and one continued CSV log.
    - Anything else there (another config or data key, a failed run) is moved aside to
      `<stage>.replaced-<n>` (nothing is deleted) and the stage trains afresh.
    """
    cfg = compose_config(overrides + [f"paths.output_dir={out_dir}", "task=fit"])
    if RunSummary.exists(out_dir):
        done = RunSummary.read(out_dir)
        ours = _resolved(cfg)
        # fingerprints with each run's folder masked: a stage folder moved or copied (a routes
        # folder renamed, a judge copied from another comparison) is still the same run
        same_config = _moved_fingerprint(done.config) == _moved_fingerprint(ours)
        same_data = done.data_key == _data_key(cfg)
        same = same_config and same_data
        if same and done.finished:
            log.info("stage %s reused (%s)", name, out_dir)
            return {**done.data, "reused": True}
        if same and done.status in ("interrupted", "running") and (out_dir / RESUME_FILE).is_file():
            log.info("stage %s was %s: resuming it from %s", name, done.status,
                     out_dir / RESUME_FILE)
            cfg = compose_config(overrides + [f"paths.output_dir={out_dir}", "task=fit",
                                              "ckpt_path=last"])
        else:
            if not same_data:
                why = f"of another data key ({done.data_key!r})"
            elif not same_config:
                why = f"of another config (stage vs run: {config_differences(ours, done.config)})"
            else:
                why = f"{done.status} without {RESUME_FILE} to resume from"
            aside = free_name(out_dir, ".replaced")
            out_dir.rename(aside)
            log.info("stage %s in %s is %s: moved to %s, training it again", name, out_dir, why,
                     aside.name)
    try:
        return {**train(cfg), "reused": False}
    except Exception as err:
        raise StageFailed(f"stage {name!r} failed ({type(err).__name__}: {err}); its run folder "
                          f"is {out_dir}, the finished stages are kept") from err


def reuse_stage(name: str, run: str | Path | None, overrides: list[str], out_dir: Path,
                auto_root: str | Path | None = None) -> dict | None:
    """A finished run to use instead of training stage `name` (`routes.reuse.<name>`), or None.

    `run` names a finished run folder: it must have the data key (data + split) and the config
    fingerprint the stage would train with in `out_dir`, else `ValueError` naming the key
    `routes.reuse.<name>` and both data keys / fingerprints (fingerprints with each run's own
    folder masked, see `_portable`). With `run` None and `auto_root`
    given (`routes.reuse.auto=true`: the outputs root), the newest finished run below it with the
    same fingerprint and data key is used, if any. Returns its summary with `reused: True` and
    `run_dir` (absolute path of the folder the later stages read)."""
    if run is None and auto_root is None:
        return None
    cfg = compose_config(overrides + [f"paths.output_dir={out_dir}", "task=fit"])
    fingerprint, data_key = _moved_fingerprint(_resolved(cfg)), _data_key(cfg)
    key = f"routes.reuse.{name}"
    if run is None:
        for found in find_runs(auto_root, data_key=data_key, finished_only=True):
            if _moved_fingerprint(found.config) == fingerprint:
                log.info("stage %s: reusing %s (%s=auto: same config and data key)", name,
                         found.path.parent, key)
                return {**found.data, "reused": True, "run_dir": str(found.path.parent.resolve())}
        return None
    run_dir = Path(run)
    if not RunSummary.exists(run_dir):
        raise ValueError(f"{key}={run}: not a run folder (no summary.json)")
    done = RunSummary.read(run_dir)
    if not done.finished:
        raise ValueError(f"{key}={run}: the run is {done.status}, not finished")
    if done.data_key != data_key:
        raise ValueError(f"{key}={run}: its data key {done.data_key!r} differs from the routes "
                         f"data key {data_key!r} (another data set or split)")
    theirs = _moved_fingerprint(done.config)
    if theirs != fingerprint:
        raise ValueError(f"{key}={run}: its config fingerprint {theirs!r} differs from the "
                         f"{name} stage's {fingerprint!r} (another model or training config; "
                         f"stage vs run: {config_differences(_resolved(cfg), done.config)})")
    log.info("stage %s: reusing %s (%s)", name, run_dir, key)
    return {**done.data, "reused": True, "run_dir": str(run_dir.resolve())}


def _json_stage(name: str, path: Path, inputs: dict, make) -> dict:
    """Run `make()` -> dict unless `path` holds a result made from the same `inputs`."""
    import json

    if path.is_file():
        try:
            done = json.loads(path.read_text())
        except ValueError:
            done = {}
        if done.get("inputs") == inputs:
            log.info("stage %s reused (%s)", name, path)
            return {**done, "reused": True}
    try:
        result = {"inputs": inputs, **make()}
    except Exception as err:
        raise StageFailed(f"stage {name!r} failed ({type(err).__name__}: {err}); "
                          "the finished stages are kept") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    return {**result, "reused": False}


def routes(cfg: DictConfig, overrides: list[str] | None = None,
           rows: tuple[RouteRow, ...] | list[RouteRow] = ROUTE_ROWS) -> dict:
    """The generation routes end to end on one data set and split (`experiment=routes`).

    Trains the KL-VAE and the VQ-VAE (phase 1, with the decision rule) and the in-domain
    classifier, then the prior stage of every row that `routes.sampling.priors` names (of
    `rows`, default `ROUTE_ROWS`; rows sharing a prior stage train it once), each on its row's
    autoencoder; samples every row (same classes, seed, batch, machine), evaluates each against
    the classifier, writes `real_examples.png` (real test-split examples, laid out like the
    samples grids) and `routes.json` / `routes.md` in the experiment folder. Every stage leaves
    its own folder; a stage whose result is already there for the same config (and so the same
    data key) is reused, so a second call continues from the first unfinished stage. A failing
    stage raises `StageFailed` naming it; an unknown row name a ValueError naming
    `routes.sampling.priors` before anything trains.
    """
    from mdvq.core.samples import load_samples, write_samples
    from mdvq.evaluation.classifier_run import load_classifier_run
    from mdvq.evaluation.decision import decide_runs, write_decision
    from mdvq.evaluation.generation import evaluate_generation
    from mdvq.runs.prior_sampling import load_prior, sample_prior

    out_dir = Path(cfg.paths.output_dir)
    settings = cfg.routes
    chosen = select_rows(settings.sampling.get("priors") or [], rows)
    budget = prior_budget_overrides(settings.get("prior_budget"))
    # model settings differ per stage: give them in routes.stage_overrides.<stage>
    common = (user_overrides(drop=("model", "task", "experiment"), drop_below=("model", "routes"))
              if overrides is None else list(overrides))
    stages: dict[str, dict] = {}
    reuse = settings.get("reuse") or {}
    auto_root = cfg.paths.output_root if reuse.get("auto") else None
    dirs: dict[str, Path] = {}  # the run folder of each stage (a reused one lies elsewhere)
    for name, choice in BASE_STAGES:
        extra = list(choice) + list(settings.stage_overrides.get(name) or [])
        reused = (reuse_stage(name, reuse.get(name), common + extra, out_dir / name, auto_root)
                  if name in LATENTS else None)
        stages[name] = reused or train_stage(name, common + extra, out_dir / name)
        dirs[name] = Path(reused["run_dir"]) if reused else out_dir / name
        if name == "vqvae":
            decision = decide_runs(dirs["vqvae"], dirs["klvae"],
                                   psnr_margin=cfg.decision.psnr_margin,
                                   usage_threshold=cfg.decision.usage_threshold)
            write_decision(decision, out_dir / "decision.json")
    for row in chosen:  # each prior stage once, on the autoencoder of the first row naming it
        if row.prior in stages:
            continue
        classes = (stages[row.autoencoder].get("data") or {}).get("class_names") or []
        extra = [f"{row.autoencoder_key}={dirs[row.autoencoder]}",
                 upstream_override("autoencoder", stages[row.autoencoder]),
                 f"model.num_classes={len(classes)}", *row.choose, *budget,
                 *(settings.stage_overrides.get(row.prior) or [])]
        stages[row.prior] = train_stage(row.prior, common + extra, out_dir / row.prior)
        dirs[row.prior] = out_dir / row.prior

    classifier = load_classifier_run(out_dir / "classifier")
    sampling = {k: settings.sampling[k] for k in ("n_per_class", "seed", "batch_size")}
    if sampling["n_per_class"] is None:  # as many as the real training split: TSTR vs TRTR alike
        dm = classifier.datamodule
        sampling["n_per_class"] = -(-len(dm.datasets["train"]) // len(dm.class_names))
    write_real_examples(classifier.datamodule, out_dir / REAL_EXAMPLES,
                        min(int(sampling["n_per_class"]), _grid_per_class()))
    generation = {}
    for row in chosen:
        prior_run = dirs[row.prior]
        steps = (settings.sampling.get("steps") or {}).get(row.prior)
        guidance = (settings.sampling.get("guidance") or {}).get(row.prior)
        temperature = (settings.sampling.get("temperature") or {}).get(row.prior)
        inputs = {"prior": stages[row.prior]["finished_at"], "steps": steps,
                  "guidance": guidance, **sampling,
                  # only where set, so a routes folder of today's rows stays reusable as it is
                  **({"options": dict(row.sampling)} if row.sampling else {}),
                  **({"temperature": temperature} if temperature is not None else {})}
        samples_dir = out_dir / f"samples_{row.name}"

        def draw(prior_run=prior_run, row=row, steps=steps, guidance=guidance,
                 temperature=temperature, samples_dir=samples_dir):
            module, _ = load_prior(prior_run, settings.sampling.device)
            kwargs = apply_sampling_options(module, row)
            images, labels, meta = sample_prior(module, sampling["n_per_class"], steps, guidance,
                                                sampling["seed"], sampling["batch_size"],
                                                temperature=temperature, **kwargs)
            write_samples(samples_dir, images, labels,
                          {**meta, "prior": row.prior, "route": row.name,
                           "options": dict(row.sampling)})
            return {"samples_per_second": meta["samples_per_second"], "steps": meta["steps"],
                    "guidance": meta["guidance"]}

        drawn = _json_stage(f"sample {row.name}", samples_dir / "stage.json", inputs, draw)
        eval_dir = out_dir / f"eval_{row.name}"

        def score(samples_dir=samples_dir, eval_dir=eval_dir):
            result = evaluate_generation(
                classifier, load_samples(samples_dir), eval_dir, tstr=bool(settings.tstr),
                trainer_overrides=dict(settings.tstr_trainer or {}), seed=int(cfg.seed),
                tstr_callbacks=[budget_like(classifier.config, settings.get("tstr_min_steps"))])
            tstr = result.get("tstr") or {}
            return {"metrics": result["metrics"], "judge": result.get("judge"),
                    "tstr": {k: tstr.get(k) for k in ("steps", "epochs")}}

        evaluated = _json_stage(f"evaluate {row.name}", eval_dir / "stage.json",
                                {**inputs, "classifier": stages["classifier"]["finished_at"],
                                 "tstr": bool(settings.tstr)}, score)
        generation[row.name] = {"sampling": drawn, "evaluation": evaluated}

    table = routes_table(out_dir, stages, generation, chosen, settings.get("prior_budget"))
    write_routes(table, out_dir)
    return table


#: the real examples routes writes beside its samples folders (same grid layout)
REAL_EXAMPLES = "real_examples.png"


def _grid_per_class() -> int:
    from mdvq.core.samples import GRID_PER_CLASS

    return GRID_PER_CLASS


def write_real_examples(datamodule, path: str | Path, per_class: int) -> Path:
    """A grid of the first real examples of each class of the test split, one row per class,
    laid out as the samples folders' `grid.png` (same figure function, axes in s and Hz):
    `per_class` of each, or fewer when a class has fewer (the fewest any present class has, so
    each row stays one class); images mapped from [-1, 1] to [0, 1]. Returns the PNG path."""
    import numpy as np

    from mdvq.utils import plotting
    from mdvq.utils.pixels import to_unit

    x, y = datamodule.datasets["test"].tensors
    labels = y.numpy()
    hits = [np.flatnonzero(labels == c) for c in range(len(datamodule.class_names))]
    hits = [h for h in hits if len(h)]
    n = max(1, min([int(per_class), *(len(h) for h in hits)]))
    shown = np.concatenate([h[:n] for h in hits]).astype(int)
    images = to_unit(x[shown].float()).clamp(0.0, 1.0).numpy()
    fig = plotting.sample_grid_figure(images, labels[shown], list(datamodule.class_names),
                                      datamodule.freqs_hz, datamodule.times_s, per_row=n,
                                      suptitle=f"real examples (test split), {n} per class")
    return Path(plotting.save_figure(fig, path))


def _top_vote(evaluation: dict) -> float | None:
    """The judge's largest vote share over the classes for a row's samples, in [1/K, 1] (1/K:
    balanced; near 1: the prior collapsed onto one class), or None when not recorded."""
    shares = (((evaluation.get("judge") or {}).get("samples") or {}).get("predicted_share")
              or {})
    return max(shares.values()) if shares else None


def _masked_accuracy(metrics: dict) -> float | None:
    """A discrete prior's test accuracy at masked tokens ([0, 1]: the masked-token prior's
    `test/masked_accuracy`, VQ-Diffusion's `test/masked_acc`); None for continuous priors."""
    for key in ("test/masked_accuracy", "test/masked_acc"):
        if metrics.get(key) is not None:
            return metrics[key]
    return None


def _min_steps(stage: dict) -> int | None:
    """The `callbacks.training_budget.min_steps` a stage was configured with (None: none)."""
    budget = ((stage.get("config") or {}).get("callbacks") or {}).get("training_budget") or {}
    return budget.get("min_steps") if isinstance(budget, dict) else None


def routes_table(out_dir: Path, stages: dict[str, dict], generation: dict,
                 rows: list[RouteRow] | None = None, prior_budget: int | None = None) -> dict:
    """The routes comparison as data: one row per route row (reconstruction, generation, speed,
    sizes, wall times and steps), plus the decision, the stage folders and the priors' budget."""
    import json

    rows = list(rows if rows is not None else [r for r in ROUTE_ROWS if r.name in generation])
    decision = json.loads((out_dir / "decision.json").read_text())
    out = []
    for row in rows:
        ae = stages[row.autoencoder]["metrics"]
        gen = generation[row.name]["evaluation"]["metrics"]
        sampled = generation[row.name]["sampling"]
        out.append({
            "route": row.name,
            "label": row.label,
            "latent": row.latent,
            "prior_family": row.prior_family,
            "autoencoder": row.autoencoder,
            "prior": row.prior,
            "sampling_options": dict(row.sampling) or None,
            "test_psnr_db": ae.get(TEST_PSNR),
            "test_ssim": ae.get(TEST_SSIM),
            "codebook_usage": ae.get(TEST_CODEBOOK_USAGE) if row.latent == "vq" else None,
            "conditional_accuracy": gen.get("conditional_accuracy"),
            "top_vote_share": _top_vote(generation[row.name]["evaluation"]),
            "fd_samples_test": gen.get("fd_samples_test"),
            "fd_floor": gen.get("fd_train_test_floor"),
            "fd_ratio_to_floor": gen.get("fd_ratio_to_floor"),
            "tstr_acc": gen.get("tstr_acc"),
            "trtr_acc": gen.get("trtr_acc"),
            "tstr_trtr_ratio": gen.get("tstr_trtr_ratio"),
            **physics_summary(gen),
            "token_entropy": ae.get("test/token_entropy") if row.latent == "vq" else None,
            "masked_accuracy": _masked_accuracy(stages[row.prior].get("metrics") or {}),
            "samples_per_second": sampled["samples_per_second"],
            "sampling_steps": sampled["steps"],
            "guidance": sampled["guidance"],
            "autoencoder_parameters": stages[row.autoencoder].get("parameters"),
            "prior_parameters": stages[row.prior].get("parameters"),
            "autoencoder_wall_s": stages[row.autoencoder].get("wall_time_s"),
            "prior_wall_s": stages[row.prior].get("wall_time_s"),
            "autoencoder_steps": stages[row.autoencoder].get("trained_steps"),
            "prior_steps": stages[row.prior].get("trained_steps"),
        })
    priors = list(dict.fromkeys(r.prior for r in rows))
    return {
        "rows": out,
        "decision": {k: decision.get(k) for k in ("verdict", "psnr_vq", "psnr_kl", "usage_vq",
                                                  "psnr_required", "usage_comparable",
                                                  "reasons")},
        "classifier": {"test_acc": stages["classifier"]["metrics"].get(TEST_ACC),
                       "wall_s": stages["classifier"].get("wall_time_s")},
        "data_key": stages["klvae"].get("data_key"),
        # what each stage trained: optimiser steps, epochs and wall time [s] (None: not recorded);
        # dir: the stage's folder (relative), or the absolute folder of a run reused in its place
        "stages": {name: {"dir": s.get("run_dir") or name, "reused": s.get("reused"),
                          "status": s.get("status"), "trained_steps": s.get("trained_steps"),
                          "epochs": s.get("epochs"), "wall_time_s": s.get("wall_time_s"),
                          "min_steps": _min_steps(s)}
                   for name, s in stages.items()},
        # routes.prior_budget (None: each prior its own budget) and each prior's min_steps
        "prior_budget": {"shared": prior_budget,
                         "min_steps": {p: _min_steps(stages[p]) for p in priors}},
        "tstr": {row.name: generation[row.name]["evaluation"].get("tstr") for row in rows},
        "real_examples": REAL_EXAMPLES,
    }


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _wall(row: dict) -> float | None:
    """Training wall time of a route in s: its autoencoder's plus its prior's (None if unknown)."""
    parts = [row.get("autoencoder_wall_s"), row.get("prior_wall_s")]
    return None if any(p is None for p in parts) else float(sum(parts))


def _route_name(row: dict) -> str:
    """How the verdict names a row: `KL route (klvae + latentdiffusion)`, or with a label
    `HYBRID route (VQ latent + continuous prior (hybrid))`."""
    what = row.get("label") or f"{row.get('autoencoder')} + {row.get('prior')}"
    return f"{row['route'].upper()} route ({what})"


def routes_verdict(table: dict) -> str:
    """The phase-2 verdict of a routes table (`routes.json`), one short paragraph: which route
    generates the asked-for classes best (conditional accuracy, a fraction in [0, 1]), by how
    much over the next best (percentage points), at what cost (sampling speed in samples/s,
    training wall time in s of autoencoder + prior), and whether the phase-1 rule
    (reconstruction only) agrees: it does when it chose the best route's autoencoder."""
    rows = [r for r in table.get("rows") or [] if r.get("conditional_accuracy") is not None]
    if len(rows) < 2:
        return "No verdict: fewer than two routes have a conditional accuracy."
    best, other = sorted(rows, key=lambda r: r["conditional_accuracy"], reverse=True)[:2]
    gap = 100.0 * (best["conditional_accuracy"] - other["conditional_accuracy"])
    if abs(gap) < 0.05:
        both = "Both routes" if len(rows) == 2 else (
            f"The two best routes, {_route_name(best)} and {_route_name(other)},")
        head = (f"{both} generate the asked-for classes equally well (conditional accuracy "
                f"{best['conditional_accuracy']:.3f}).")
    else:
        head = (f"The {_route_name(best)} generates the asked-for classes best: conditional "
                f"accuracy {best['conditional_accuracy']:.3f} against "
                f"{other['conditional_accuracy']:.3f} for the {_route_name(other)} "
                f"(+{gap:.1f} points).")
    cost = []
    speed = [r.get("samples_per_second") for r in (best, other)]
    if None not in speed:
        cost.append(f"sampling {speed[0]:.1f} against {speed[1]:.1f} samples/s")
    wall = [_wall(r) for r in (best, other)]
    if None not in wall:
        cost.append(f"training {wall[0]:.0f} s against {wall[1]:.0f} s (autoencoder + prior)")
    lines = [head]
    if cost:
        lines.append(f"Cost ({best['route'].upper()} against {other['route'].upper()}): "
                     + "; ".join(cost) + ".")
    chosen = (table.get("decision") or {}).get("verdict")
    if chosen not in LATENTS:
        lines.append("The phase-1 rule has no verdict here.")
    elif abs(gap) < 0.05:
        lines.append(f"The phase-1 rule (reconstruction only) chose {chosen}; generation does "
                     "not separate the routes.")
    else:
        best_ae = best.get("autoencoder") or {v: k for k, v in LATENTS.items()}.get(best["route"])
        agrees = "agrees" if chosen == best_ae else "disagrees"
        lines.append(f"The phase-1 rule (reconstruction only) chose {chosen}: it {agrees}.")
    return " ".join(lines)


def _scored(rows: list[dict], latent: str, family: str) -> list[dict]:
    return [r for r in rows if r.get("latent") == latent and r.get("prior_family") == family
            and r.get("conditional_accuracy") is not None]


def _contrast(a: dict, b: dict) -> tuple[str, float, float | None]:
    """`a` against `b` in words, the accuracy gap in points (a - b), and the FD/floor factor
    (the larger ratio over the smaller, >= 1; None when either is missing or not positive)."""
    acc_a, acc_b = a["conditional_accuracy"], b["conditional_accuracy"]
    gap = 100.0 * (acc_a - acc_b)
    text = (f"{a['route']} {acc_a:.3f} against {b['route']} {acc_b:.3f} conditional accuracy "
            f"({abs(gap):.1f} points)")
    fa, fb = a.get("fd_ratio_to_floor"), b.get("fd_ratio_to_floor")
    factor = None
    if fa is not None and fb is not None and fa > 0 and fb > 0:
        factor = max(fa, fb) / min(fa, fb)
        text += f", FD/floor {fa:.1f} against {fb:.1f} (x{factor:.1f})"
    return text, gap, factor


def factor_paragraph(table: dict) -> str:
    """Which factor, the latent or the prior, explains the gap between the routes, in words.

    The latent's effect: rows with the same prior family (continuous) on different latents,
    KL latent + latent diffusion (`latent` kl) against VQ latent + continuous prior (the hybrid,
    `latent` vq; the first such row, i.e. the snapped one when both are there). The prior's
    effect: rows on the VQ latent with different prior families, the hybrid against the best
    discrete prior (VQ-Diffusion or the masked-token prior, by conditional accuracy). Each effect
    is the gap in conditional accuracy (percentage points) and the factor between the FD/floor
    ratios; the paragraph says which is larger on each measure, or which rows are missing."""
    rows = table.get("rows") or []
    kl = _scored(rows, "kl", "continuous")
    hybrid = _scored(rows, "vq", "continuous")
    discrete = sorted(_scored(rows, "vq", "discrete"), key=lambda r: r["conditional_accuracy"],
                      reverse=True)
    head = "**Which factor explains the gap.**"
    missing = []
    if not (kl and hybrid):
        missing.append("the latent's effect needs the rows kl and hybrid (same continuous "
                       "prior, KL against VQ latent)")
    if not (hybrid and discrete):
        missing.append("the prior's effect needs hybrid and vq or maskedtokens (same VQ "
                       "latent, continuous against discrete prior)")
    have = ", ".join(r["route"] for r in rows) or "none"
    parts = []
    latent = prior = None
    if kl and hybrid:
        text, gap, factor = _contrast(kl[0], hybrid[0])
        latent = (gap, factor)
        parts.append(f"Latent (same continuous prior): {text}.")
    if hybrid and discrete:
        text, gap, factor = _contrast(hybrid[0], discrete[0])
        prior = (gap, factor)
        parts.append(f"Prior (same VQ latent, the best discrete prior): {text}.")
    if latent and prior:
        points = [f"{abs(g):.1f}" for g in (prior[0], latent[0])]
        acc = ("neither: the two are alike" if points[0] == points[1] else
               "the prior explains more of the gap" if abs(prior[0]) > abs(latent[0]) else
               "the latent explains more of the gap")
        sentence = (f"In conditional accuracy {acc} ({points[0]} points for the prior against "
                    f"{points[1]} for the latent)")
        if latent[1] is not None and prior[1] is not None:
            factors = [f"{f:.1f}" for f in (prior[1], latent[1])]
            fd = ("the two are alike" if factors[0] == factors[1] else
                  "the prior does" if prior[1] > latent[1] else "the latent does")
            sentence += (f"; in FD/floor {fd} (x{factors[0]} for the prior against "
                         f"x{factors[1]} for the latent)")
        parts.append(sentence + ".")
    if missing:
        parts.append("Not measured here: " + "; ".join(missing) + f" (this run has {have}; "
                     "add rows with routes.sampling.priors).")
    return " ".join([head, *parts])


def priors_budget_line(table: dict) -> str:
    """`Priors trained to: ...`: the shared budget `routes.prior_budget`, or each prior's own
    `callbacks.training_budget.min_steps` (optimiser steps; the steps they took are in the stage
    table)."""
    budget = table.get("prior_budget") or {}
    own = ", ".join(f"{p} {_fmt(n)}" for p, n in (budget.get("min_steps") or {}).items())
    if budget.get("shared") is not None:
        return (f"Priors trained to: one shared budget, at least {budget['shared']} optimiser "
                f"steps each (routes.prior_budget={budget['shared']}; min_steps: {own}).")
    return ("Priors trained to: each prior's own budget (routes.prior_budget=null; "
            f"callbacks.training_budget.min_steps: {own or 'not recorded'}), so their steps may "
            "differ.")


#: the two tables of routes.md: (header, row key, digits; None: as it is)
RECONSTRUCTION_COLUMNS = [
    ("route", "route", None), ("latent + prior", "label", None),
    ("autoencoder", "autoencoder", None), ("test PSNR [dB]", "test_psnr_db", 2),
    ("SSIM", "test_ssim", 3), ("usage", "codebook_usage", 3),
    ("token entropy [nats]", "token_entropy", 2),
    ("AE params", "autoencoder_parameters", None), ("AE steps", "autoencoder_steps", None),
    ("AE wall [s]", "autoencoder_wall_s", 0)]
GENERATION_COLUMNS = [
    ("route", "route", None), ("prior", "prior", None),
    ("cond. acc.", "conditional_accuracy", 3), ("top vote", "top_vote_share", 2),
    ("FD", "fd_samples_test", 2),
    ("FD floor", "fd_floor", 2), ("FD/floor", "fd_ratio_to_floor", 1), ("TSTR", "tstr_acc", 3),
    ("TRTR", "trtr_acc", 3), ("TSTR/TRTR", "tstr_trtr_ratio", 2),
    ("physics ratio", "physics_median_ratio", 2), ("physics pass", "physics_pass_rate", 2),
    ("masked acc.", "masked_accuracy", 3),
    ("samples/s", "samples_per_second", 2), ("steps", "sampling_steps", None),
    ("prior params", "prior_parameters", None), ("prior steps", "prior_steps", None),
    ("prior wall [s]", "prior_wall_s", 0)]
#: the generation evidence `python -m mdvq.decide ROUTES_DIR` prints per row
EVIDENCE_COLUMNS = [
    ("route", "route", None), ("latent + prior", "label", None),
    ("cond. acc.", "conditional_accuracy", 3), ("FD/floor", "fd_ratio_to_floor", 1),
    ("TSTR", "tstr_acc", 3), ("TRTR", "trtr_acc", 3), ("TSTR/TRTR", "tstr_trtr_ratio", 2)]


def _columns_table(rows: list[dict], cols) -> str:
    cells = [[_fmt(row.get(k), d) if d is not None else _fmt(row.get(k)) for _, k, d in cols]
             for row in rows]
    return markdown_table([c for c, _, _ in cols], cells)


def routes_evidence(table: dict) -> str:
    """The generation evidence of every row (conditional accuracy, FD/floor, TSTR, TRTR,
    TSTR/TRTR), then the verdict and which factor explains the gap: what `mdvq.decide` prints
    beside the phase-1 rule."""
    return "\n\n".join([_columns_table(table["rows"], EVIDENCE_COLUMNS),
                         f"**Verdict.** {routes_verdict(table)}", factor_paragraph(table)])


def routes_markdown(table: dict) -> str:
    """`routes.md`: the verdict, the rows in two tables (reconstruction and codebook; generation
    and cost), which factor explains the gap, the phase-1 verdict, the priors' budget, the stage
    table and how to read it all."""
    labels = [r.get("label") or r["route"] for r in table["rows"]]
    lines = ["# Routes: " + " vs ".join(labels), "",
             f"**Verdict.** {routes_verdict(table)}", "",
             "## Reconstruction and codebook (the autoencoder of each row)", "",
             _columns_table(table["rows"], RECONSTRUCTION_COLUMNS), "",
             "## Generation and cost (the prior of each row)", "",
             _columns_table(table["rows"], GENERATION_COLUMNS), "",
             factor_paragraph(table)]
    d = table["decision"]
    lines += ["", f"Phase-1 rule (reconstruction only): **{d['verdict']}**"]
    lines += [f"- {r}" for r in d.get("reasons") or []]
    if table.get("prior_budget") is not None:
        lines += ["", priors_budget_line(table)]
    lines += ["", ("Training of each stage (optimiser steps, epochs, wall time; a reused stage "
                   "shows its earlier run's):"), "", stage_markdown(table)]
    if table.get("real_examples"):
        lines += ["", (f"Real examples (test split) beside the samples: "
                       f"`{table['real_examples']}`; samples: `samples_<route>/grid.png`.")]
    lines += ["", (f"In-domain classifier (the judge): test accuracy "
              f"{_fmt(table['classifier']['test_acc'])}. Data key `{table['data_key']}`."), "",
              ("How to read it: the phase-1 rule decides on reconstruction and codebook health "
              "alone; the generation columns say whether each route's prior draws spectrograms "
              "of the class asked for (conditional accuracy), as varied as real data (Frechet "
              "distance on the judge's features against the real train/test floor) and useful "
              "for training (TSTR against TRTR). The KL route is the main line whenever the two "
              "are comparable.")]
    return "\n".join(lines) + "\n"


def stage_markdown(table: dict) -> str:
    """The stage table of `routes.md`: optimiser steps, epochs and wall time [s] per stage,
    then the TSTR classifier of each route (steps and epochs; its time is in the evaluation)."""
    rows = [[name, _fmt(s.get("trained_steps")), _fmt(s.get("epochs")),
             _fmt(s.get("wall_time_s"), 0), "yes" if s.get("reused") else "no"]
            for name, s in (table.get("stages") or {}).items()]
    for route, tstr in (table.get("tstr") or {}).items():
        if tstr:
            rows.append([f"TSTR classifier ({route})", _fmt(tstr.get("steps")),
                         _fmt(tstr.get("epochs")), "-", "no"])
    return markdown_table(["stage", "optimiser steps", "epochs", "wall [s]", "reused"], rows)


def read_routes(folder: str | Path) -> dict:
    """The table written by :func:`write_routes` (a routes folder or its `routes.json`);
    `ValueError` naming the file when it is missing or not a routes table."""
    import json

    path = Path(folder)
    path = path / "routes.json" if path.is_dir() else path
    try:
        table = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a routes table ({err}); run python -m mdvq.run "
                         "experiment=routes") from None
    if not isinstance(table, dict) or not isinstance(table.get("rows"), list) or not all(
            isinstance(r, dict) for r in table["rows"]):
        raise ValueError(f"{path}: a routes table holds {{'rows': [{{route, ...}}, ...]}}")
    return table


def write_routes(table: dict, out_dir: Path) -> None:
    """Write `routes.json` and `routes.md` into `out_dir`."""
    import json

    (out_dir / "routes.json").write_text(json.dumps(table, indent=2, default=str) + "\n")
    (out_dir / "routes.md").write_text(routes_markdown(table))
