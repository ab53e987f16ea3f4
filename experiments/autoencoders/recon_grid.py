"""Reconstructions of several autoencoders next to the real images they reconstruct (a PNG).

    python experiments/autoencoders/recon_grid.py CLASSIFIER LABEL=kl:RUN LABEL=vq:RUN ... \
        [--per-class 2] [--out experiments/autoencoders/recon_grid.png]

The first row shows real test spectrograms of the classifier run's data and split, ``--per-class``
per class; every further row shows one autoencoder's reconstruction of the same images (KL-VAE
decoded from the posterior mean, VQ-VAE from its code maps), titled with its label and the PSNR
[dB] of that row. Colours are the models' [0, 1] scale (dB over the dynamic range), one colour
scale for the whole figure, so texture and speckle compare across rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from mdvq.evaluation.classifier_run import load_classifier_run
from mdvq.utils.plotting import save_figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "routes"))
from decoder_floor import reconstruct, to01


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR [dB] of images in [0, 1] (data range 1), over the whole set."""
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def main() -> None:
    """Draw the grid."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("classifier", help="classifier run folder (its data and split are used)")
    parser.add_argument("autoencoders", nargs="+", help="LABEL=kl:RUN or LABEL=vq:RUN")
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "recon_grid.png")
    args = parser.parse_args()
    dm = load_classifier_run(args.classifier).datamodule
    images, labels = dm.datasets["test"].tensors[:2]
    names = list(getattr(dm, "class_names", None) or range(int(labels.max()) + 1))
    keep = np.concatenate([np.flatnonzero(labels.numpy() == c)[:args.per_class]
                           for c in range(len(names))])
    x = images[keep].float()
    rows = [("real test", to01(x))]
    for item in args.autoencoders:
        label, _, spec = item.partition("=")
        kind, _, path = spec.partition(":")
        if kind not in ("kl", "vq") or not path:
            raise SystemExit(f"{item!r}: expected LABEL=kl:RUN or LABEL=vq:RUN")
        recon, _ = reconstruct(kind, path, x)
        rows.append((f"{label} ({psnr(recon, rows[0][1]):.1f} dB)", recon))
    fig, axes = plt.subplots(len(rows), len(keep), figsize=(1.1 * len(keep), 1.25 * len(rows)),
                             squeeze=False)
    for r, (title, imgs) in enumerate(rows):
        for c in range(len(keep)):
            ax = axes[r, c]
            ax.imshow(imgs[c, 0].numpy(), origin="lower", aspect="auto", cmap="jet", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(names[int(labels[keep[c]])]), fontsize=7)
            if c == 0:
                ax.set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    print(save_figure(fig, args.out))


if __name__ == "__main__":
    main()
