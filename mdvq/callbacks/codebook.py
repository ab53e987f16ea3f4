"""`CodebookMonitor`: codebook usage, perplexity, token entropy and dead codes of a VQ model
(docs/metrics.md, docs/fsq.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics import Metric

from mdvq.callbacks.reporting import log_epoch_value
from mdvq.callbacks.wandb_review import log_wandb_histogram
from mdvq.evaluation.metrics import (
    CodeCounts,
    DeadCodeTracker,
    code_counts,
    codebook_usage,
    perplexity,
)
from mdvq.utils.figures import figure_path, resolve_output_dir, save_and_log_figure, stage_label
from mdvq.utils.metric_keys import TRAIN_DEAD_CODES

log = logging.getLogger(__name__)

STAGES = ("val", "test")


def _indices(outputs) -> torch.Tensor | None:
    """The `"indices"` `(B, h, w)` a step returned, or None (e.g. a KL-VAE step)."""
    if isinstance(outputs, dict):
        return outputs.get("indices")
    return None


def code_use_figure(counts: np.ndarray, title: str) -> Figure:
    """Sorted code frequencies (most used first) with the uniform level 1/K as a dashed line."""
    counts = np.asarray(counts, dtype=np.float64)
    freq = np.sort(counts / max(counts.sum(), 1.0))[::-1]
    rank = np.arange(len(freq))
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.fill_between(rank, freq, step="mid", alpha=0.4)
    ax.plot(rank, freq, drawstyle="steps-mid", lw=1)
    ax.axhline(1.0 / len(freq), color="k", ls="--", lw=0.8, label="uniform 1/K")
    ax.set_xlim(-0.5, len(freq) - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("fraction of selections")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def token_entropy(counts: Tensor) -> float:
    """Token entropy in nats per position: `H(p) = -sum p log p` of the code frequencies
    `p = counts / counts.sum()` pooled over every position of every code map (natural log).

    The definition of "token entropy" in `experiments/phase2/README.md` (5.73 nats at K=512),
    computed there by `experiments/routes/decoder_floor.py` (`entropy` of the histogram of all
    code maps); `log(perplexity)`. `log K` for uniform use, 0 for a collapse. ValueError when
    nothing was counted.
    """
    total = counts.sum()
    if int(total) <= 0:
        raise ValueError("token entropy of an empty count (no code selected)")
    p = counts[counts > 0].double() / total.double()
    return float(-(p * p.log()).sum())


def map_entropies(indices: Tensor, num_codes: int) -> Tensor:
    """Entropy in nats of each code map's own histogram: `(B, h, w)` integer codes -> `(B,)`
    float64 (`experiments/routes/decoder_floor.py`'s "per-map entropy": the codes one
    spectrogram uses, a lower figure than the pooled `token_entropy` when maps differ)."""
    if indices.dim() < 2:
        raise ValueError(f"expected code maps (B, h, w), got shape {tuple(indices.shape)}")
    flat = indices.reshape(indices.shape[0], -1).long()
    counts = torch.zeros(flat.shape[0], num_codes, dtype=torch.float64, device=flat.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    p = counts / flat.shape[1]
    return -(p * p.clamp_min(1e-300).log()).sum(1)


class MapEntropy(Metric):
    """Mean per-map entropy (nats, :func:`map_entropies`) over an evaluation pass, summed over
    all DDP ranks before the mean is taken."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, num_codes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_codes = int(num_codes)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("maps", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, indices: Tensor) -> None:
        """Add the maps of one batch of code maps `(B, h, w)`."""
        h = map_entropies(indices, self.num_codes)
        self.total += h.sum().to(self.total.device)
        self.maps += h.numel()

    def compute(self) -> Tensor:
        """Mean entropy per map in nats (float64 scalar)."""
        return self.total / self.maps.clamp_min(1)


def max_usage(selections: int, num_codes: int) -> float:
    """The highest codebook usage `selections` code selections can show: `min(1, selections / K)`.

    A usage figure is comparable with a threshold (the decision rule's 80 %) only when this
    bound is well above it: 4,096 selections of K=512 codes allow 1.0, 256 allow 0.5.
    """
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    return min(1.0, max(int(selections), 0) / num_codes)


class CodebookMonitor(Callback):
    """Logs `{stage}/codebook_usage`, `{stage}/perplexity`, `{stage}/token_entropy`,
    `{stage}/token_entropy_per_map` and `{stage}/dead_codes` of a VQ model (any quantiser:
    learned codebooks and FSQ alike, under the same keys).

    Token entropy is in nats per position, pooled over all maps (:func:`token_entropy`, the
    definition of `experiments/phase2/README.md`); the per-map figure is the mean entropy of
    each map's own histogram (:func:`map_entropies`).

    With each usage figure it states what the figure rests on: `{stage}/codebook_selections`
    (code selections counted in the pass, all batches and ranks: examples x h x w) and
    `{stage}/codebook_usage_max` (`min(1, selections / K)`, the most that count can show); a
    warning is logged when that maximum is below 1 (docs/metrics.md).

    Reads the `"indices"` `(B, h, w)` the module's steps return (nothing is recomputed):
    training steps feed a dead-code tracker (a code is dead when not selected during the last
    `dead_code_window` optimizer steps, over all ranks); validation and test steps feed code
    counts summed over every batch and rank of the pass, from which usage (fraction of the K
    codes selected at least once) and perplexity (`exp(H(p))`) are taken at epoch end.
    `train/dead_codes` is logged at the end of each training epoch too.

    Args:
        dead_code_window: N, the number of most recent training steps a code must appear in
            to count as alive.
        log_histogram: draw the sorted code frequencies as a PNG in `output_dir/figures` and
            send it to the image loggers (W&B, TensorBoard) at each val/test epoch end.
        output_dir: folder for the PNGs; None means `trainer.log_dir`.
        num_codes: K; None takes `pl_module.num_codes`. Modules without it (KL-VAE) are skipped.

    The tracker state is part of the callback's `state_dict`, so a resumed run continues it.
    """

    def __init__(
        self,
        dead_code_window: int = 200,
        log_histogram: bool = True,
        output_dir: str | None = None,
        num_codes: int | None = None,
    ):
        if dead_code_window < 1:
            raise ValueError(
                f"callbacks.codebook_monitor.dead_code_window must be >= 1, got {dead_code_window}"
            )
        self.dead_code_window = int(dead_code_window)
        self.log_histogram = log_histogram
        self.output_dir = output_dir
        self.num_codes = num_codes
        self.tracker: DeadCodeTracker | None = None
        self.counts: dict[str, CodeCounts] = {}
        self.map_entropy: dict[str, MapEntropy] = {}
        self._pending_state: dict | None = None
        self._dir: Path | None = None

    # -- setup and checkpoint state ---------------------------------------------------------

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Find K and build the tracker and per-stage counters (kept across fit -> test)."""
        self._dir = resolve_output_dir(trainer, self.output_dir)
        num_codes = self.num_codes or getattr(pl_module, "num_codes", None)
        if num_codes is None:  # KL-VAE or any module without a codebook
            return
        if self.tracker is None or self.tracker.num_codes != num_codes:
            self.tracker = DeadCodeTracker(num_codes)
            self.counts = {s: CodeCounts(num_codes) for s in STAGES}
            self.map_entropy = {s: MapEntropy(num_codes) for s in STAGES}
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self.load_state_dict(state)

    def state_dict(self) -> dict:
        """The dead-code tracker (`last_used_step` on CPU) and the settings it depends on."""
        if self.tracker is None:
            return {}
        return {
            "num_codes": self.tracker.num_codes,
            "last_used_step": self.tracker.last_used_step.detach().cpu(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the tracker from a checkpoint (deferred until `setup` knows K)."""
        if not state_dict:
            return
        if self.tracker is None:
            self._pending_state = state_dict
            return
        if state_dict["num_codes"] != self.tracker.num_codes:
            raise ValueError(
                f"checkpoint's CodebookMonitor state has {state_dict['num_codes']} codes, "
                f"the model has {self.tracker.num_codes}"
            )
        self.tracker.last_used_step.copy_(state_dict["last_used_step"])

    # -- batches ----------------------------------------------------------------------------

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Mark the codes of this step (on any rank) as used at `trainer.global_step`."""
        indices = _indices(outputs)
        if self.tracker is None or indices is None:
            return
        if self.tracker.last_used_step.device != indices.device:
            self.tracker.to(indices.device)
        used = code_counts(indices, self.tracker.num_codes) > 0
        used = trainer.strategy.reduce(used.long(), reduce_op="sum") > 0  # union over ranks
        self.tracker.mark(used, trainer.global_step)

    def _count(self, stage: str, outputs) -> None:
        indices = _indices(outputs)
        if self.tracker is None or indices is None:
            return
        for metric in (self.counts[stage], self.map_entropy[stage]):
            if metric.device != indices.device:
                metric.to(indices.device)
            metric.update(indices)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        self._count("val", outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._count("test", outputs)

    # -- epoch ends -------------------------------------------------------------------------

    def _dead_codes(self) -> int | None:
        """Dead codes at the latest recorded training step, or None before any training step."""
        if self.tracker is None or self.tracker.latest_step < 0:
            return None
        return self.tracker.dead_count(self.tracker.latest_step, self.dead_code_window)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        dead = self._dead_codes()
        if dead is not None:
            log_epoch_value(pl_module, TRAIN_DEAD_CODES, dead)

    def _report(self, stage: str, trainer, pl_module) -> None:
        if self.tracker is None:
            return
        metric = self.counts[stage]
        if metric.update_count == 0:  # the module returned no indices
            return
        counts = metric.compute()  # summed over ranks
        metric.reset()
        per_map = float(self.map_entropy[stage].compute())  # summed over ranks
        self.map_entropy[stage].reset()
        usage, ppl, dead = codebook_usage(counts), perplexity(counts), self._dead_codes()
        entropy = token_entropy(counts)
        selections = int(counts.sum())
        usage_max = max_usage(selections, len(counts))
        log_epoch_value(pl_module, f"{stage}/codebook_usage", usage)
        log_epoch_value(pl_module, f"{stage}/codebook_selections", selections)
        log_epoch_value(pl_module, f"{stage}/codebook_usage_max", usage_max)
        log_epoch_value(pl_module, f"{stage}/perplexity", ppl)
        log_epoch_value(pl_module, f"{stage}/token_entropy", entropy)
        log_epoch_value(pl_module, f"{stage}/token_entropy_per_map", per_map)
        if usage_max < 1.0 and not trainer.sanity_checking and trainer.is_global_zero:
            log.warning(
                "%s codebook usage %.3f rests on %d code selections for K=%d codes: at most "
                "%.3f is reachable, so it cannot be compared with a threshold above that "
                "(evaluate on more examples)", stage, usage, selections, len(counts), usage_max)
        if dead is not None:
            log_epoch_value(pl_module, f"{stage}/dead_codes", dead)
        if self.log_histogram and trainer.is_global_zero and not trainer.sanity_checking:
            epoch = trainer.current_epoch
            title = (
                f"{stage_label(stage, epoch)}: usage {usage:.1%} of K={len(counts)} "
                f"({selections} selections, max {usage_max:.0%}), "
                f"perplexity {ppl:.1f}, token entropy {entropy:.2f} nats"
                + ("" if dead is None else f", dead {dead}")
            )
            fig = code_use_figure(counts.cpu().numpy(), title)
            path = figure_path(self._dir, "codebook", stage, epoch)
            save_and_log_figure(trainer, fig, f"{stage}/code_use", path)
            log_wandb_histogram(trainer, f"{stage}/code_counts", counts.cpu().numpy())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._report("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._report("test", trainer, pl_module)
