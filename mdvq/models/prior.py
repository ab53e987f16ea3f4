"""What both class-conditional priors share (the VQ-Diffusion prior on code maps and the
latent-diffusion prior on KL-VAE latents): the data description they keep for sampling from a
checkpoint alone, the refusal of callbacks that monitor metrics a prior never logs, the
validation/test steps and the sample grids drawn at validation and test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def data_info(datamodule) -> dict:
    """Class names, axes (plain lists: Hz, s) and data key of a datamodule."""
    def plain(a):
        return None if a is None else np.asarray(a, dtype=float).tolist()

    return {"class_names": [str(c) for c in datamodule.class_names],
            "freqs_hz": plain(getattr(datamodule, "freqs_hz", None)),
            "times_s": plain(getattr(datamodule, "times_s", None)),
            "data_key": getattr(datamodule, "data_key", None)}


class ConditionalPrior:
    """Mixin of a class-conditional prior `LightningModule`.

    The module sets `logged` (metric names it logs under train/, val/, test/), `experiment`
    (the experiment file that selects its callbacks), `data_info` (a dict), `num_classes`,
    `hparams.val_samples_per_class`, `hparams.sample_every_n_epochs`, `hparams.output_dir`,
    and implements `_eval_step(batch, batch_idx, stage)`, `generate(labels, generator=...)`,
    `decode(...)` and `_sample_title()` (the sampler settings shown on the grid).
    """

    logged: tuple[str, ...] = ()
    experiment: str = ""

    def set_up_data(self, datamodule) -> tuple[int, int]:
        """Prepare and set up the spectrogram datamodule a prior wraps, check its class count
        against `model.num_classes` (ValueError naming the key) and return its `(F, T)`."""
        datamodule.prepare_data()
        datamodule.setup("fit")
        names = list(datamodule.class_names)
        if len(names) != self.num_classes:
            raise ValueError(f"model.num_classes is {self.num_classes} but the data has "
                             f"{len(names)} classes {names}: set model.num_classes={len(names)}")
        return tuple(int(s) for s in datamodule.image_size)

    def take_data_info(self) -> None:
        """Take class names and axes from the trainer's datamodule; refuse callbacks that
        monitor a metric this prior never logs (e.g. the phase-1 `val/psnr`)."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "class_names", None):
            self.data_info = data_info(dm)
        for cb in self.trainer.callbacks:
            monitor = getattr(cb, "monitor", None)
            if isinstance(monitor, str) and monitor.split("/")[-1] not in self.logged:
                raise ValueError(f"callback {type(cb).__name__} monitors {monitor!r}, which this "
                                 f"prior does not log (it logs {list(self.logged)} under train/, "
                                 f"val/, test/): run with experiment={self.experiment}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store class names and axes (plain lists) for sampling from the checkpoint alone."""
        checkpoint["mdvq_data_info"] = self.data_info

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore what :meth:`on_save_checkpoint` stored."""
        self.data_info = dict(checkpoint.get("mdvq_data_info") or {})

    def validation_step(self, batch, batch_idx: int) -> dict:
        """The prior's loss terms on the validation split (fixed noise), logged under `val/`."""
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> dict:
        """As :meth:`validation_step`, logged under `test/`."""
        return self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.current_epoch % self.hparams.sample_every_n_epochs:
            return
        self._sample_figure("val")

    def on_test_epoch_end(self) -> None:
        self._sample_figure("test")

    def _sample_figure(self, stage: str) -> None:
        """`hparams.val_samples_per_class` samples of each class as a grid (rank zero)."""
        per_class = self.hparams.val_samples_per_class
        if per_class < 1 or not self.trainer.is_global_zero:
            return
        from mdvq.utils.figures import figure_path, resolve_output_dir, save_and_log_figure
        from mdvq.utils.plotting import sample_grid_figure

        labels = torch.arange(self.num_classes).repeat_interleave(per_class)
        generator = torch.Generator(device=self.device).manual_seed(0)
        images = self.decode(self.generate(labels, generator=generator)).float().cpu().numpy()
        info = self.data_info
        fig = sample_grid_figure(
            images, labels.numpy(),
            info.get("class_names") or [str(c) for c in range(self.num_classes)],
            info.get("freqs_hz"), info.get("times_s"), per_class,
            suptitle=f"{stage} epoch {self.current_epoch}: samples, {self._sample_title()}")
        folder = Path(self.hparams.output_dir) if self.hparams.output_dir else resolve_output_dir(
            self.trainer, None)
        save_and_log_figure(self.trainer, fig, f"{stage}/samples",
                            figure_path(folder, "samples", stage, self.current_epoch))
