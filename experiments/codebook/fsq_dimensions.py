"""Why an FSQ VQ-VAE leaves part of its grid unused: level use per dimension and correlation.

    python experiments/codebook/fsq_dimensions.py CLASSIFIER_RUN VQVAE_RUN [--split train]

Encodes one split (the classifier run's data and split) with the VQ-VAE (run folder,
diffusers folder or .ckpt; FSQ levels read from the run) and prints: the joint grid usage
(codes used / K), per dimension the levels used and each level's share of the tokens, the
Pearson correlation of the level indices between dimensions, and the usage that dimensions
with the same marginal level shares would reach if they were independent (one draw of as many
tokens, seed 0). Index convention: FSQ's mixed radix, ``index = sum_i k_i * prod(L_<i)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mdvq.evaluation.classifier_run import load_classifier_run
from mdvq.models.frozen_vqvae import load_frozen_vqvae


def run_levels(run: str | Path) -> list[int]:
    """The FSQ levels of a VQ-VAE run folder (from its summary.json hyperparameters)."""
    summary = Path(run) / "summary.json"
    if not summary.is_file():
        raise SystemExit(f"{run}: no summary.json; pass --levels")
    config = json.loads(summary.read_text())
    levels = (config.get("config", {}).get("model", {}).get("codebook", {}) or {}).get("levels")
    if not levels:
        raise SystemExit(f"{summary}: no model.codebook.levels (not an FSQ run?); pass --levels")
    return [int(v) for v in levels]


def level_digits(indices: np.ndarray, levels: list[int]) -> np.ndarray:
    """FSQ code indices ``(N,)`` -> level index per dimension ``(N, len(levels))``."""
    basis = np.cumprod([1] + levels[:-1])
    return np.stack([(indices // b) % n for b, n in zip(basis, levels)], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("classifier", help="classifier run folder (its data and split are used)")
    parser.add_argument("vqvae", help="FSQ VQ-VAE run folder, diffusers folder or .ckpt")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    parser.add_argument("--levels", help="comma-separated levels (default: from the run)")
    args = parser.parse_args()
    levels = ([int(v) for v in args.levels.split(",")] if args.levels else run_levels(args.vqvae))
    images = load_classifier_run(args.classifier).datamodule.datasets[args.split].tensors[0].float()
    ae = load_frozen_vqvae(args.vqvae)
    with torch.no_grad():
        idx = torch.cat([ae.encode_indices(images[i:i + 128])
                         for i in range(0, len(images), 128)]).flatten().numpy()
    k = int(np.prod(levels))
    digits = level_digits(idx, levels)
    print(f"{args.split}: {len(idx)} tokens; joint usage {len(np.unique(idx))}/{k} = "
          f"{len(np.unique(idx)) / k:.3f}")
    rng = np.random.default_rng(0)
    independent = np.zeros(len(idx), dtype=np.int64)
    basis = np.cumprod([1] + levels[:-1])
    for d, n in enumerate(levels):
        share = np.bincount(digits[:, d], minlength=n) / len(idx)
        print(f"dimension {d}: {int((share > 0).sum())} of {n} levels used; shares "
              + " ".join(f"{v:.3f}" for v in share))
        independent += basis[d] * rng.choice(n, size=len(idx), p=share)
    corr = np.corrcoef(digits.T.astype(float))
    print("correlation of the level indices:")
    for row in corr:
        print("  " + " ".join(f"{v:+.2f}" for v in row))
    print(f"usage with independent dimensions of these shares: "
          f"{len(np.unique(independent)) / k:.3f}")


if __name__ == "__main__":
    main()
