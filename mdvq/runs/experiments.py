"""Experiments made of several training stages, each an ordinary run folder with its summary.

`phase1`: the KL-VAE, then the VQ-VAE on the same data and split, then the decision rule
(`decision.json` in the experiment folder), with the thresholds of `conf/decision/`.
`routes`: both generation routes end to end (autoencoders, the phase-1 rule, the classifier,
both priors, sampling, evaluation), written as `routes.json` / `routes.md`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mdvq.callbacks.budget import budget_like
from mdvq.core.compose import compose_config
from mdvq.core.summary import RunSummary, find_runs, free_name
from mdvq.evaluation.decision import decide_runs, format_decision, write_decision
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
#: the training stages of experiment=routes, in order: (stage, Hydra overrides choosing it)
ROUTE_STAGES = (
    ("klvae", ["model=klvae"]),
    ("vqvae", ["model=vqvae"]),
    ("classifier", ["experiment=classifier"]),
    ("latentdiffusion", ["experiment=latentdiffusion"]),
    ("vqdiffusion", ["experiment=vqdiffusion"]),
)
#: the generation routes: (route, its prior stage, its autoencoder stage)
ROUTES = (("kl", "latentdiffusion", "klvae"), ("vq", "vqdiffusion", "vqvae"))
#: config keys that do not change what a stage trains (where it writes, what it logs, how)
_VOLATILE = ("paths", "hydra", "ckpt_path", "task_name", "callbacks", "logger")


class StageFailed(RuntimeError):
    """A stage of a multi-stage experiment failed; the message names it. Finished stages stay."""


#: callbacks that decide how long a stage trains: part of the fingerprint (a prior trained before
#: it had a step budget is trained again, not reused)
_TRAINING_LENGTH = ("training_budget",)


def config_fingerprint(config: dict) -> str:
    """A hash of a resolved config without where its outputs go (`paths`, ...): two runs with
    the same fingerprint trained the same model on the same data for the same length (the
    callbacks of `_TRAINING_LENGTH` count, the other callbacks do not)."""
    import hashlib
    import json

    kept = {k: v for k, v in config.items() if k not in _VOLATILE}
    callbacks = config.get("callbacks") or {}
    kept["training_length"] = {k: callbacks.get(k) for k in _TRAINING_LENGTH if k in callbacks}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _resolved(cfg: DictConfig) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def _portable(config: dict, run_dir: str | None) -> dict:
    """`config` with `run_dir` (its run folder) replaced by `<run>` in every string below it
    (e.g. `trainer.default_root_dir`), so runs of one config in two folders fingerprint alike."""
    if not run_dir:
        return config

    def swap(node):
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        if isinstance(node, str) and node.startswith(run_dir):
            return "<run>" + node[len(run_dir):]
        return node

    return swap(config)


def _moved_fingerprint(config: dict) -> str:
    """The config fingerprint of a run, independent of the folder it was trained in."""
    return config_fingerprint(_portable(config, (config.get("paths") or {}).get("output_dir")))


def _data_key(cfg: DictConfig) -> str | None:
    """The data key (data + split) the config's datamodule gives (loads the cached data)."""
    from mdvq.core.compose import build

    datamodule = build(cfg.data.datamodule)
    datamodule.setup("fit")
    return datamodule.data_key


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
        same = (config_fingerprint(done.config) == config_fingerprint(_resolved(cfg))
                and done.data_key == _data_key(cfg))
        if same and done.finished:
            log.info("stage %s reused (%s)", name, out_dir)
            return {**done.data, "reused": True}
        if same and done.status in ("interrupted", "running") and (out_dir / RESUME_FILE).is_file():
            log.info("stage %s was %s: resuming it from %s", name, done.status,
                     out_dir / RESUME_FILE)
            cfg = compose_config(overrides + [f"paths.output_dir={out_dir}", "task=fit",
                                              "ckpt_path=last"])
        else:
            aside = free_name(out_dir, ".replaced")
            out_dir.rename(aside)
            log.info("stage %s in %s is %s, or of another config or data key: moved to %s, "
                     "training it again", name, out_dir, done.status, aside.name)
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
                         f"{name} stage's {fingerprint!r} (another model or training config)")
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
            log.info("routes: stage %s reused (%s)", name, path)
            return {**done, "reused": True}
    try:
        result = {"inputs": inputs, **make()}
    except Exception as err:
        raise StageFailed(f"routes: stage {name!r} failed ({type(err).__name__}: {err}); "
                          "the finished stages are kept") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    return {**result, "reused": False}


def routes(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Both routes end to end on one data set and split (`experiment=routes`).

    Trains the KL-VAE and the VQ-VAE (phase 1, with the decision rule), the in-domain
    classifier, the latent-diffusion prior on the KL-VAE and the VQ-Diffusion prior on the
    VQ-VAE; samples both priors (same classes, seed, batch, machine), evaluates both against the
    classifier and writes `routes.json` and `routes.md` in the experiment folder. Every stage
    leaves its own folder; a stage whose result is already there for the same config (and so
    the same data key) is reused, so a second call continues from the first unfinished stage.
    A failing stage raises `StageFailed` naming it.
    """
    from mdvq.core.samples import load_samples, write_samples
    from mdvq.evaluation.classifier_run import load_classifier_run
    from mdvq.evaluation.decision import decide_runs, write_decision
    from mdvq.evaluation.generation import evaluate_generation
    from mdvq.runs.prior_sampling import load_prior, sample_prior

    out_dir = Path(cfg.paths.output_dir)
    settings = cfg.routes
    # model settings differ per stage: give them in routes.stage_overrides.<stage>
    common = (user_overrides(drop=("model", "task", "experiment"), drop_below=("model", "routes"))
              if overrides is None else list(overrides))
    stages: dict[str, dict] = {}
    reuse = settings.get("reuse") or {}
    auto_root = cfg.paths.output_root if reuse.get("auto") else None
    dirs: dict[str, Path] = {}  # the run folder of each stage (a reused one lies elsewhere)
    for name, choice in ROUTE_STAGES:
        extra = list(choice) + list(settings.stage_overrides.get(name) or [])
        if name in ("latentdiffusion", "vqdiffusion"):  # the prior of the autoencoder above
            autoencoder = "autoencoder" if name == "latentdiffusion" else "vqvae"
            source = "klvae" if name == "latentdiffusion" else "vqvae"
            classes = (stages[source].get("data") or {}).get("class_names") or []
            extra[:0] = [f"model.{autoencoder}={dirs[source]}",
                         f"model.num_classes={len(classes)}"]
        reused = (reuse_stage(name, reuse.get(name), common + extra, out_dir / name, auto_root)
                  if name in ("klvae", "vqvae") else None)
        stages[name] = reused or train_stage(name, common + extra, out_dir / name)
        dirs[name] = Path(reused["run_dir"]) if reused else out_dir / name
        if name == "vqvae":
            decision = decide_runs(dirs["vqvae"], dirs["klvae"],
                                   psnr_margin=cfg.decision.psnr_margin,
                                   usage_threshold=cfg.decision.usage_threshold)
            write_decision(decision, out_dir / "decision.json")

    classifier = load_classifier_run(out_dir / "classifier")
    sampling = {k: settings.sampling[k] for k in ("n_per_class", "seed", "batch_size")}
    if sampling["n_per_class"] is None:  # as many as the real training split: TSTR vs TRTR alike
        dm = classifier.datamodule
        sampling["n_per_class"] = -(-len(dm.datasets["train"]) // len(dm.class_names))
    generation = {}
    for route, prior_stage, _ in ROUTES:
        prior_run = out_dir / prior_stage
        steps = settings.sampling.steps.get(prior_stage)
        guidance = settings.sampling.guidance.get(prior_stage)
        inputs = {"prior": stages[prior_stage]["finished_at"], "steps": steps,
                  "guidance": guidance, **sampling}
        samples_dir = out_dir / f"samples_{route}"

        def draw(prior_run=prior_run, prior_stage=prior_stage, steps=steps, guidance=guidance,
                 samples_dir=samples_dir):
            module, _ = load_prior(prior_run, settings.sampling.device)
            images, labels, meta = sample_prior(module, sampling["n_per_class"], steps, guidance,
                                                sampling["seed"], sampling["batch_size"])
            write_samples(samples_dir, images, labels, {**meta, "prior": prior_stage})
            return {"samples_per_second": meta["samples_per_second"], "steps": meta["steps"],
                    "guidance": meta["guidance"]}

        drawn = _json_stage(f"sample {route}", samples_dir / "stage.json", inputs, draw)
        eval_dir = out_dir / f"eval_{route}"

        def score(samples_dir=samples_dir, eval_dir=eval_dir):
            result = evaluate_generation(
                classifier, load_samples(samples_dir), eval_dir, tstr=bool(settings.tstr),
                trainer_overrides=dict(settings.tstr_trainer or {}), seed=int(cfg.seed),
                tstr_callbacks=[budget_like(classifier.config, settings.get("tstr_min_steps"))])
            tstr = result.get("tstr") or {}
            return {"metrics": result["metrics"], "judge": result.get("judge"),
                    "tstr": {k: tstr.get(k) for k in ("steps", "epochs")}}

        evaluated = _json_stage(f"evaluate {route}", eval_dir / "stage.json",
                                {**inputs, "classifier": stages["classifier"]["finished_at"],
                                 "tstr": bool(settings.tstr)}, score)
        generation[route] = {"sampling": drawn, "evaluation": evaluated}

    table = routes_table(out_dir, stages, generation)
    write_routes(table, out_dir)
    return table


def routes_table(out_dir: Path, stages: dict[str, dict], generation: dict) -> dict:
    """The routes comparison as data: one row per route (reconstruction, the phase-1 verdict,
    generation, speed, sizes, wall times), plus the decision and the stage folders."""
    import json

    decision = json.loads((out_dir / "decision.json").read_text())
    rows = []
    for route, prior_stage, ae_stage in ROUTES:
        ae = stages[ae_stage]["metrics"]
        gen = generation[route]["evaluation"]["metrics"]
        rows.append({
            "route": route,
            "autoencoder": ae_stage,
            "prior": prior_stage,
            "test_psnr_db": ae.get(TEST_PSNR),
            "test_ssim": ae.get(TEST_SSIM),
            "codebook_usage": ae.get(TEST_CODEBOOK_USAGE) if route == "vq" else None,
            "conditional_accuracy": gen.get("conditional_accuracy"),
            "fd_samples_test": gen.get("fd_samples_test"),
            "fd_floor": gen.get("fd_train_test_floor"),
            "fd_ratio_to_floor": gen.get("fd_ratio_to_floor"),
            "tstr_acc": gen.get("tstr_acc"),
            "trtr_acc": gen.get("trtr_acc"),
            "tstr_trtr_ratio": gen.get("tstr_trtr_ratio"),
            "samples_per_second": generation[route]["sampling"]["samples_per_second"],
            "sampling_steps": generation[route]["sampling"]["steps"],
            "guidance": generation[route]["sampling"]["guidance"],
            "autoencoder_parameters": stages[ae_stage].get("parameters"),
            "prior_parameters": stages[prior_stage].get("parameters"),
            "autoencoder_wall_s": stages[ae_stage].get("wall_time_s"),
            "prior_wall_s": stages[prior_stage].get("wall_time_s"),
            "autoencoder_steps": stages[ae_stage].get("trained_steps"),
            "prior_steps": stages[prior_stage].get("trained_steps"),
        })
    return {
        "rows": rows,
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
                          "epochs": s.get("epochs"), "wall_time_s": s.get("wall_time_s")}
                   for name, s in stages.items()},
        "tstr": {route: generation[route]["evaluation"].get("tstr") for route, _, _ in ROUTES},
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


def routes_verdict(table: dict) -> str:
    """The phase-2 verdict of a routes table (`routes.json`), one short paragraph: which route
    generates the asked-for classes best (conditional accuracy, a fraction in [0, 1]), by how
    much (percentage points), at what cost (sampling speed in samples/s, training wall time in s
    of autoencoder + prior), and whether the phase-1 rule (reconstruction only) agrees."""
    rows = [r for r in table.get("rows") or [] if r.get("conditional_accuracy") is not None]
    if len(rows) < 2:
        return "No verdict: fewer than two routes have a conditional accuracy."
    best, other = sorted(rows, key=lambda r: r["conditional_accuracy"], reverse=True)[:2]
    gap = 100.0 * (best["conditional_accuracy"] - other["conditional_accuracy"])
    names = {r["route"]: f"{r['route'].upper()} route ({r.get('autoencoder')} + {r.get('prior')})"
             for r in rows}
    if abs(gap) < 0.05:
        head = (f"Both routes generate the asked-for classes equally well (conditional accuracy "
                f"{best['conditional_accuracy']:.3f}).")
    else:
        head = (f"The {names[best['route']]} generates the asked-for classes best: conditional "
                f"accuracy {best['conditional_accuracy']:.3f} against "
                f"{other['conditional_accuracy']:.3f} for the {names[other['route']]} "
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
    rule_route = {"klvae": "kl", "vqvae": "vq"}.get(chosen)
    if rule_route is None:
        lines.append("The phase-1 rule has no verdict here.")
    elif abs(gap) < 0.05:
        lines.append(f"The phase-1 rule (reconstruction only) chose {chosen}; generation does "
                     "not separate the routes.")
    else:
        agrees = "agrees" if rule_route == best["route"] else "disagrees"
        lines.append(f"The phase-1 rule (reconstruction only) chose {chosen}: it {agrees}.")
    return " ".join(lines)


def routes_markdown(table: dict) -> str:
    """`routes.md`: the two routes side by side, then the phase-1 verdict and how to read both."""
    cols = [("route", "route", None), ("test PSNR [dB]", "test_psnr_db", 2),
            ("SSIM", "test_ssim", 3), ("usage", "codebook_usage", 3),
            ("cond. acc.", "conditional_accuracy", 3), ("FD", "fd_samples_test", 2),
            ("FD floor", "fd_floor", 2), ("FD/floor", "fd_ratio_to_floor", 1),
            ("TSTR", "tstr_acc", 3), ("TRTR", "trtr_acc", 3), ("TSTR/TRTR", "tstr_trtr_ratio", 2),
            ("samples/s", "samples_per_second", 2), ("steps", "sampling_steps", None),
            ("AE params", "autoencoder_parameters", None), ("prior params", "prior_parameters", None),
            ("AE wall [s]", "autoencoder_wall_s", 0), ("prior wall [s]", "prior_wall_s", 0)]
    cells = [[_fmt(row.get(k), d) if d is not None else _fmt(row.get(k)) for _, k, d in cols]
             for row in table["rows"]]
    lines = ["# Routes: KL-VAE + latent diffusion vs VQ-VAE + VQ-Diffusion", "",
             f"**Verdict.** {routes_verdict(table)}", "",
             markdown_table([c for c, _, _ in cols], cells)]
    d = table["decision"]
    lines += ["", f"Phase-1 rule (reconstruction only): **{d['verdict']}**"]
    lines += [f"- {r}" for r in d.get("reasons") or []]
    lines += ["", ("Training of each stage (optimiser steps, epochs, wall time; a reused stage "
                   "shows its earlier run's):"), "", stage_markdown(table)]
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
