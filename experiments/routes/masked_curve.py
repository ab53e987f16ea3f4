"""Learning curves of token priors: validation masked-token accuracy against optimiser steps.

    python experiments/routes/masked_curve.py LABEL=PRIOR_RUN [...]

Reads each prior run's Lightning CSV log (``PRIOR_RUN/csv/version_*/metrics.csv``, the newest
version) and prints one markdown table: a column per run, a line per validation step, with the
validation masked-token accuracy (share of masked positions predicted right, [0, 1];
``val/masked_accuracy`` of the masked-token prior, ``val/masked_acc`` of VQ-Diffusion) and in
brackets ``val/loss`` (masked-token prior: cross-entropy on masked positions, nats per token;
VQ-Diffusion: its own variational objective, not comparable). Runs validated at different
steps leave blanks.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def validation_curve(run: str | Path) -> dict[int, tuple[float, float]]:
    """``{step: (val masked accuracy, val loss)}`` from a prior run's newest CSV log."""
    logs = sorted(Path(run).glob("csv/version_*/metrics.csv"),
                  key=lambda p: int(p.parent.name.split("_")[-1]))
    if not logs:
        raise SystemExit(f"{run}: no csv/version_*/metrics.csv (was it trained with logger=csv?)")
    curve = {}
    with logs[-1].open() as handle:
        for line in csv.DictReader(handle):
            accuracy = line.get("val/masked_accuracy") or line.get("val/masked_acc")
            if accuracy:
                curve[int(line["step"])] = (float(accuracy), float(line["val/loss"]))
    if not curve:
        raise SystemExit(f"{logs[-1]}: no val/masked_accuracy (is {run} a token prior run?)")
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=PRIOR_RUN")
    args = parser.parse_args()
    curves = {}
    for spec in args.runs:
        label, sep, run = spec.partition("=")
        if not (sep and label and run):
            raise SystemExit(f"{spec!r}: expected LABEL=PRIOR_RUN")
        curves[label] = validation_curve(run)
    steps = sorted({s for c in curves.values() for s in c})
    print("| step | " + " | ".join(curves) + " |")
    print("|---|" + "---|" * len(curves))
    for step in steps:
        cells = [f"{c[step][0]:.3f} ({c[step][1]:.2f})" if step in c else "" for c in curves.values()]
        print(f"| {step} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
