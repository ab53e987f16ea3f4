"""Physical fidelity of known cases on the default simulated data (`data=radar`, 64 x 64).

"Samples" stand in for a generator: a random subset of the real train split (a generator that
copies its training data: the floor's own distribution, ratios about 1 by construction), the
real validation split (real against real, but other subjects than train and test: about 1 up
to the spread between subject groups), the validation split
shifted up in Doppler by `--shift-bins` bins (physically off: ratios >> 1), and uniform noise
images (nothing passes). Real train and test are the datamodule's subject-disjoint splits,
exactly as `python -m mdvq.evaluate` uses them.

    python experiments/physics_metrics/real_floor.py [--cache-dir .cache/mdvq] [--shift-bins 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mdvq.data.datamodule import SpectrogramDataModule
from mdvq.data.simulator import RadarSimulatorSource
from mdvq.evaluation.physical_fidelity import (
    dynamic_range_of,
    format_markdown,
    physical_fidelity,
    physics_settings,
)
from mdvq.utils.pixels import to_unit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", default=".cache/mdvq", help="simulated data cache")
    ap.add_argument("--shift-bins", type=int, default=4, help="Doppler shift of the off case")
    ap.add_argument("--out", default=None, help="write the figures of the real case here")
    args = ap.parse_args()
    dm = SpectrogramDataModule(RadarSimulatorSource(cache_dir=args.cache_dir, progress=False),
                               image_size=(64, 64))
    dm.setup()
    split = {s: (to_unit(dm.datasets[s].tensors[0].float()).clamp(0, 1).numpy(),
                 dm.datasets[s].tensors[1].numpy()) for s in ("train", "val", "test")}
    settings = physics_settings()
    d_range = dynamic_range_of(dm, settings["dynamic_range_db"])
    x, y = split["val"]
    bin_hz = float(dm.freqs_hz[1] - dm.freqs_hz[0])
    pick = np.sort(np.random.default_rng(1).choice(len(split["train"][0]), len(x), replace=False))
    cases = {
        "real train subset (copies of the training data)": (split["train"][0][pick],
                                                              split["train"][1][pick]),
        "real validation split (other subjects)": (x, y),
        f"validation shifted +{args.shift_bins} bins ({args.shift_bins * bin_hz:.0f} Hz)":
            (np.roll(x, args.shift_bins, axis=2), y),
        "uniform noise images": (np.random.default_rng(0).uniform(0, 1, x.shape).astype(np.float32), y),
    }
    print(f"data {dm.data_key}: {dm.split_counts}; dynamic range {d_range} dB; bin {bin_hz:.2f} Hz")
    rows = []
    for name, samples in cases.items():
        t0 = time.time()
        out = args.out if name.startswith("real validation") else None
        phys = physical_fidelity(samples, split["train"], split["test"], dm.class_names,
                                 dm.freqs_hz, dm.times_s, d_range, settings, seed=0, out_dir=out)
        wall = time.time() - t0
        rows.append((name, phys, wall))
        print(f"\n### {name} ({wall:.0f} s)\n")
        print(format_markdown(phys))
    print("| samples | median W ratio | sifting pass rate (real test) | envelope DTW ratio | wall [s] |")
    print("|---|---:|---:|---:|---:|")
    for name, phys, wall in rows:
        print(f"| {name} | {phys['median_ratio']:.3g} | {phys['pass_rate']:.2f} "
              f"({phys['real_test_pass_rate']:.2f}) | {phys['dtw_ratio']:.3g} | {wall:.0f} |")


if __name__ == "__main__":
    main()
