"""Small sample grids of both routes for the README: the first N samples of each class.

    python experiments/routes/figures.py ROUTES_DIR [--per-class 4] [--out experiments/routes]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mdvq.core.samples import load_samples
from mdvq.utils.plotting import sample_grid_figure, save_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("routes_dir", type=Path)
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    for route in ("kl", "vq"):
        samples = load_samples(args.routes_dir / f"samples_{route}")
        keep = np.concatenate([np.flatnonzero(samples.labels == c)[:args.per_class]
                               for c in range(len(samples.class_names))])
        meta = samples.meta
        fig = sample_grid_figure(samples.images[keep], samples.labels[keep], samples.class_names,
                                 meta.get("freqs_hz"), meta.get("times_s"), args.per_class,
                                 suptitle=f"{route.upper()} route: {meta.get('prior_kind')}, "
                                          f"{meta.get('steps')} steps, guidance {meta.get('guidance')}")
        fig.set_dpi(60)
        print(save_figure(fig, args.out / f"samples_{route}.png"))


if __name__ == "__main__":
    main()
