"""`SpectrogramGrid`: input spectrograms beside their reconstructions, on physical axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback
from matplotlib.figure import Figure

from mdvq.evaluation.metrics import psnr_per_image
from mdvq.utils.figures import figure_path, resolve_output_dir, save_and_log_figure, stage_label
from mdvq.utils.plotting import plot_spectrogram


def spectrogram_grid_figure(
    targets: np.ndarray,
    recons: np.ndarray,
    titles: list[str] | None = None,
    times_s: np.ndarray | None = None,
    freqs_hz: np.ndarray | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Inputs (top row) above their reconstructions (bottom row), one column per example.

    targets, recons: `(N, C, F, T)` in [0,1] (channel 0 is drawn). times_s `(T,)` in seconds
    and freqs_hz `(F,)` ascending Doppler in Hz give the axes (bins without them), drawn by
    `mdvq.utils.plotting.plot_spectrogram` (origin="lower": positive Doppler up) on a shared [0,1]
    colour bar. Each reconstruction is titled with its PSNR in dB.

    The margins are fixed (in inches) rather than computed by matplotlib's constrained layout,
    which took about two thirds of the figure's cost (about 1.2 s -> 0.5 s of CPU for 8
    examples, drawn at every validation epoch).
    """
    targets, recons = np.asarray(targets), np.asarray(recons)
    n = len(targets)
    psnr = psnr_per_image(torch.from_numpy(recons), torch.from_numpy(targets)).numpy()
    width, height = 2.2 * n + 1.6, 4.6  # inches: panels, then the y labels and the colour bar
    left, right, bottom, top = 0.9, 1.0, 0.55, 0.75  # margins in inches
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=0.08, hspace=0.25)
    axes = fig.subplots(2, n, squeeze=False, sharex=True, sharey=True)
    image = None
    for i in range(n):
        title = titles[i] if titles else f"example {i}"
        image = plot_spectrogram(axes[0, i], targets[i, 0], freqs_hz, times_s, title)
        plot_spectrogram(axes[1, i], recons[i, 0], freqs_hz, times_s, f"{psnr[i]:.1f} dB")
        for ax in axes[:, i]:
            ax.label_outer()
    for row, name in enumerate(("input", "reconstruction")):
        axes[row, 0].set_ylabel(f"{name}\n{axes[row, 0].get_ylabel()}")
    bar = fig.add_axes((1 - 0.85 / width, bottom / height, 0.12 / width,
                        1 - (bottom + top) / height))
    fig.colorbar(image, cax=bar, label="normalised magnitude [0,1]")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


class SpectrogramGrid(Callback):
    """Draws the first `num_examples` of the first val (and test) batch beside their reconstruction.

    Uses the `"target"`/`"recon"` `(B, C, F, T)` in [0,1] the step returned and the labels of
    the batch `(x, y)`. Axes come from `trainer.datamodule.times_s` (s) and `.freqs_hz` (Hz)
    when present, titles from `.class_names`. The figure is written (rank zero) as
    `output_dir/figures/spectrograms_val_epoch{E:04d}.png` or `spectrograms_test.png` and sent
    to the image loggers (W&B, TensorBoard).

    Args:
        num_examples: examples per grid (at most the batch size).
        every_n_epochs: draw validation grids on epochs 0, n, 2n, ...; test grids always.
        output_dir: folder for the PNGs; None means `trainer.log_dir`.
    """

    def __init__(
        self, num_examples: int = 8, every_n_epochs: int = 1, output_dir: str | None = None
    ):
        if num_examples < 1 or every_n_epochs < 1:
            raise ValueError(
                "callbacks.spectrogram_grid: num_examples and every_n_epochs must be >= 1, got "
                f"{num_examples} and {every_n_epochs}"
            )
        self.num_examples = int(num_examples)
        self.every_n_epochs = int(every_n_epochs)
        self.output_dir = output_dir
        self._kept: dict | None = None
        self._dir: Path | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._dir = resolve_output_dir(trainer, self.output_dir)

    def _wanted(self, trainer, stage: str) -> bool:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return False
        return stage == "test" or trainer.current_epoch % self.every_n_epochs == 0

    def _keep(self, trainer, stage, outputs, batch, batch_idx, dataloader_idx) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or not self._wanted(trainer, stage):
            return
        if not (isinstance(outputs, dict) and "target" in outputs and "recon" in outputs):
            return
        k = self.num_examples
        labels = None
        if isinstance(batch, (tuple, list)) and len(batch) > 1 and torch.is_tensor(batch[1]):
            labels = batch[1][:k].detach().cpu().tolist()
        self._kept = {
            "targets": outputs["target"][:k].detach().float().cpu().numpy(),
            "recons": outputs["recon"][:k].detach().float().cpu().numpy(),
            "labels": labels,
        }

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        self._keep(trainer, "val", outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._keep(trainer, "test", outputs, batch, batch_idx, dataloader_idx)

    def _titles(self, trainer, labels: list[int] | None) -> list[str] | None:
        if labels is None:
            return None
        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule else None
        if names:
            return [names[y] if 0 <= y < len(names) else f"class {y}" for y in labels]
        return [f"class {y}" for y in labels]

    def _draw(self, trainer, stage: str) -> None:
        kept, self._kept = self._kept, None
        if kept is None:
            return
        dm = trainer.datamodule
        epoch = trainer.current_epoch
        fig = spectrogram_grid_figure(
            kept["targets"],
            kept["recons"],
            titles=self._titles(trainer, kept["labels"]),
            times_s=getattr(dm, "times_s", None),
            freqs_hz=getattr(dm, "freqs_hz", None),
            suptitle=f"{stage_label(stage, epoch)}: inputs (top) and reconstructions (bottom)",
        )
        path = figure_path(self._dir, "spectrograms", stage, epoch)
        save_and_log_figure(trainer, fig, f"{stage}/spectrograms", path)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._draw(trainer, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._draw(trainer, "test")
