"""Conditional accuracy of one or more trained priors against sampler settings (a table).

    python experiments/phase2/sampler_grid.py CLASSIFIER PRIOR [PRIOR ...] \
        --settings "steps=20,guidance=1.5" "steps=20,guidance=3,sampler=purity" \
        --n-per-class 20 --seed 0 --out experiments/phase2/grid.jsonl

Every setting of every prior (run folder or .ckpt) draws ``n_per_class`` samples of each class
with ``mdvq.runs.prior_sampling.sample_prior`` (the code path of ``python -m mdvq.sample``) and
scores them with the in-domain classifier (``python -m mdvq.evaluate``'s figures, without
TSTR): conditional accuracy overall and per class, the judge's mean confidence and its largest
vote share, and the Frechet distance to the real test split beside the real train/test floor at
the same number of examples. One JSON line per (prior, setting) is appended to ``--out`` and a
markdown table is printed. Nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from mdvq.evaluation.accuracy import conditional_accuracy, judge_profile, predict_proba
from mdvq.evaluation.classifier_run import load_classifier_run
from mdvq.evaluation.frechet import ClassifierFeatures, frechet_distance
from mdvq.runs.prior_sampling import load_prior, sample_prior

KEYS = {"steps": int, "guidance": float, "sampler": str, "truncation": float,
        "temperature": float}
"""Setting keys and their types (the options of ``python -m mdvq.sample``)."""


def parse_setting(text: str) -> dict:
    """``"steps=20,guidance=1.5"`` -> ``{"steps": 20, "guidance": 1.5}`` (keys of KEYS)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in KEYS or not value:
            raise SystemExit(f"setting {text!r}: expected key=value with keys {list(KEYS)}")
        out[key] = KEYS[key](value)
    return out


def score(classifier, prior, setting: dict, n_per_class: int, seed: int, batch_size: int) -> dict:
    """Sample with ``setting`` and return the figures of one table row."""
    dm, model = classifier.datamodule, classifier.model
    images, labels, meta = sample_prior(prior, n_per_class, setting.get("steps"),
                                        setting.get("guidance"), seed, batch_size,
                                        sampler=setting.get("sampler"),
                                        truncation=setting.get("truncation"),
                                        temperature=setting.get("temperature"))
    names = list(dm.class_names)
    probs = predict_proba(model, images)
    cond = conditional_accuracy(probs.argmax(1), labels, names)
    judge = judge_profile(probs, labels, names)
    to01 = lambda x: ((x.float() + 1) / 2).clamp(0, 1)
    test01, train01 = to01(dm.datasets["test"].tensors[0]), to01(dm.datasets["train"].tensors[0])
    extractor = ClassifierFeatures(model)
    rng = np.random.default_rng(seed)
    subset = train01[np.sort(rng.choice(len(train01), size=min(len(images), len(train01)),
                                        replace=False))]
    fd = frechet_distance(extractor, test01, images)
    floor = frechet_distance(extractor, test01, subset)
    return {"setting": setting, "steps": meta["steps"], "guidance": meta["guidance"],
            "sampler": meta.get("sampler"), "truncation": meta.get("truncation"),
            "temperature": meta.get("temperature"),
            "samples_per_second": meta["samples_per_second"], "n": len(labels),
            "accuracy": cond["overall"], "per_class": cond["per_class"],
            "judge_confidence": judge["mean_confidence"],
            "judge_top_share": max(judge["predicted_share"].values()),
            "fd": fd, "fd_floor": floor, "fd_ratio": fd / floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("classifier")
    parser.add_argument("priors", nargs="+")
    parser.add_argument("--settings", nargs="+", default=["steps=20"])
    parser.add_argument("--n-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", default=None, help="JSON lines file to append to")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = [parse_setting(s) for s in args.settings]
    classifier = load_classifier_run(args.classifier)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    names = list(classifier.datamodule.class_names)
    print(f"| prior | steps | guidance | sampler | trunc. | temp. | acc | "
          f"{' | '.join(n[:8] for n in names)} | conf. | top share | FD/floor | samples/s |")
    print("|---" * (12 + len(names)) + "|")
    for path in args.priors:
        prior, source = load_prior(path, "cpu")
        for setting in settings:
            row = score(classifier, prior, setting, args.n_per_class, args.seed, args.batch_size)
            row.update(prior=str(path), checkpoint=os.path.relpath(source), commit=commit,
                       machine=f"{platform.node()} {torch.get_num_threads()} threads")
            per = " | ".join(f"{row['per_class'][n]:.2f}" for n in names)
            print(f"| {Path(path).name} | {row['steps']} | {row['guidance']} | {row['sampler']} | "
                  f"{row['truncation']} | {row['temperature']} | {row['accuracy']:.3f} | {per} | "
                  f"{row['judge_confidence']:.2f} | {row['judge_top_share']:.2f} | "
                  f"{row['fd_ratio']:.1f} | {row['samples_per_second']:.2f} |", flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
