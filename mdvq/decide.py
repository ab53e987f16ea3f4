"""Command line for the phase-1 decision rule on two finished runs.

    python -m mdvq.decide VQ_RUN KL_RUN [--out PATH] [--psnr-margin 0.10] [--usage-threshold 0.80]

VQ_RUN / KL_RUN are run folders (or their summary.json). Prints the verdict and writes
decision.json (default: in VQ_RUN). Exit status 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mdvq.data.errors import DataError
from mdvq.decision import DECISION_NAME, decide_runs, format_decision, summary_path, write_decision


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m mdvq.decide`."""
    parser = argparse.ArgumentParser(
        prog="python -m mdvq.decide",
        description="Continue the VQ-VAE route only if PSNR_vq > (1 + margin) * PSNR_kl and "
        "codebook usage > threshold (test split); otherwise choose the KL-VAE.",
    )
    parser.add_argument("vq_run", help="VQ-VAE run folder (or its summary.json)")
    parser.add_argument("kl_run", help="KL-VAE run folder (or its summary.json)")
    parser.add_argument(
        "--out", help=f"where to write the decision (default: VQ_RUN/{DECISION_NAME})"
    )
    parser.add_argument(
        "--psnr-margin",
        type=float,
        default=0.10,
        help="relative PSNR margin the VQ-VAE must beat (0.10 = 10%%)",
    )
    parser.add_argument(
        "--usage-threshold",
        type=float,
        default=0.80,
        help="codebook usage (fraction of codes used on the test split) the VQ-VAE must exceed",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        decision = decide_runs(args.vq_run, args.kl_run, args.psnr_margin, args.usage_threshold)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = write_decision(decision, args.out or summary_path(args.vq_run).parent / DECISION_NAME)
    print(format_decision(decision))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
