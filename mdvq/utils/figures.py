"""Where figures go and how they are reported: PNG files under the run folder plus each logger
that takes images (W&B, TensorBoard). Used by callbacks and by the priors' sample grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mdvq.utils.plotting import save_figure


def resolve_output_dir(trainer, output_dir: str | Path | None) -> Path:
    """The folder callbacks write files to: `output_dir`, else `trainer.log_dir`.

    `trainer.log_dir` broadcasts from rank zero, so call this on every rank (e.g. in `setup`).
    """
    if output_dir is not None:
        return Path(output_dir)
    return Path(trainer.log_dir or trainer.default_root_dir)


def figure_path(directory: Path, kind: str, stage: str, epoch: int) -> Path:
    """`directory/figures/{kind}_val_epoch0003.png` for validation, `{kind}_test.png` for test."""
    name = f"{kind}_{stage}.png" if stage == "test" else f"{kind}_{stage}_epoch{epoch:04d}.png"
    return directory / "figures" / name


def stage_label(stage: str, epoch: int) -> str:
    """Figure title prefix: "val epoch 3" or "test"."""
    return stage if stage == "test" else f"{stage} epoch {epoch}"


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an RGB uint8 array `(H, W, 3)`."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_and_log_figure(trainer, fig: Figure, tag: str, path: Path) -> Path:
    """Save `fig` as PNG at `path` and send it to each logger that takes images, under `tag`.

    W&B gets it through `log_image`, TensorBoard through `add_figure`; other loggers (CSV)
    are skipped. Call on rank zero only.
    """
    step = trainer.global_step
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[figure_to_array(fig)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, fig, global_step=step, close=False)
    return save_figure(fig, path)
