"""Command: the phase-1 decision rule on two finished runs, or on a routes experiment.

    python -m mdvq.decide VQ_RUN KL_RUN [out=PATH] [psnr_margin=0.10] [usage_threshold=0.80]
                          [force=true]
    python -m mdvq.decide ROUTES_DIR

VQ_RUN / KL_RUN are run folders (or their summary.json): prints the verdict and writes
decision.json (default: in VQ_RUN). A routes folder (`experiment=routes`) gets the same rule,
unchanged, on its two autoencoders, and next to it the generation evidence of every row
(conditional accuracy, FD/floor, TSTR/TRTR), the verdict and which factor explains the gap.
The thresholds default to conf/decision/default.yaml, the source phase 1 and the DecisionRule
callback use too. Runs trained on different data (their `data_key`s differ) are refused unless
`force=true`, which decision.json records with both keys. Exit status 0 on success, 2 on bad
input.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mdvq.core.summary import RunSummary
from mdvq.evaluation.decision import (
    DECISION_NAME,
    decide_runs,
    format_decision,
    thresholds,
    write_decision,
)
from mdvq.utils import cli

POSITIONAL = [cli.Arg("runs", list, help="VQ_RUN KL_RUN (run folders), or one routes folder")]
OPTIONS = [
    cli.Arg("out", str, None, f"where to write the decision (None: VQ_RUN/{DECISION_NAME})"),
    cli.Arg("psnr_margin", float, None, "relative PSNR margin the VQ-VAE must beat "
            "(None: conf/decision/default.yaml)"),
    cli.Arg("usage_threshold", float, None, "codebook usage the VQ-VAE must exceed "
            "(None: conf/decision/default.yaml)"),
    cli.Arg("force", bool, False, "decide even when the runs used different data (data_key); "
            "recorded in decision.json"),
]


def main(argv: list[str]) -> Path:
    """Parse `argv`, decide, print and write the decision; returns the file written."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    opts, _ = cli.parse(argv, "mdvq.decide", POSITIONAL, OPTIONS,
                        doc="\n\n".join(__doc__.split("\n\n")[:2]))
    limits = thresholds()
    for key in limits:
        if opts[key] is not None:
            limits[key] = opts[key]
    runs = opts["runs"]
    routes = None
    if len(runs) == 1:
        from mdvq.runs.experiments import read_routes

        routes = Path(runs[0])
        table = read_routes(routes)
        stages = table.get("stages") or {}  # a stage reused from elsewhere names its folder
        runs = [routes / ((stages.get(s) or {}).get("dir") or s) for s in ("vqvae", "klvae")]
    elif len(runs) != 2:
        raise cli.UsageError(f"expected VQ_RUN KL_RUN or one routes folder, got {runs}")
    decision = decide_runs(runs[0], runs[1], **limits, force=opts["force"])
    default = (routes if routes else RunSummary.path_of(runs[0]).parent) / DECISION_NAME
    out = write_decision(decision, opts["out"] or default)
    print(format_decision(decision))
    if routes is not None:
        from mdvq.runs.experiments import routes_evidence

        print(f"\nGeneration evidence (experiment=routes, {len(table['rows'])} rows):\n")
        print(routes_evidence(table))
    print(f"wrote {out}")
    return out


def console() -> None:
    """Console-script entry (`mdvq-decide`): exits with the command's status."""
    sys.exit(cli.run(main))


if __name__ == "__main__":
    console()
