"""Command: the phase-1 decision rule on two finished runs.

    python -m mdvq.decide VQ_RUN KL_RUN [out=PATH] [psnr_margin=0.10] [usage_threshold=0.80]

VQ_RUN / KL_RUN are run folders (or their summary.json). Prints the verdict and writes
decision.json (default: in VQ_RUN). The thresholds default to conf/decision/default.yaml, the
source phase 1 and the DecisionRule callback use too. Exit status 0 on success, 2 on bad input.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mdvq.evaluation.decision import (
    DECISION_NAME,
    decide_runs,
    format_decision,
    thresholds,
    write_decision,
)
from mdvq.runs.summary import RunSummary
from mdvq.utils import cli

POSITIONAL = [cli.Arg("vq_run", help="VQ-VAE run folder (or its summary.json)"),
              cli.Arg("kl_run", help="KL-VAE run folder (or its summary.json)")]
OPTIONS = [
    cli.Arg("out", str, None, f"where to write the decision (None: VQ_RUN/{DECISION_NAME})"),
    cli.Arg("psnr_margin", float, None, "relative PSNR margin the VQ-VAE must beat "
            "(None: conf/decision/default.yaml)"),
    cli.Arg("usage_threshold", float, None, "codebook usage the VQ-VAE must exceed "
            "(None: conf/decision/default.yaml)"),
]


def main(argv: list[str]) -> Path:
    """Parse `argv`, decide, print and write the decision; returns the file written."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    opts, _ = cli.parse(argv, "mdvq.decide", POSITIONAL, OPTIONS, doc=__doc__.split("\n\n")[0])
    limits = thresholds()
    for key in limits:
        if opts[key] is not None:
            limits[key] = opts[key]
    decision = decide_runs(opts["vq_run"], opts["kl_run"], **limits)
    out = write_decision(decision, opts["out"] or RunSummary.path_of(opts["vq_run"]).parent
                         / DECISION_NAME)
    print(format_decision(decision))
    print(f"wrote {out}")
    return out


def console() -> None:
    """Console-script entry (`mdvq-decide`): exits with the command's status."""
    sys.exit(cli.run(main))


if __name__ == "__main__":
    console()
