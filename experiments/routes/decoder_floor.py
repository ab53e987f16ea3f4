"""Decoder floor of the Frechet distance: how close an autoencoder's own reconstructions get.

    python experiments/routes/decoder_floor.py CLASSIFIER kl=KLVAE_RUN vq=VQVAE_RUN [...]

A prior's samples are decoded by its frozen autoencoder, so FD(samples, real test) cannot be
expected below FD(reconstructions of the real training split, real test). For each
autoencoder (``kl=`` a KL-VAE, decoded from the posterior mean; ``vq=`` a VQ-VAE, decoded from
its code maps; run folder, diffusers folder or .ckpt) this prints that FD beside the real floor
FD(real train, real test), in the in-domain classifier's feature units
(:mod:`mdvq.evaluation.frechet`, the features ``python -m mdvq.evaluate`` uses), and the
classifier's accuracy on the reconstructions. For VQ-VAEs it also prints the code statistics
the prior models: marginal token entropy (nats), its perplexity, and the mean entropy of
the code histogram within one map (nats). The speckle column is the judge-free texture figure
the realism callback logs during training (`mdvq.callbacks.realism.speckle_distance`: per-class
W1 between the local-std distributions of real and reconstructed training images, [0,1] units;
0 = the same texture).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mdvq.callbacks.realism import class_histograms, speckle_distance
from mdvq.evaluation.accuracy import predict
from mdvq.evaluation.classifier_run import load_classifier_run
from mdvq.evaluation.frechet import ClassifierFeatures, frechet_distance


def to01(x: torch.Tensor) -> torch.Tensor:
    """Model-space images in [-1, 1] -> [0, 1]."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def entropy(counts: np.ndarray) -> float:
    """Entropy (nats) of a histogram."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def reconstruct(kind: str, path: str, images: torch.Tensor, batch: int = 128):
    """Reconstructions ``(N, 1, F, T)`` in [0, 1] of model-space ``images``, and the code maps
    ``(N, h, w)`` (VQ-VAE) or None."""
    out, codes = [], []
    if kind == "kl":
        from mdvq.models.frozen_klvae import load_frozen_klvae

        ae = load_frozen_klvae(path)
        for i in range(0, len(images), batch):
            mean, _ = ae.encode_posterior(images[i:i + batch])
            out.append(ae.decode_latents(mean))
        return to01(torch.cat(out)), None
    from mdvq.models.frozen_vqvae import load_frozen_vqvae

    ae = load_frozen_vqvae(path)
    for i in range(0, len(images), batch):
        idx = ae.encode_indices(images[i:i + batch])
        codes.append(idx)
        out.append(ae.decode_indices(idx))
    return to01(torch.cat(out)), torch.cat(codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("classifier", help="classifier run folder (its data and split are used)")
    parser.add_argument("autoencoders", nargs="+", help="kl=PATH or vq=PATH")
    args = parser.parse_args()
    run = load_classifier_run(args.classifier)
    dm, model = run.datamodule, run.model.eval()
    train, test = dm.datasets["train"].tensors[0], dm.datasets["test"].tensors[0]
    labels = dm.datasets["train"].tensors[1].numpy()
    extractor = ClassifierFeatures(model)
    floor = frechet_distance(extractor, to01(test), to01(train))
    print(f"real floor FD(train {len(train)}, test {len(test)}) = {floor:.3f}\n")
    print("| autoencoder | FD(recon train, test) | / real floor | classifier acc on recon "
          "| speckle W1 | token entropy [nats] | token perplexity | codes used "
          "| per-map entropy [nats] |")
    print("|---|---|---|---|---|---|---|---|---|")
    classes = int(labels.max()) + 1
    label_t = torch.as_tensor(labels)
    real_hist = class_histograms(to01(train), label_t, classes, window=3, bins=500)
    for item in args.autoencoders:
        kind, _, path = item.partition("=")
        if kind not in ("kl", "vq") or not path:
            raise SystemExit(f"{item!r}: expected kl=PATH or vq=PATH")
        recon, codes = reconstruct(kind, path, train.float())
        fd = frechet_distance(extractor, to01(test), recon)
        acc = float((predict(model, recon) == labels).mean())
        speckle = speckle_distance(real_hist, class_histograms(recon, label_t, classes, 3, 500))
        tokens = "| n/a | n/a | n/a | n/a"
        if codes is not None:
            flat = codes.flatten().numpy()
            hist = np.bincount(flat)
            h = entropy(hist)
            per_map = np.mean([entropy(np.bincount(m.flatten().numpy())) for m in codes])
            tokens = f"| {h:.2f} | {np.exp(h):.0f} | {int((hist > 0).sum())} | {per_map:.2f}"
        print(f"| {kind} `{path}` | {fd:.3f} | {fd / floor:.2f} | {acc:.3f} | {speckle:.4f} "
              f"{tokens} |",
              flush=True)


if __name__ == "__main__":
    main()
