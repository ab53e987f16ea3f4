"""Command: tabulate, rank and plot the jobs of a sweep (a Hydra multirun or an Optuna search).

    python -m mdvq.sweep SWEEP_DIR [out=DIR] [sort=test/psnr] [split=test] [order=auto]

Writes `sweep.md` (ranked table, failed jobs with their error), `sweep.csv` (every column, full
precision) and `sweep.png` (usage and PSNR against K) into DIR (default SWEEP_DIR) and prints
the table (`mdvq.runs.sweeps`). Exit status 0, 1 when the folder holds no job, 2 on bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mdvq.runs.sweeps import summarise
from mdvq.utils import cli
from mdvq.utils.metric_keys import TEST_PSNR

POSITIONAL = [cli.Arg("sweep_dir", help="a multirun/Optuna sweep folder")]
OPTIONS = [
    cli.Arg("out", str, None, "output folder (None: SWEEP_DIR)"),
    cli.Arg("sort", str, TEST_PSNR, "metric (test/psnr, val/codebook_usage) or column (K)"),
    cli.Arg("split", str, None, "train | val | test: split of the metric columns (None: sort's)"),
    cli.Arg("order", str, "auto", "auto (losses ascending, others descending) | ascending | descending"),
    cli.Arg("min_usage", float, 0.8, "usage threshold of the decision rule (fraction of K)"),
]


def main(argv: list[str]) -> int:
    """Parse `argv`, write the tables and plot, print the table; returns the exit status."""
    opts, _ = cli.parse(argv, "mdvq.sweep", POSITIONAL, OPTIONS, doc=__doc__.split("\n\n")[0])
    if opts["split"] not in (None, "train", "val", "test"):
        raise cli.UsageError(f"split must be train, val or test, got {opts['split']!r}")
    orders = {"auto": None, "ascending": False, "descending": True}
    if opts["order"] not in orders:
        raise cli.UsageError(f"order must be one of {', '.join(orders)}, got {opts['order']!r}")
    sweep_dir = Path(opts["sweep_dir"])
    rows, markdown = summarise(sweep_dir, opts["out"], opts["sort"], opts["split"],
                               orders[opts["order"]], opts["min_usage"])
    print(markdown, end="")
    out = Path(opts["out"] or sweep_dir)
    print(f"\nwritten: {out / 'sweep.md'}, {out / 'sweep.csv'}, {out / 'sweep.png'}")
    return 0 if rows else 1


def console() -> None:
    """Console-script entry (`mdvq-sweep`): exits with the command's status."""
    sys.exit(cli.run(main))


if __name__ == "__main__":
    console()
