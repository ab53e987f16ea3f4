"""`experiment=augment`: does synthetic data help a classifier trained on little real data?

For every real-data fraction k (`augment.fractions`) a stratified subset of the training split is
drawn by whole recordings/subjects (`mdvq.data.subsets`, written as `k<k>/subset.json`); the
chosen route's autoencoder and prior (`augment.route`: kl = KL-VAE + latent diffusion, vq =
VQ-VAE + VQ-Diffusion) train on that subset only (`data.datamodule.train_subset`), so no
held-back real example leaks into the synthetic data. The prior is sampled, then classifiers of
one architecture, one optimiser-step count and the same seeds train per arm:

- `real`: the real subset only;
- `classical`: the real subset with classical augmentation (`mdvq.data.augmentation`);
- `synth_1x`, `synth_4x`: the real subset plus synthetic samples, 1:1 and 1:4 per class;
- `synth_only`: synthetic samples only (as many per class as the real subset: TSTR).

All are tested on the whole real test split (validation, whole too, picks each one's best
checkpoint). `augment.json` / `augment.md` report mean and std over seeds and the paired
difference to `real` (same seed) with a 95 % t-interval; `augment.png` plots test accuracy
against k per arm (log x). Every stage is reused when it is already there for the same inputs
(`mdvq.runs.experiments.train_stage` / `_json_stage`, as `experiment=routes`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from mdvq.runs.experiments import (
    _json_stage,
    config_fingerprint,
    train_stage,
    upstream_override,
    user_overrides,
)
from mdvq.utils.tables import markdown_table

log = logging.getLogger(__name__)

#: the classifier arms, in table order
ARMS = ("real", "classical", "synth_1x", "synth_4x", "synth_only")
#: synthetic examples per real example of the same class, per arm (None: no synthetic data)
SYNTHETIC_RATIO = {"real": None, "classical": None, "synth_1x": 1, "synth_4x": 4,
                   "synth_only": 1}
#: route -> ((autoencoder stage, its overrides), (prior stage, its overrides), the prior's key
#: naming the autoencoder)
ROUTES = {
    "kl": (("klvae", ["model=klvae"]), ("latentdiffusion", ["experiment=latentdiffusion"]),
           "autoencoder"),
    "vq": (("vqvae", ["model=vqvae"]), ("vqdiffusion", ["experiment=vqdiffusion"]), "vqvae"),
}


def check_settings(settings) -> None:
    """ValueError naming the `augment.*` key of an impossible setting (before any training)."""
    if settings.route not in ROUTES:
        raise ValueError(f"augment.route must be one of {list(ROUTES)}, got {settings.route!r}")
    fractions = list(settings.fractions or [])
    if not fractions or any(not 0 < float(k) <= 1 for k in fractions):
        raise ValueError(f"augment.fractions must be a non-empty list in (0, 1], got {fractions}")
    if len(set(map(float, fractions))) != len(fractions):
        raise ValueError(f"augment.fractions has repeats: {fractions}")
    arms = list(settings.arms or [])
    unknown = [a for a in arms if a not in ARMS]
    if unknown or "real" not in arms:
        raise ValueError(f"augment.arms must hold 'real' (the reference of the paired "
                         f"differences) and only {list(ARMS)}, got {arms}")
    seeds = list(settings.seeds or [])
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"augment.seeds must be a non-empty list of distinct ints, got {seeds}")
    if int(settings.classifier.steps) < 1:
        raise ValueError(f"augment.classifier.steps must be >= 1, got {settings.classifier.steps}")


def fraction_name(k: float) -> str:
    """The folder of fraction `k` inside the experiment folder, e.g. `k0.25`."""
    return f"k{float(k):g}"


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) or \
        OmegaConf.is_config(node) else node


def _datamodule(overrides: list[str], stage: str = "fit"):
    """The set-up spectrogram datamodule of the project config with `overrides`."""
    from mdvq.core.compose import build, compose_config

    dm = build(compose_config([*overrides, "paths.output_dir=."]).data.datamodule)
    dm.setup(stage)
    return dm


def t_interval(values) -> dict:
    """Mean, sample std and the 95 % Student-t interval of the mean of `values`
    (`half`: its half width; None with fewer than 2 values)."""
    from scipy import stats

    x = np.asarray(list(values), dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else None
    std = float(x.std(ddof=1)) if n > 1 else None
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else None
    return {"n": n, "mean": mean, "std": std, "half": half,
            "low": None if half is None else mean - half,
            "high": None if half is None else mean + half}


def augment(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Run `experiment=augment` (see the module docstring); returns the table written to
    `augment.json`. `overrides` (default: the command line's, less `model.*`, `augment.*`,
    `task`, `experiment`) are handed to every stage. A failing stage raises `StageFailed`
    naming it; finished stages stay and are reused by the next call."""
    from mdvq.core.compose import build, compose_config
    from mdvq.data.subsets import draw_fraction, manifest_hash, write_manifest

    settings = cfg.augment
    check_settings(settings)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = (user_overrides(drop=("model", "task", "experiment"), drop_below=("model", "augment"))
              if overrides is None else list(overrides))
    stage_overrides = {k: list(v or []) for k, v in (settings.stage_overrides or {}).items()}
    (ae_stage, ae_choice), (prior_stage, prior_choice), ae_key = ROUTES[settings.route]
    arms = [a for a in ARMS if a in settings.arms]
    seeds = [int(s) for s in settings.seeds]
    base = _datamodule(common)  # the whole training split: the subsets are drawn from it
    train_labels = base.datasets["train"].tensors[1].numpy()
    classes = list(base.class_names)
    classical = {k: int(v) for k, v in _plain(settings.classical).items()}
    clf = settings.classifier
    trainer_overrides = {"max_steps": int(clf.steps), "max_epochs": -1,
                         "check_val_every_n_epoch": None,
                         "val_check_interval": int(clf.val_every_steps),
                         **(_plain(clf.trainer) or {})}
    results: dict[str, dict] = {}
    for k in sorted(float(x) for x in settings.fractions):
        fdir = out_dir / fraction_name(k)
        subset: list[str] = []
        manifest = None
        if k < 1.0:  # k = 1: the whole training split, no manifest (the usual data key)
            manifest = draw_fraction(train_labels, base.train_groups, k, int(settings.draw_seed),
                                     classes)
            path = fdir / "subset.json"
            if not path.is_file() or json.loads(path.read_text()) != manifest:
                write_manifest(manifest, path)
            subset = [f"data.datamodule.train_subset={path.resolve()}"]
        ratios = [SYNTHETIC_RATIO[a] for a in arms if SYNTHETIC_RATIO[a]]
        stages: dict[str, dict] = {}
        if ratios:  # the generator only where an arm uses synthetic data
            stages[ae_stage] = train_stage(
                ae_stage, [*common, *ae_choice, *subset, *stage_overrides.get(ae_stage, [])],
                fdir / ae_stage)
            stages[prior_stage] = train_stage(
                prior_stage, [*common, *prior_choice,
                              f"model.{ae_key}={(fdir / ae_stage).resolve()}",
                              upstream_override("autoencoder", stages[ae_stage]),
                              f"model.num_classes={len(classes)}", *subset,
                              *stage_overrides.get(prior_stage, [])], fdir / prior_stage)
        # the classifier's config and the real subset it trains on (val/test: the whole splits)
        ccfg = compose_config([*common, "experiment=classifier", *subset,
                               *stage_overrides.get("classifier", []), "paths.output_dir=."])
        real = build(ccfg.data.datamodule)
        real.setup("fit")
        x_real = (real.datasets["train"].tensors[0].numpy() + 1.0) / 2.0
        y_real = real.datasets["train"].tensors[1].numpy()
        counts = [int(n) for n in np.bincount(y_real, minlength=len(classes))]
        sampling = {key: _plain(settings.sampling[key]) for key in
                    ("seed", "batch_size", "steps", "guidance")}
        samples_dir = fdir / "samples"
        drawn = None
        if ratios:
            n_per_class = max(1, *(round(r * c) for r in ratios for c in counts))
            inputs = {"prior": stages[prior_stage].get("finished_at"), "n_per_class": n_per_class,
                      **sampling}

            draw = partial(_draw_samples, fdir / prior_stage, samples_dir, n_per_class, sampling,
                           str(settings.sampling.device))
            drawn = _json_stage(f"augment sample k={k:g}", samples_dir / "stage.json", inputs,
                                draw)
        fingerprint = config_fingerprint(_plain(ccfg))
        per_arm: dict[str, dict] = {}
        for arm in arms:
            per_arm[arm] = {}
            for seed in seeds:
                inputs = {"fraction": k, "arm": arm, "seed": seed,
                          "subset": manifest_hash(manifest) if manifest else None,
                          "data_key": real.data_key, "classifier": fingerprint,
                          "trainer": trainer_overrides,
                          "classical": classical if arm == "classical" else None,
                          "samples": (drawn or {}).get("inputs") if SYNTHETIC_RATIO[arm] else None}
                run_dir = fdir / arm / f"seed{seed}"

                fit = partial(_fit_arm, arm, seed, run_dir, x_real, y_real, samples_dir, ccfg, real,
                              trainer_overrides, classical, str(settings.sampling.device))
                done = _json_stage(f"augment {arm} k={k:g} seed={seed}",
                                   run_dir / "stage.json", inputs, fit)
                if "val_curve" not in done:  # an arm made before curves were recorded
                    done["val_curve"] = validation_curve(run_dir)
                per_arm[arm][str(seed)] = done
        results[fraction_name(k)] = {
            "fraction": k, "real_train_count": len(y_real),
            "real_per_class": dict(zip(classes, counts, strict=True)),
            "groups": len(manifest["groups"]) if manifest and "groups" in manifest else None,
            "stages": {name: {"dir": str(Path(fraction_name(k)) / name),
                              "reused": s.get("reused"), "trained_steps": s.get("trained_steps"),
                              "wall_time_s": s.get("wall_time_s")} for name, s in stages.items()},
            "samples_per_second": (drawn or {}).get("samples_per_second"),
            "sampling_wall_time_s": (drawn or {}).get("wall_time_s"),
            "classifier_wall_time_s": _total(r.get("wall_time_s") for arm in per_arm.values()
                                             for r in arm.values()),
            "arms": per_arm,
        }
    table = augment_table(results, arms, seeds, settings.route, base.data_key)
    write_augment(table, out_dir)
    return table


def _draw_samples(prior_dir: Path, samples_dir: Path, n_per_class: int, sampling: dict,
                  device: str) -> dict:
    """Sample the prior in `prior_dir` into `samples_dir`; returns speed and count."""
    from mdvq.core.samples import write_samples
    from mdvq.runs.prior_sampling import load_prior, sample_prior

    start = time.perf_counter()
    module, _ = load_prior(prior_dir, device)
    n_per_class = int(n_per_class)
    images, labels, meta = sample_prior(module, n_per_class, sampling["steps"],
                                        sampling["guidance"], sampling["seed"],
                                        sampling["batch_size"])
    write_samples(samples_dir, images, labels, {**meta, "prior": prior_dir.name})
    return {"samples_per_second": meta["samples_per_second"], "count": len(labels),
            "wall_time_s": round(time.perf_counter() - start, 1)}


def _fit_arm(arm: str, seed: int, run_dir: Path, x_real: np.ndarray, y_real: np.ndarray,
             samples_dir: Path, ccfg: DictConfig, real, trainer_overrides: dict,
             classical: dict, device: str) -> dict:
    """Train and test one arm's classifier with `seed` (config `ccfg`, the real datamodule
    `real`); returns its real test accuracy (`acc`), `val_acc`, `train_count`, `steps` and
    `wall_time_s` (training and testing, seconds)."""
    from mdvq.core.samples import load_samples
    from mdvq.data.augmentation import ClassicalAugment
    from mdvq.evaluation.tstr import train_on_synthetic

    start = time.perf_counter()
    images, labels = arm_training_set(arm, x_real, y_real,
                                      load_samples(samples_dir) if SYNTHETIC_RATIO[arm] else None)
    transform = ClassicalAugment(**classical, fill=-1.0) if arm == "classical" else None
    result = train_on_synthetic(OmegaConf.create(_plain(ccfg.model)),
                                OmegaConf.create(_plain(ccfg.trainer)), images, labels, real,
                                run_dir, seed=seed, trainer_overrides=trainer_overrides,
                                device=device, train_transform=transform)
    return {**{key: result[key] for key in ("acc", "val_acc", "train_count", "steps")},
            "wall_time_s": round(time.perf_counter() - start, 1),
            "val_curve": validation_curve(run_dir)}


def validation_curve(run_dir: Path) -> list[list[float]]:
    """`[[step, val/acc], ...]` of a classifier run, from its newest CSV log (empty if none)."""
    import csv

    logs = sorted((run_dir / "csv").glob("*/metrics.csv"))
    if not logs:
        return []
    with logs[-1].open() as f:
        return [[int(row["step"]), float(row["val/acc"])] for row in csv.DictReader(f)
                if row.get("val/acc")]


def still_learning(curve: list[list[float]]) -> bool | None:
    """True when the best validation accuracy of a curve is at its last validation, and above
    the one before (the classifier was still improving when its steps ran out); None without
    a curve of at least 2 validations."""
    if len(curve) < 2:
        return None
    accs = [acc for _, acc in curve]
    return accs[-1] >= max(accs) and accs[-1] > accs[-2]


def arm_training_set(arm: str, x_real: np.ndarray, y_real: np.ndarray, samples=None):
    """The training images `(N, 1, F, T)` in [0, 1] and labels of one arm: the real subset,
    plus (or, for `synth_only`, instead of it) `SYNTHETIC_RATIO[arm]` synthetic samples per real
    example of each class, the first ones of that class in `samples` (a `SampleSet`).
    ValueError when `samples` holds too few of a class."""
    ratio = SYNTHETIC_RATIO[arm]
    if ratio is None:
        return x_real, y_real
    counts = np.bincount(y_real)
    picked = []
    for c, n in enumerate(counts):
        want = round(ratio * n)
        have = np.flatnonzero(samples.labels == c)
        if len(have) < want:
            raise ValueError(f"arm {arm}: {want} synthetic samples of class {c} needed, the "
                             f"samples folder has {len(have)}")
        picked.append(have[:want])
    idx = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    x_syn, y_syn = samples.images[idx], samples.labels[idx]
    if arm == "synth_only":
        return x_syn, y_syn
    return np.concatenate([x_real, x_syn]), np.concatenate([y_real, y_syn])


def augment_table(results: dict, arms: list[str], seeds: list[int], route: str,
                  data_key: str | None) -> dict:
    """The result as data: per fraction and arm the test accuracies per seed (fractions in
    [0, 1]), their mean and std, and the paired difference to `real` (same seed) with its
    95 % t-interval."""
    rows = []
    for res in results.values():
        real = res["arms"]["real"]
        for arm in arms:
            accs = {s: res["arms"][arm][str(s)]["acc"] for s in seeds}
            stats = t_interval(accs.values())
            diff = (t_interval([accs[s] - real[str(s)]["acc"] for s in seeds])
                    if arm != "real" else None)
            flags = [still_learning(res["arms"][arm][str(s)].get("val_curve") or [])
                     for s in seeds]
            rows.append({"fraction": res["fraction"], "arm": arm,
                         "seeds_still_learning": (None if any(f is None for f in flags)
                                                  else sum(flags)),
                         "real_train_count": res["real_train_count"],
                         "train_count": res["arms"][arm][str(seeds[0])]["train_count"],
                         "acc_per_seed": {str(s): a for s, a in accs.items()},
                         "acc_mean": stats["mean"], "acc_std": stats["std"],
                         "diff_vs_real": diff})
    return {"route": route, "data_key": data_key, "seeds": seeds, "arms": arms, "rows": rows,
            "fractions": {name: {k: v for k, v in res.items() if k != "arms"}
                          for name, res in results.items()}}


def _total(values) -> float | None:
    """The sum of wall times [s], or None when any is unknown (a stage made before they were
    recorded)."""
    values = list(values)
    return None if any(v is None for v in values) else round(sum(values), 1)


def wall_time_rows(table: dict) -> list[list[str]]:
    """Per fraction the wall time [s] of its generator stages (as trained, also when reused
    now), its sampling and its classifiers, and the total; '-' where one is unknown."""
    rows, totals = [], []
    for name, res in table["fractions"].items():
        gen = _total(s.get("wall_time_s") for s in res.get("stages", {}).values())
        parts = [gen, res.get("sampling_wall_time_s") if res.get("stages") else 0.0,
                 res.get("classifier_wall_time_s")]
        total = _total(parts)
        totals.append(total)
        rows.append([name] + [_f(v, 0) for v in parts] + [_f(total, 0)])
    grand = _total(totals)
    rows.append(["all", "", "", "", _f(grand, 0) + ("" if grand is None else f" ({grand / 60:.0f} min)")])
    return rows


def _f(value, digits=3, sign=False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def augment_markdown(table: dict) -> str:
    """`augment.md`: one row per fraction and arm (mean +- std test accuracy over seeds, the
    paired difference to real-only with its 95 % t-interval), then how to read it."""
    cells = []
    for r in table["rows"]:
        d = r["diff_vs_real"]
        cells.append([f"{r['fraction']:g}", r["arm"], str(r["real_train_count"]),
                      str(r["train_count"]), f"{_f(r['acc_mean'])} +- {_f(r['acc_std'])}",
                      "-" if d is None else _f(d["mean"], sign=True),
                      "-" if d is None or d["half"] is None
                      else f"[{_f(d['low'], sign=True)}, {_f(d['high'], sign=True)}]",
                      "-" if r.get("seeds_still_learning") is None
                      else f"{r['seeds_still_learning']}/{len(table['seeds'])}"])
    header = ["k", "arm", "real train", "train set", "test acc (mean +- std)",
              "diff vs real", "95 % interval", "still learning"]
    lines = [f"# Synthetic data at low real data ({table['route'].upper()} route)", "",
             markdown_table(header, cells), "",
             (f"Seeds {table['seeds']}; data key `{table['data_key']}`. k: the fraction of the "
              "training split's recordings/subjects (stratified by class) that the generator and "
              "every classifier trained on; validation and test are the whole real splits."), "",
             ("How to read it: `diff vs real` is the mean over seeds of (arm - real-only) test "
              "accuracy for the same seed; the interval is the 95 % Student-t interval of that "
              "mean (over the seeds). An interval that excludes 0 says the arm helps (or hurts) "
              "at that k; `classical` is the bar synthetic data must clear."), "",
             ("`still learning`: seeds whose real validation accuracy was best at the last "
              "validation and still rising. Where several are, the arm is under-trained at "
              "`augment.classifier.steps` and the comparison favours arms that learn faster "
              "(usually `real`, the smallest and easiest set): raise the steps."), "",
             "Wall time [s] (stages reused by this call count with the time they took):", "",
             markdown_table(["k", "generator stages", "sampling", "classifiers", "total"],
                            wall_time_rows(table))]
    return "\n".join(lines) + "\n"


def plot_augment(table: dict, path: Path) -> Path:
    """`augment.png`: mean test accuracy (error bars: std over seeds) against k (log x), one
    line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for arm in table["arms"]:
        rows = sorted((r for r in table["rows"] if r["arm"] == arm), key=lambda r: r["fraction"])
        ax.errorbar([r["fraction"] for r in rows], [r["acc_mean"] for r in rows],
                    yerr=[r["acc_std"] or 0.0 for r in rows], marker="o", capsize=3, label=arm)
    ax.set_xscale("log")
    ks = sorted({r["fraction"] for r in table["rows"]})
    ax.set_xticks(ks, [f"{k:g}" for k in ks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("fraction k of the real training recordings")
    ax.set_ylabel("real test accuracy")
    ax.set_title(f"{table['route'].upper()} route: accuracy against real data")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_augment(table: dict, out_dir: Path) -> None:
    """Write `augment.json`, `augment.md` and `augment.png` into `out_dir`."""
    (out_dir / "augment.json").write_text(json.dumps(table, indent=2, default=str) + "\n")
    (out_dir / "augment.md").write_text(augment_markdown(table))
    plot_augment(table, out_dir / "augment.png")
