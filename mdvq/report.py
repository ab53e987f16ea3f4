"""Command: one self-contained HTML report of run, experiment and sweep folders.

    python -m mdvq.report RUN_OR_SWEEP_DIR... out=report.html [title=...]

Per run: config highlights, final metrics, learning curves, reconstruction / sample grids and
codebook usage; across runs: the runs compared, the phase-1 decisions, the routes tables, the
generation metrics and the samples grids (`mdvq.runs.report`). Pictures are embedded; the page
loads nothing from the network. Exit status 0, 2 on bad input.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mdvq.utils import cli

POSITIONAL = [cli.Arg("dirs", list, help="run, experiment or sweep folders (one or more)")]
OPTIONS = [
    cli.Arg("out", str, "report.html", "the HTML file to write"),
    cli.Arg("title", str, "mdvq report", "the page title"),
]


def main(argv: list[str]) -> Path:
    """Parse `argv` and write the report; returns its path."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opts, _ = cli.parse(argv, "mdvq.report", POSITIONAL, OPTIONS, doc=__doc__.split("\n\n")[0])
    from mdvq.runs.report import write_report

    path = write_report(opts["dirs"], opts["out"], opts["title"])
    print(f"wrote {path}")
    return path


def console() -> int:
    """Console-script entry (`mdvq-report`)."""
    return cli.run(main)


if __name__ == "__main__":
    sys.exit(console())
