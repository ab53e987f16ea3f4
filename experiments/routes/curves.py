"""Learning curve and sampling sweep of a trained prior, judged by the in-domain classifier.

    python experiments/routes/curves.py ROUTES_DIR [--prior latentdiffusion] [--per-class 20]
        [--steps 10,25,50] [--guidance 2.0] [--threads 2]

For every checkpoint kept in ROUTES_DIR/<prior>/checkpoints (e.g. saved every n epochs with
`callbacks.model_checkpoint.save_top_k=-1 callbacks.model_checkpoint.every_n_epochs=n`) it
draws `per_class` samples of each class at the prior's default steps and guidance and prints
the conditional accuracy (learning curve: accuracy against optimiser steps). Then, for the
final checkpoint, samples/s and accuracy against the number of steps (same batch of 64). Prints
markdown tables (the figures of experiments/routes/README.md).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from mdvq.evaluation.accuracy import conditional_accuracy, predict
from mdvq.evaluation.classifier_run import load_classifier_run
from mdvq.runs.prior_sampling import _load_checkpoint, load_prior, sample_prior


def judge(classifier, images, labels, names) -> dict:
    """Conditional accuracy (overall and per class) of images asked for `labels`."""
    return conditional_accuracy(predict(classifier.model, images), labels, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("routes_dir", type=Path)
    parser.add_argument("--prior", default="latentdiffusion")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--steps", default="10,25,50")
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classifier = load_classifier_run(args.routes_dir / "classifier")
    names = list(classifier.datamodule.class_names)

    ckpts = sorted((args.routes_dir / args.prior / "checkpoints").glob("*.ckpt"))
    print(f"## Learning curve: {args.prior}, {args.per_class} per class, default steps\n")
    print("| checkpoint | step | conditional accuracy | " + " | ".join(names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for ckpt in ckpts:
        module = _load_checkpoint(ckpt, [args.prior], "cpu")
        step = torch.load(ckpt, map_location="cpu", weights_only=False).get("global_step")
        images, labels, _ = sample_prior(module, args.per_class, guidance=args.guidance, seed=0)
        acc = judge(classifier, images, labels, names)
        per = " | ".join(f"{acc['per_class'][n]:.2f}" for n in names)
        print(f"| {ckpt.name} | {step} | {acc['overall']:.3f} | {per} |")

    module, source = load_prior(args.routes_dir / args.prior)
    print(f"\n## Sampling: {source.name}, batch 64, {args.per_class} per class\n")
    print("| steps | samples/s | conditional accuracy |")
    print("|---:|---:|---:|")
    for steps in (int(s) for s in re.split(r"[, ]+", args.steps) if s):
        images, labels, meta = sample_prior(module, args.per_class, steps, args.guidance, seed=0,
                                            batch_size=64)
        acc = judge(classifier, images, labels, names)
        print(f"| {steps} | {meta['samples_per_second']:.2f} | {acc['overall']:.3f} |")


if __name__ == "__main__":
    main()
