"""`ReconstructionMetrics`: PSNR and SSIM of reconstructions on [0,1] (docs/metrics.md)."""

from __future__ import annotations

from lightning.pytorch import Callback
from torchmetrics import MeanMetric
from torchmetrics.image import StructuralSimilarityIndexMeasure

from mdvq.callbacks.reporting import log_epoch_value
from mdvq.evaluation.metrics import psnr_per_image

STAGES = ("val", "test")


class ReconstructionMetrics(Callback):
    """Logs `{stage}/psnr` (dB) and `{stage}/ssim` for stage in val, test.

    Uses the `"target"` and `"recon"` `(B, C, F, T)` in [0,1] that validation/test steps return
    (the model is not run again). PSNR is computed per image with data_range 1 and averaged
    over the evaluation set (mean of per-image PSNR, not PSNR of the mean MSE); SSIM is
    torchmetrics' `StructuralSimilarityIndexMeasure(data_range=1)`. Both are torchmetrics
    states, so they are reduced over every batch and DDP rank before the epoch-end value.
    """

    def __init__(self):
        self.psnr = {s: MeanMetric() for s in STAGES}
        self.ssim = {s: StructuralSimilarityIndexMeasure(data_range=1.0) for s in STAGES}

    def _update(self, stage: str, outputs) -> None:
        if not (isinstance(outputs, dict) and "target" in outputs and "recon" in outputs):
            got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            raise ValueError(
                f"ReconstructionMetrics needs the {stage} step to return a dict with 'target' and "
                f"'recon' (B, C, F, T) in [0,1] (phase-1 contract); got {got}"
            )
        target, recon = outputs["target"].detach().float(), outputs["recon"].detach().float()
        psnr, ssim = self.psnr[stage], self.ssim[stage]
        if psnr.device != target.device:
            psnr.to(target.device)
            ssim.to(target.device)
        psnr.update(psnr_per_image(recon, target, data_range=1.0))
        ssim.update(recon, target)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        self._update("val", outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update("test", outputs)

    def _report(self, stage: str, pl_module) -> None:
        psnr, ssim = self.psnr[stage], self.ssim[stage]
        if psnr.update_count == 0:
            return
        log_epoch_value(pl_module, f"{stage}/psnr", psnr.compute())
        log_epoch_value(pl_module, f"{stage}/ssim", ssim.compute())
        psnr.reset()
        ssim.reset()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._report("val", pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._report("test", pl_module)
