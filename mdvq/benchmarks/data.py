"""Data-pipeline rates: the embedded simulator's generation rate, and spectrograms per second
delivered by the cached datamodule's training loader (to compare with what a model consumes).

Generalises experiments/bench_simulator.py (generation, then a cached load) to the datamodule
the runs use (`data=radar`, composed from conf/ as `python -m mdvq.run` does).
"""

from __future__ import annotations

import time
from pathlib import Path

from mdvq.core.compose import compose_config


def data_rates(cache_dir: Path, num_per_class: int = 50, epochs: int = 2,
               overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Simulate `num_per_class` spectrograms per class into the empty folder `cache_dir`, then
    read them back through a fresh `SpectrogramDataModule` and iterate its training loader
    `epochs` times.

    Returns `{"n", "native_shape", "generate_s", "simulated_per_s", "cached_setup_s",
    "train_examples", "loader_per_s", "batch_size", "image_size"}` (seconds, spectrograms/s).
    """
    from mdvq.core.compose import build

    if num_per_class < 1 or epochs < 1:
        raise ValueError(f"num_per_class and epochs must be >= 1, got {num_per_class}, {epochs}")
    cache_dir = Path(cache_dir)
    if any(cache_dir.glob("radar-*")):
        raise ValueError(f"{cache_dir} already holds a simulated set: the generation time "
                         "would be a cache hit (give an empty folder)")
    cfg = compose_config(["data=radar", f"data.datamodule.source.num_per_class={num_per_class}",
                          f"data.datamodule.source.cache_dir={cache_dir}",
                          "data.datamodule.source.progress=false", *overrides])
    source = build(cfg.data.datamodule.source)
    start = time.perf_counter()
    data = source.load()
    generate_s = time.perf_counter() - start

    dm = build(cfg.data.datamodule)
    start = time.perf_counter()
    dm.prepare_data()
    dm.setup("fit")
    setup_s = time.perf_counter() - start
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, _y in dm.train_dataloader():
            count += x.shape[0]
    loader_s = time.perf_counter() - start
    return {"n": len(data), "native_shape": list(data.images.shape[2:]),
            "generate_s": round(generate_s, 2), "simulated_per_s": round(len(data) / generate_s, 1),
            "cached_setup_s": round(setup_s, 3), "train_examples": dm.split_counts["train"],
            "loader_per_s": round(count / loader_s, 0), "batch_size": dm.batch_size,
            "image_size": list(dm.image_size)}
