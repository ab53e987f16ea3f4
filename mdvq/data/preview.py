"""Data preview: one example per class as a PNG grid with axes in seconds and Hz.

`python -m mdvq.data.preview data=radar` (same config and overrides as `mdvq.run`), or
`python -m mdvq.run task=preview`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from mdvq.utils.pixels import to_unit
from mdvq.utils.plotting import save_figure, spectrogram_grid

log = logging.getLogger(__name__)


def write_preview(datamodule, path: str | Path, split: str = "train") -> Path:
    """Plot the first example of every class in `split` of a datamodule; returns the PNG path."""
    datamodule.setup("fit")
    x, y = datamodule.datasets[split].tensors
    images, titles = [], []
    for c, name in enumerate(datamodule.class_names):
        hits = np.flatnonzero(y.numpy() == c)
        if len(hits) == 0:
            continue
        images.append(to_unit(x[hits[0]]).numpy())
        titles.append(f"{name} ({len(hits)} in {split})")
    fig = spectrogram_grid(images, titles, datamodule.freqs_hz, datamodule.times_s,
                           suptitle=f"{type(datamodule.source).__name__}: one example per class")
    return save_figure(fig, path)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Write `preview.png` into the run folder."""
    path = write_preview(instantiate(cfg.data.datamodule), Path(cfg.paths.output_dir) / "preview.png")
    log.info("preview written to %s", path)
    print(path)


if __name__ == "__main__":
    main()
