"""Training throughput of the phase-1 autoencoders at their default configs (a table).

    python experiments/bench_models.py [--steps 20] [--batch 32]

Times forward + backward + AdamW steps on random 64x64 images in [-1, 1] (CPU, or the GPU
when one is there), after 3 warm-up steps, and prints parameters and images/s per model.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from mdvq.models import KLVAEModule, VQVAEModule


def throughput(model: torch.nn.Module, steps: int, batch: int, device: str) -> float:
    """Training images per second of ``model`` (its ``_step`` loss) on random batches."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, 64, 64, device=device) * 2 - 1
    y = torch.zeros(batch, dtype=torch.long, device=device)
    for i in range(steps + 3):
        if i == 3:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = model.training_step((x, y), i)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print("| model | parameters | train images/s |")
    print("|---|---:|---:|")
    for name, cls in (("vqvae (healthy codebook)", VQVAEModule), ("klvae", KLVAEModule)):
        torch.manual_seed(0)
        model = cls()
        model.log = lambda *a, **k: None  # no trainer attached
        n = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {n / 1e6:.2f} M | {throughput(model, args.steps, args.batch, device):.1f} |")


if __name__ == "__main__":
    main()
