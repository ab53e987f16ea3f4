"""Share of an epoch spent in validation (and its figures), and start-up time, for the main job.

Runs the default job (`python -m mdvq.run model=vqvae data=radar` plus OVERRIDES) for
`--epochs` epochs of `--batches` training batches with the full validation set, timing every
training batch and every validation epoch (PSNR, SSIM, codebook figures, grids) with a
callback. A full epoch is estimated as `batches_per_epoch x seconds per training batch +
validation seconds`; the share is validation / full epoch (issue 14 wants <= 10 %). Start-up is
the wall time from the start of this process to the first training batch (imports, config,
data load). Prints a markdown table.

    python experiments/bench/validation_share.py                       # bf16-mixed (default)
    python experiments/bench/validation_share.py trainer.precision=32-true

With `--whole-run` it trains whole epochs under the training budget instead (set its
`callbacks.training_budget.min_steps` / `val_every_steps` in OVERRIDES) and reports validation's
share of the whole run's training + validation time, with the steps, epochs and validations:

    python experiments/bench/validation_share.py --whole-run data.datamodule.source.num_per_class=40 \
        callbacks.training_budget.min_steps=120 callbacks.training_budget.val_every_steps=null
"""

from __future__ import annotations

import argparse
import time

START = time.time()

import lightning as L
from omegaconf import open_dict

from mdvq.core.compose import compose_config
from mdvq.runs.training import train


class EpochTimer(L.Callback):
    """Records seconds per training batch, per validation epoch and to the first batch."""

    last: EpochTimer | None = None
    """The most recently made timer (the one `train` instantiated from the config)."""

    def __init__(self):
        EpochTimer.last = self
        self.batch_s: list[float] = []
        self.val_s: list[float] = []
        self.first_batch_at: float | None = None
        self.train_batches: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        """Start a batch clock; the first one marks the end of start-up."""
        if self.first_batch_at is None:
            self.first_batch_at = time.time()
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        """Stop the batch clock."""
        self.batch_s.append(time.perf_counter() - self._t)

    def on_validation_epoch_start(self, trainer, pl_module):
        """Start the validation clock."""
        self._v = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module):
        """Stop the validation clock (after every callback's figures of this epoch)."""
        if not trainer.sanity_checking:
            self.val_s.append(time.perf_counter() - self._v)


def main() -> None:
    """Parse arguments, run the job, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the main job")
    parser.add_argument("--batches", type=int, default=20, help="training batches per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs (the first is warm-up)")
    parser.add_argument("--out", default="outputs/validation_share", help="run folder")
    parser.add_argument("--whole-run", action="store_true",
                        help="whole epochs under the training budget; share of the whole run")
    args = parser.parse_args()
    limits = [] if args.whole_run else [f"trainer.limit_train_batches={args.batches}",
                                        "callbacks.training_budget.min_steps=0"]
    cfg = compose_config(["model=vqvae", "data=radar", f"trainer.max_epochs={args.epochs}",
                          *limits, "trainer.enable_progress_bar=false", "test=false",
                          "export=false", f"paths.output_dir={args.out}", *args.overrides])
    with open_dict(cfg):
        cfg.callbacks.epoch_timer = {"_target_": "__main__.EpochTimer"}  # made by train()
    summary = train(cfg)
    timer = EpochTimer.last
    if args.whole_run:
        train_s, val_s = sum(timer.batch_s), sum(timer.val_s)
        print("| steps | epochs | validations | training s | validation s | validation share |\n"
              "|---:|---:|---:|---:|---:|---:|\n"
              f"| {summary['trained_steps']} | {summary['epochs']} | {len(timer.val_s)} "
              f"| {train_s:.1f} | {val_s:.1f} | {100 * val_s / (train_s + val_s):.1f} % |")
        return
    train_examples = summary["data"]["split_counts"]["train"]
    batch = int(cfg.data.datamodule.batch_size)
    per_epoch = -(-train_examples // batch)
    later = timer.batch_s[args.batches:] or timer.batch_s  # skip the first (warm-up) epoch
    per_batch = sum(later) / len(later)
    val = timer.val_s[-1]
    full = per_epoch * per_batch + val
    print(f"| precision | s/batch | batches/epoch | validation s | full epoch s | validation share "
          f"| start-up s |\n|---|---:|---:|---:|---:|---:|---:|\n| {summary.get('precision')} "
          f"| {per_batch:.3f} | {per_epoch} | {val:.2f} | {full:.1f} | {100 * val / full:.1f} % "
          f"| {timer.first_batch_at - START:.2f} |")


if __name__ == "__main__":
    main()
