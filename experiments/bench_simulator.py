"""Benchmark the embedded radar simulator: generation time, cached load time, cache size.

Usage: `python experiments/bench_simulator.py [--num-per-class 500] [--cache-dir DIR]`.
Prints a markdown table: N spectrograms, generation wall time [s] (simulate + STFT + write
the cache), spectrograms/s, cached load time [s], cache file size [MB] and the native (F, T).
Without --cache-dir a temporary folder is used and removed afterwards.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from mdvq.data.simulator import DEFAULT_CLASSES, RadarSimulatorSource


def bench(num_per_class: int, cache_dir: Path, progress: bool) -> dict:
    """Generate the set into `cache_dir`, then load it back from the cache; return figures."""
    kwargs = {"classes": DEFAULT_CLASSES, "num_per_class": num_per_class,
              "cache_dir": str(cache_dir)}
    src = RadarSimulatorSource(progress=progress, **kwargs)
    t0 = time.perf_counter()
    data = src.load()
    gen_s = time.perf_counter() - t0
    files = list(cache_dir.glob("radar-*.npz"))
    t0 = time.perf_counter()
    again = RadarSimulatorSource(progress=False, **kwargs).load()
    load_s = time.perf_counter() - t0
    assert len(again) == len(data)
    return {"n": len(data), "gen_s": gen_s, "rate": len(data) / gen_s, "load_s": load_s,
            "size_mb": sum(f.stat().st_size for f in files) / 1e6,
            "shape": tuple(data.images.shape[2:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-per-class", type=int, default=500)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache folder (must not hold this set yet); default: a temporary one")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        r = bench(args.num_per_class, cache, not args.no_progress)
    print(f"\nPython {platform.python_version()}, {platform.machine()}\n")
    print("| N spectrograms | generation wall time (s) | spectrograms/s | cached load (s) "
          "| cache file (MB) | native (F, T) |")
    print("|---:|---:|---:|---:|---:|---|")
    print(f"| {r['n']} | {r['gen_s']:.1f} | {r['rate']:.1f} | {r['load_s']:.2f} "
          f"| {r['size_mb']:.0f} | {r['shape']} |")


if __name__ == "__main__":
    main()
