"""Command: measure mdvq's speed and memory against raw diffusers loops (markdown + json).

    python -m mdvq.bench out=DIR [sections=framework,data,sampling,switches] [batches=4,12]

Sections (docs: experiments/bench/README.md):
  framework  marginal seconds per training batch of the VQ-VAE, KL-VAE, VQ-Diffusion and
             latent-diffusion priors through Lightning against a raw loop of the same
             diffusers network (ratio raw / framework; >= 0.95 wanted), arms interleaved
  data       simulator generation rate and the cached datamodule's training-loader rate,
             against the VQ-VAE's consumption rate (>= 10x wanted)
  sampling   samples/s at each of `steps` of the priors in `models` (random weights, or the
             trained priors given by vqdiffusion= / latentdiffusion=)
  switches   channels_last, fused AdamW, bf16-mixed, torch.compile (each a config switch)
             against the raw loop for the default autoencoder
and a peak-memory table of every stage. Writes DIR/bench.md and DIR/bench.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mdvq.benchmarks import builders, loops
from mdvq.benchmarks.machine import machine
from mdvq.benchmarks.suite import SECTIONS, SWITCHES, ints, render, run_sections
from mdvq.utils import cli

OPTIONS = [
    cli.Arg("out", str, "bench", "output folder for bench.md and bench.json"),
    cli.Arg("sections", list, list(SECTIONS), "comma-separated: " + ",".join(SECTIONS)),
    cli.Arg("models", list, list(builders.MODELS), "framework (and sampling: its priors): " + ",".join(builders.MODELS)),
    cli.Arg("size", str, "default", "default (conf/ as is) | tiny (16x16, tiny networks: seconds)"),
    cli.Arg("batches", list, ["4", "12"], "two or more batch counts of the marginal-cost fit"),
    cli.Arg("repeats", int, 2, "interleaved repeats of every (arm, batch count)"),
    cli.Arg("batch_size", int, None, "training batch (None: each model's configured batch)"),
    cli.Arg("steps", list, ["10", "25", "50"], "sampling steps to time"),
    cli.Arg("samples", int, 16, "samples per timed sampling call"),
    cli.Arg("num_per_class", int, 50, "data section: simulated spectrograms per class"),
    cli.Arg("switches", list, ["channels_last", "fused", "bf16"],
            "switches section: " + ",".join(SWITCHES) + " (compile costs minutes on a CPU)"),
    cli.Arg("vqdiffusion", str, None, "trained VQ-Diffusion prior (run folder / .ckpt) to sample"),
    cli.Arg("latentdiffusion", str, None, "trained latent prior (run folder / .ckpt / export)"),
    cli.Arg("device", str, "auto", "auto | cpu | cuda"),
    cli.Arg("threads", int, None, "torch CPU threads (None: torch's default)"),
]


def _check(opts: dict) -> None:
    for key, allowed in (("sections", SECTIONS), ("models", builders.MODELS),
                         ("switches", SWITCHES)):
        bad = [v for v in opts[key] if v not in allowed]
        if bad:
            raise cli.UsageError(f"{key}: unknown {bad}; choose from {', '.join(allowed)}")
    if opts["size"] not in builders.SIZES:
        raise cli.UsageError(f"size must be one of {', '.join(builders.SIZES)}, got {opts['size']!r}")
    if len(set(opts["batches"])) < 2:
        raise cli.UsageError(f"batches needs two distinct counts, got {opts['batches']}")
    if opts["repeats"] < 1 or opts["samples"] < 1 or opts["num_per_class"] < 1:
        raise cli.UsageError("repeats, samples and num_per_class must be >= 1")
    if opts["device"] not in ("auto", "cpu", "cuda"):
        raise cli.UsageError(f"device must be auto, cpu or cuda, got {opts['device']!r}")


def main(argv: list[str]) -> Path:
    """Parse `argv`, run the sections, print and write the tables; returns the output folder."""
    opts, _ = cli.parse(argv, "mdvq.bench", [], OPTIONS, doc=__doc__.split("\n\n")[0])
    _check(opts)
    opts["batches"] = sorted(set(ints(opts["batches"], "batches")))
    device = opts["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise cli.UsageError("device=cuda but no CUDA device is available")
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    loops.quiet_logs()
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    bench, wall_s = run_sections(opts, device)
    info = machine(device)
    text = render(bench, info, argv, wall_s)
    (out / "bench.md").write_text(text + "\n")
    (out / "bench.json").write_text(json.dumps(
        {"argv": argv, "options": opts, "machine": info, "results": bench.results,
         "memory": bench.memory}, indent=2, default=str) + "\n")
    print("\n" + text)
    print(f"\nwritten: {out / 'bench.md'}, {out / 'bench.json'}")
    return out


def console() -> None:
    """Console-script entry (`mdvq-bench`): exits with the command's status."""
    sys.exit(cli.run(main))


if __name__ == "__main__":
    console()
