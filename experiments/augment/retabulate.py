"""Tabulate a finished `experiment=augment` folder again, with today's table (a folder of
results, no training).

    python experiments/augment/retabulate.py AUGMENT_DIR [--out experiments/augment]

Reads `AUGMENT_DIR/augment.json` (fractions, arms, seeds, route) and every arm's
`k<k>/<arm>/seed<s>/stage.json`, adds the validation curves from the arms' CSV logs where a
stage was recorded before curves were (`mdvq.runs.augment.validation_curve`), and writes
`augment.json`, `augment.md` and `augment.png` into `--out` (never into AUGMENT_DIR: the run's
own record stays as it was written).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mdvq.runs.augment import augment_table, validation_curve, write_augment


def main() -> None:
    """Rebuild and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("augment_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    if args.out.resolve() == args.augment_dir.resolve():
        raise SystemExit("--out must differ from AUGMENT_DIR (the run's record is not rewritten)")
    old = json.loads((args.augment_dir / "augment.json").read_text())
    results = {}
    for name, info in old["fractions"].items():
        per_arm = {}
        for arm in old["arms"]:
            per_arm[arm] = {}
            for seed in old["seeds"]:
                run_dir = args.augment_dir / name / arm / f"seed{seed}"
                done = json.loads((run_dir / "stage.json").read_text())
                done.setdefault("val_curve", validation_curve(run_dir))
                per_arm[arm][str(seed)] = done
        results[name] = {**info, "arms": per_arm}
    table = augment_table(results, old["arms"], old["seeds"], old["route"], old["data_key"])
    args.out.mkdir(parents=True, exist_ok=True)
    write_augment(table, args.out)
    print(args.out / "augment.md")


if __name__ == "__main__":
    main()
