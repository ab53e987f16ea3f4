"""Command: sample spectrograms of chosen classes from a trained prior (either route).

    python -m mdvq.sample PRIOR n_per_class=8 guidance=1.5 steps=20 seed=0 out=DIR
    python -m mdvq.sample VQ_PRIOR sampler=purity truncation=0.9
    python -m mdvq.sample MASKED_PRIOR guidance=3 temperature=0.8

PRIOR is a prior run folder (VQ-Diffusion, masked tokens or latent diffusion; its best
checkpoint, else ``last.ckpt``), a Lightning checkpoint of any prior, or an exported
latent-diffusion or masked-token folder.
``out`` defaults to ``<run folder>/samples``; one that already holds samples is refused
unless ``overwrite=true``, which removes only the files an earlier call wrote. The folder written (``samples.npy``,
``labels.npy``, ``meta.json``, ``png/``, ``grid.png``) is described in
:mod:`mdvq.core.samples`; ``python -m mdvq.evaluate`` scores it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mdvq.core.samples import clear_samples, write_samples
from mdvq.runs.prior_sampling import load_prior, sample_prior
from mdvq.utils import cli

POSITIONAL = [cli.Arg("prior", help="prior run folder, .ckpt, or exported prior folder")]
OPTIONS = [
    cli.Arg("n_per_class", int, 8, "samples per class"),
    cli.Arg("guidance", float, None, "classifier-free guidance scale >= 0 (None: the prior's)"),
    cli.Arg("steps", int, None, "sampling steps, 1..T (None: the prior's default)"),
    cli.Arg("sampler", str, None, "dpm | ddim (latent diffusion), ancestral | purity "
                                  "(VQ-Diffusion), confidence (masked tokens); None: the "
                                  "prior's"),
    cli.Arg("truncation", float, None, "VQ-Diffusion: keep the most likely codes up to this "
                                       "cumulative probability, (0, 1] (None: the prior's)"),
    cli.Arg("temperature", float, None, "masked tokens: temperature of each token draw, > 0 "
                                        "(< 1 sharpens; None: the prior's sample_temperature)"),
    cli.Arg("seed", int, 0, "random seed"),
    cli.Arg("out", str, None, "output folder (None: <run folder>/samples)"),
    cli.Arg("batch_size", int, 64, "samples per model call"),
    cli.Arg("device", str, "auto", "auto | cpu | cuda"),
    cli.Arg("classes", list, None, "comma-separated class names (None: all)"),
    cli.Arg("overwrite", bool, False, "replace the samples an earlier call wrote to out "
                                      "(only its files; others are kept)"),
]


def main(argv: list[str]) -> Path:
    """Parse `argv`, sample, write the samples folder; returns it."""
    opts, _ = cli.parse(argv, "mdvq.sample", POSITIONAL, OPTIONS, doc=__doc__.split("\n\n")[0])
    device = opts["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise cli.UsageError(f"device must be auto, cpu or cuda, got {device!r}")
    if opts["out"]:  # an occupied out is refused before the prior is even loaded
        clear_samples(opts["out"], opts["overwrite"], dry_run=True)
    module, source = load_prior(opts["prior"], device)
    if opts["out"]:
        out = Path(opts["out"])
    else:
        target = Path(opts["prior"])
        run = target if target.is_dir() else Path(source).parent
        out = (run.parent if run.name == "checkpoints" else run) / "samples"
        clear_samples(out, opts["overwrite"], dry_run=True)
    images, labels, meta = sample_prior(module, opts["n_per_class"], opts["steps"],
                                        opts["guidance"], opts["seed"], opts["batch_size"],
                                        opts["classes"], opts["sampler"], opts["truncation"],
                                        opts["temperature"])
    meta["prior"] = str(Path(source).resolve())
    clear_samples(out, opts["overwrite"])  # only now: a failed call removes nothing
    write_samples(out, images, labels, meta)
    print(f"{len(set(labels.tolist()))} classes x {opts['n_per_class']} samples at "
          f"{meta['samples_per_second']} samples/s -> {out}")
    return out


def console() -> None:
    """Console-script entry (`mdvq-sample`): exits with the command's status."""
    sys.exit(cli.run(main))


if __name__ == "__main__":
    console()
