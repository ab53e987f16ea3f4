"""Training time per step of plain vs adversarial autoencoders, measured in one run (a table).

    python experiments/autoencoders/bench_adversarial.py [--steps 30] [--repeats 2]

Issue 24 asks for the adversarial objective's wall time per epoch as a ratio to the plain one,
measured in one run (machines and loads differ too much to compare runs). For each autoencoder
(`model=klvae`, `model=vqvae`) this composes the default config with `model/loss=plain` and
`model/loss=adversarial` (the group's defaults, `disc_start` 0 so the discriminator runs from the
first step), and times Lightning `Trainer.fit` on random 64x64 batches of the default batch size
in the default precision (bf16-mixed), without validation, logging or checkpoints. The arms
alternate `--repeats` times (plain, adversarial, plain, ...) so a change in machine load hits
both; the first 3 steps of every fit are warm-up and not timed. The ratio of seconds per step is
the ratio of seconds per epoch (both train on the same batches per epoch).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from mdvq.benchmarks.loops import quiet_logs
from mdvq.benchmarks.machine import git_commit, machine
from mdvq.core.compose import build, compose_config


class StepClock(L.Callback):
    """Records the wall time [s] of every training batch after ``warmup`` batches."""

    def __init__(self, warmup: int = 3):
        self.warmup, self.times, self._t = warmup, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._t)


def seconds_per_step(model: str, loss: str, steps: int) -> tuple[float, int]:
    """Median training seconds per optimiser step of ``model`` with ``model/loss=<loss>``, and
    its parameter count (the discriminator included)."""
    cfg = compose_config([f"model={model}", f"model/loss={loss}", "paths.output_dir=."])
    L.seed_everything(0, verbose=False)
    module = build(cfg.model)
    batch = int(cfg.data.datamodule.batch_size)
    size = tuple(cfg.data.image_size) if "image_size" in cfg.data else (64, 64)
    x = torch.rand(batch * 4, 1, *size) * 2 - 1
    y = torch.zeros(batch * 4, dtype=torch.long)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)
    clock = StepClock()
    trainer = L.Trainer(max_steps=steps + clock.warmup, accelerator="cpu", devices=1,
                        precision=cfg.trainer.precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0,
                        gradient_clip_val=None if loss == "adversarial" else cfg.trainer.get("gradient_clip_val"),
                        callbacks=[clock])
    trainer.fit(module, train_dataloaders=loader)
    return statistics.median(clock.times), sum(p.numel() for p in module.parameters())


def main() -> None:
    """Print the table: seconds per step per arm, and adversarial / plain."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per fit")
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the two arms")
    args = parser.parse_args()
    quiet_logs()
    warnings.filterwarnings("ignore")
    info = machine("cpu")
    print(f"commit {git_commit()}, {info['cpu']}, {info['cores']} cores, "
          f"{info['torch_threads']} torch threads, load {info['load_avg']}, torch {info['torch']}, "
          f"{args.steps} timed steps x {args.repeats} repeats")
    print("| autoencoder | plain [s/step] | adversarial [s/step] | adversarial / plain | parameters plain / adversarial |")
    print("|---|---:|---:|---:|---|")
    for model in ("klvae", "vqvae"):
        times = {"plain": [], "adversarial": []}
        params = {}
        for _ in range(args.repeats):
            for loss, seconds in times.items():
                t, params[loss] = seconds_per_step(model, loss, args.steps)
                seconds.append(t)
        plain, adv = statistics.median(times["plain"]), statistics.median(times["adversarial"])
        print(f"| {model} | {plain:.3f} | {adv:.3f} | {adv / plain:.2f} | "
              f"{params['plain'] / 1e6:.2f} M / {params['adversarial'] / 1e6:.2f} M |")


if __name__ == "__main__":
    main()
