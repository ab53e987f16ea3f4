"""Data preview: one example per class as a PNG grid with axes in seconds and Hz, and beside it
`preview.txt`: the derived settings (frequency resolution, time step, Doppler span, windows per
recording and per split), also printed.

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
    out = save_figure(fig, path)
    lines = preview_settings(datamodule)
    Path(out).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return out


def preview_settings(datamodule) -> list[str]:
    """The settings derived from the config and the sample rate, in words (after `setup`):
    frequency resolution [Hz], time step [s], Doppler span [Hz], the picture's steps, and the
    windows per recording and per split (`mdvq.data.overview.settings_lines`); `write_preview`
    writes them beside the picture as `preview.txt`."""
    from mdvq.data.overview import derived_settings, settings_lines

    return settings_lines(derived_settings(datamodule), getattr(datamodule, "split", None))


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Write `preview.png` into the run folder."""
    path = write_preview(instantiate(cfg.data.datamodule), Path(cfg.paths.output_dir) / "preview.png")
    log.info("preview written to %s", path)
    print(path)
    print(Path(path).with_suffix(".txt").read_text(), end="")


if __name__ == "__main__":
    main()
