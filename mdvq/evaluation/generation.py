"""Phase-2 generation metrics on one samples directory, written as metrics.json and metrics.md.

Against the real data of the in-domain classifier (docs/metrics.md):

- conditional accuracy: the classifier's top-1 class equals the class a sample was asked for
  (overall and per class; chance is 1/K);
- the judge's profile, for the samples and for the real test split alike: the classifier's mean
  top-1 probability (confidence) per asked class and the share of all images it assigns to each
  class (degenerate samples that fall into one class show as a share far above 1/K);
- Frechet distance on the classifier's penultimate features, FD(samples, real test), beside
  the floor FD(real train, real test) computed on as many training examples as there are
  samples (so both carry the same finite-sample bias), averaged over a few random training
  subsets (fixed by the seed; a single draw varies by about 25% with 500 examples);
- TSTR: real test accuracy of a fresh classifier trained on the samples, beside TRTR: real
  test accuracy of the train-on-real classifier; and their ratio;
- physical fidelity, no classifier involved (`mdvq.evaluation.physical_fidelity`,
  docs/physical-fidelity.md): per class, Wasserstein ratios of kinematic summaries to the real
  floor, envelope DTW, kinematic sifting pass rate, and envelope-band figures.
"""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from mdvq.core.samples import SampleSet, check_compatible
from mdvq.evaluation.accuracy import (
    conditional_accuracy,
    judge_profile,
    loader_accuracy,
    predict_proba,
)
from mdvq.evaluation.classifier_run import ClassifierRun
from mdvq.evaluation.frechet import ClassifierFeatures, frechet_distance
from mdvq.evaluation.tstr import train_on_synthetic
from mdvq.utils.metric_keys import TEST_ACC
from mdvq.utils.pixels import to_unit
from mdvq.utils.tables import markdown_table

log = logging.getLogger(__name__)

META_KEYS = ("prior_kind", "steps", "guidance", "sampler", "truncation", "temperature", "seed",
             "prior", "samples_per_second")
"""Sampler settings copied from meta.json into the report."""


def _split_images01(datamodule, split: str) -> np.ndarray:
    """All images of a real split as float32 ``(N, C, F, T)`` in [0, 1]."""
    x = datamodule.datasets[split].tensors[0]
    return to_unit(x.float()).clamp(0.0, 1.0).numpy()


def evaluate_generation(
    run: ClassifierRun,
    samples: SampleSet,
    out_dir: str | Path,
    tstr: bool = True,
    trainer_overrides: dict | None = None,
    batch_size: int = 256,
    seed: int | None = None,
    floor_repeats: int = 5,
    device: str = "cpu",
    command: str | None = None,
    tstr_callbacks: list | tuple = (),
    physics: dict | bool | None = None,
) -> dict:
    """Measure ``samples`` against ``run``'s real data; write ``out_dir/metrics.{json,md}``.

    ``tstr=False`` skips the train-on-synthetic classifier. ``trainer_overrides`` change the
    TSTR trainer (e.g. ``{"max_epochs": 5}``). ``seed`` (default: the classifier run's) fixes
    the floor's training subsets and the TSTR run. The floor is the mean over
    ``floor_repeats`` random training subsets (its spread is reported as ``std``).
    ``tstr_callbacks`` join the TSTR trainer's (the commands pass the judge classifier's
    training budget, ``mdvq.callbacks.budget.budget_like``). ``physics``: overrides of
    ``conf/physics/default.yaml`` (None: its settings; False: skip the physical fidelity).
    Returns the metrics dict (also written).
    """
    dm, model = run.datamodule, run.model.eval()
    check_compatible(samples, dm.class_names, dm.image_size, dm.freqs_hz, dm.times_s)
    physics = _physics_settings(physics)  # a bad key fails before any prediction
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(run.config.get("seed", 0) if seed is None else seed)
    names = list(dm.class_names)
    k = len(names)

    probs = predict_proba(model, samples.images, batch_size=batch_size, device=device)
    cond = conditional_accuracy(probs.argmax(axis=1), samples.labels, names)

    train01, test01 = _split_images01(dm, "train"), _split_images01(dm, "test")
    test_probs = predict_proba(model, test01, batch_size=batch_size, device=device)
    judge = {"samples": judge_profile(probs, samples.labels, names),
             "real_test": judge_profile(test_probs, dm.datasets["test"].tensors[1].numpy(), names)}
    rng = np.random.default_rng(seed)
    n_floor = min(len(samples), len(train01))
    extractor = ClassifierFeatures(model)
    fd = frechet_distance(extractor, test01, samples.images, batch_size, device)
    floors = [
        frechet_distance(extractor, test01,
                         train01[np.sort(rng.choice(len(train01), size=n_floor, replace=False))],
                         batch_size, device)
        for _ in range(1 if n_floor == len(train01) else max(1, int(floor_repeats)))
    ]
    fd_floor = float(np.mean(floors))

    phys = _physical_fidelity(dm, samples, train01, test01, physics, seed, out_dir)

    trtr, test_count = loader_accuracy(model, dm.test_dataloader(), device=device)
    tstr_result = None
    if tstr:
        tstr_result = train_on_synthetic(
            run.config.model, run.config.trainer, samples.images, samples.labels, dm,
            out_dir / "tstr", seed=seed, trainer_overrides=trainer_overrides, device=device,
            callbacks=tstr_callbacks)
    tstr_acc = tstr_result["acc"] if tstr_result else None

    summary_acc = ((run.summary or {}).get("metrics") or {}).get(TEST_ACC)
    if summary_acc is not None and not math.isclose(summary_acc, trtr, abs_tol=1e-6):
        log.warning("TRTR accuracy %.4f differs from the run summary's test/acc %.4f", trtr,
                    summary_acc)
    metrics = {
        "conditional_accuracy": cond["overall"],
        "fd_samples_test": fd,
        "fd_train_test_floor": fd_floor,
        "fd_floor_std": float(np.std(floors)),
        "fd_ratio_to_floor": fd / fd_floor if fd_floor > 0 else None,
        "tstr_acc": tstr_acc,
        "trtr_acc": trtr,
        "tstr_trtr_ratio": tstr_acc / trtr if tstr_acc is not None and trtr > 0 else None,
        "chance_acc": 1.0 / k,
        "judge_confidence": judge["samples"]["mean_confidence"],
        "judge_confidence_real_test": judge["real_test"]["mean_confidence"],
        "judge_top_share": max(judge["samples"]["predicted_share"].values()),
        **{key: phys.get(name) for key, name in PHYSICS_METRICS.items()},
    }
    result = {
        "metrics": metrics,
        "conditional_accuracy": cond,
        "judge": judge,
        "frechet": {"samples_vs_test": fd, "train_vs_test_floor": fd_floor,
                    "floor_std": float(np.std(floors)), "floor_values": floors,
                    "feature_dim": extractor.num_features,
                    "features": "in-domain classifier, penultimate layer (global-pooled CNN)",
                    "floor_train_subset": int(n_floor)},
        "tstr": tstr_result,
        "physical_fidelity": phys,
        "counts": {
            "samples": len(samples),
            "samples_per_class": cond["counts"],
            "real_train": len(train01),
            "real_val": len(dm.datasets["val"]),
            "real_test": test_count,
            "floor_train_subset": int(n_floor),
        },
        "class_names": names,
        "classifier": {"source": _relative(run.source, out_dir),
                       "checkpoint": _relative(run.checkpoint, out_dir),
                       "data_key": dm.data_key, "summary_test_acc": summary_acc},
        "samples": {"dir": _relative(samples.directory, out_dir),
                    **{key: samples.meta.get(key) for key in META_KEYS if key in samples.meta}},
        "seed": seed,
        "command": command,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "tstr_trainer_overrides": OmegaConf.to_container(OmegaConf.create(trainer_overrides or {})),
    }
    if isinstance(tstr_result, dict) and tstr_result.get("checkpoint"):
        tstr_result["checkpoint"] = _relative(tstr_result["checkpoint"], out_dir)
    if result["samples"].get("prior") and Path(result["samples"]["prior"]).exists():
        result["samples"]["prior"] = _relative(result["samples"]["prior"], out_dir)
    write_metrics(result, out_dir)
    return result


PHYSICS_METRICS = {"physics_median_ratio": "median_ratio", "physics_pass_rate": "pass_rate",
                   "physics_pass_rate_real_test": "real_test_pass_rate",
                   "physics_dtw_ratio": "dtw_ratio"}
"""metrics.json keys of the physical fidelity -> its result's keys (None when skipped)."""


def _physics_settings(physics: dict | bool | None) -> dict | None:
    """The physical-fidelity settings (`physics_settings` with the overrides `physics`), or
    None when `physics` is False."""
    from mdvq.evaluation.physical_fidelity import physics_settings

    return None if physics is False else physics_settings(**dict(physics or {}))


def _physical_fidelity(dm, samples: SampleSet, train01: np.ndarray, test01: np.ndarray,
                       settings: dict | None, seed: int, out_dir: Path) -> dict:
    """`physical_fidelity` of the samples against the datamodule's real train and test splits,
    or `{"skipped": why}` (disabled, or the data carry no physical axes)."""
    from mdvq.evaluation.physical_fidelity import dynamic_range_of, physical_fidelity

    if settings is None:
        return {"skipped": "physics=false"}
    if not settings["enabled"]:
        return {"skipped": "physics.enabled=false"}
    if dm.freqs_hz is None or dm.times_s is None:
        return {"skipped": "the data carry no Doppler (Hz) / time (s) axes"}
    labels = {s: dm.datasets[s].tensors[1].numpy() for s in ("train", "test")}
    return physical_fidelity(
        (samples.images, samples.labels), (train01, labels["train"]), (test01, labels["test"]),
        list(dm.class_names), dm.freqs_hz, dm.times_s,
        dynamic_range_of(dm, settings["dynamic_range_db"]), settings, seed, out_dir)


def _relative(path, out_dir) -> str:
    """`path` relative to the metrics folder (POSIX), so shared metrics name no machine path."""
    return Path(os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())).as_posix()


def write_metrics(result: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` (the whole result) and ``metrics.md`` (tables) to ``out_dir``."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "metrics.json", out_dir / "metrics.md"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(json_path)
    md_path.write_text(format_markdown(result))
    log.info("metrics: %s", json_path)
    return json_path, md_path


def read_metrics(path: str | Path) -> dict:
    """The result written by :func:`write_metrics` (a metrics folder or its ``metrics.json``);
    ``ValueError`` naming the file when it is missing or unreadable."""
    path = Path(path)
    path = path / "metrics.json" if path.is_dir() else path
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable generation metrics ({err})") from None
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
        raise ValueError(f"{path}: not the metrics of python -m mdvq.evaluate (no 'metrics')")  # noqa: TRY004
    return result


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def format_markdown(result: dict) -> str:
    """Markdown report of :func:`evaluate_generation`'s result."""
    m, c, cond = result["metrics"], result["counts"], result["conditional_accuracy"]
    cls = result["classifier"]
    rows = [
        ("conditional accuracy", m["conditional_accuracy"],
         f"chance {_fmt(m['chance_acc'])}, real test (TRTR) {_fmt(m['trtr_acc'])}"),
        ("FD(samples, real test)", m["fd_samples_test"],
         f"floor FD(real train, real test) {_fmt(m['fd_train_test_floor'])} +- "
         + f"{_fmt(m['fd_floor_std'], 2)} ({len(result['frechet']['floor_values'])} "
         + f"subsets of {c['floor_train_subset']} train examples)"),
        ("TSTR accuracy", m["tstr_acc"],
         f"TRTR {_fmt(m['trtr_acc'])}, ratio {_fmt(m['tstr_trtr_ratio'])}"),
    ]
    lines = ["# Generation metrics", ""]
    lines.append(f"Samples: `{result['samples']['dir']}` ({c['samples']}); classifier: "
                 f"`{cls['checkpoint']}` (data `{cls['data_key']}`).")
    cells = [[name, _fmt(value), ref] for name, value, ref in rows]
    judge = result.get("judge")
    if judge:  # metrics written before the judge's profile was added have none
        js, jr = judge["samples"], judge["real_test"]
        cells.append(["judge confidence (mean top-1 probability)", _fmt(js["mean_confidence"]),
                      f"real test {_fmt(jr['mean_confidence'])}"])
    lines += ["", markdown_table(["metric", "value", "reference"], cells), ""]
    if judge:
        header = ["class", "asked", "conditional accuracy",
                  "judge confidence (samples / real test)",
                  "share of all votes (samples / real test)"]
        def both(key: str, name: str) -> str:  # samples / real test
            return f"{_fmt(js[key][name], 3)} / {_fmt(jr[key][name], 3)}"

        per_class = [[name, str(cond["counts"][name]), _fmt(cond["per_class"][name]),
                      both("confidence_per_class", name), both("predicted_share", name)]
                     for name in result["class_names"]]
    else:
        header = ["class", "asked", "conditional accuracy"]
        per_class = [[name, str(cond["counts"][name]), _fmt(cond["per_class"][name])]
                     for name in result["class_names"]]
    lines.append(markdown_table(header, per_class))
    lines.append("")
    phys = result.get("physical_fidelity")
    if phys:  # metrics written before the physical fidelity was added have none
        from mdvq.evaluation.physical_fidelity import format_markdown as physics_markdown

        lines.append(physics_markdown(phys))
    lines.append(f"Real splits: train {c['real_train']}, val {c['real_val']}, test "
                 f"{c['real_test']}. FD in squared feature units of the classifier's penultimate "
                 f"layer (d = {result['frechet']['feature_dim']}).")
    if result.get("command"):
        lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"
