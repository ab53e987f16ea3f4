"""Command: generation metrics of a samples folder against the in-domain classifier.

    python -m mdvq.evaluate classifier=CLS_RUN samples=SAMPLES_DIR out=DIR [key=value ...]

Writes metrics.json and metrics.md (conditional accuracy, the judge's confidence and class
shares, Frechet distance on the classifier's features beside the real floor, TSTR beside TRTR,
and the judge-free physical fidelity with physics/<class>.png; `mdvq.evaluation.generation`)
and tstr/ (the TSTR run). `trainer.KEY=...` overrides the TSTR trainer; `physics.KEY=...` the
physical fidelity (conf/physics/default.yaml); `data`, `data.KEY`, `paths.KEY` give the data
of a bare classifier .ckpt.
An ``out`` that already holds an evaluation is refused (``overwrite=true`` moves it aside to
``<out>.replaced-<n>``; nothing is deleted).
Exit status 0 on success, 2 on bad input.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mdvq.utils import cli

OPTIONS = [
    cli.Arg("classifier", str, cli.REQUIRED, "classifier run folder, its summary.json, or a .ckpt"),
    cli.Arg("samples", str, cli.REQUIRED, "samples folder (python -m mdvq.sample)"),
    cli.Arg("out", str, cli.REQUIRED, "output folder: metrics.json, metrics.md, tstr/"),
    cli.Arg("cache_dir", str, None, "where the real data are cached, if not where the run says"),
    cli.Arg("tstr", bool, True, "train the train-on-synthetic classifier"),
    cli.Arg("tstr_min_steps", int, None, "least optimiser steps of the TSTR classifier (None: "
            "the classifier run's callbacks.training_budget.min_steps, 500 by default)"),
    cli.Arg("seed", int, None, "seed of the floor subsets and the TSTR run (None: the run's)"),
    cli.Arg("floor_repeats", int, 5, "random train subsets the FD floor is averaged over"),
    cli.Arg("batch_size", int, 256, "images per forward pass for predictions and features"),
    cli.Arg("device", str, "cpu", "cpu | cuda for predictions and features"),
    cli.Arg("overwrite", bool, False, "an out that holds an earlier evaluation (metrics.json) is "
            "refused; true moves that folder aside to <out>.replaced-<n> and evaluates afresh"),
    cli.Arg("wandb", bool, False, "also log a W&B run: the metrics and a table of the samples "
            "with the classifier's class and confidence (offline unless an account)"),
]
PASSTHROUGH = ("trainer.", "physics.", "data", "data.", "paths.")


def parse_args(argv: list[str]) -> tuple[dict, dict, list[str]]:
    """Split the arguments into (options, TSTR trainer overrides as a dict, data overrides);
    `options["physics"]` holds the `physics.KEY=...` overrides as a dict."""
    options, rest = cli.parse(argv, "mdvq.evaluate", [], OPTIONS, PASSTHROUGH,
                              doc=__doc__.split("\n\n")[0])
    if any(a.split("=", 1)[0] == "physics" for a in rest):
        raise cli.UsageError("physics: give its keys as physics.KEY=VALUE (e.g. "
                             "physics.percentile=0.03; physics.enabled=false skips it)")
    trainer = [a[len("trainer."):] for a in rest if a.startswith("trainer.")]
    physics = [a[len("physics."):] for a in rest if a.startswith("physics.")]
    data = [a for a in rest if not a.startswith(("trainer.", "physics."))]
    overrides = OmegaConf.to_container(OmegaConf.from_dotlist(trainer)) if trainer else {}
    options["physics"] = OmegaConf.to_container(OmegaConf.from_dotlist(physics)) if physics else {}
    return options, overrides, data


def keep_earlier_evaluation(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` holding an earlier evaluation (its metrics.json), naming it; with
    ``overwrite`` move that folder aside to ``<out>.replaced-<n>`` instead (nothing deleted)."""
    from mdvq.core.summary import free_name

    if not (out / "metrics.json").is_file():
        return
    if not overwrite:
        raise cli.UsageError(f"out={out} already holds an evaluation ({out / 'metrics.json'}); "
                             "choose another out, or overwrite=true to move it aside")
    aside = free_name(out, ".replaced")
    out.rename(aside)
    logging.getLogger(__name__).info("moved the earlier evaluation in %s to %s", out, aside)


def main(argv: list[str]) -> dict:
    """Parse `argv`, evaluate, print and write the metrics; returns them."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options, trainer_overrides, data_overrides = parse_args(argv)
    from mdvq.callbacks.budget import budget_like
    from mdvq.core.samples import load_samples
    from mdvq.evaluation.classifier_run import load_classifier_run
    from mdvq.evaluation.generation import evaluate_generation, format_markdown
    from mdvq.evaluation.physical_fidelity import physics_settings

    physics_settings(**options["physics"])  # a bad physics.KEY fails before any loading
    keep_earlier_evaluation(Path(options["out"]), options["overwrite"])
    samples = load_samples(options["samples"])
    run = load_classifier_run(options["classifier"], cache_dir=options["cache_dir"],
                              overrides=data_overrides)
    result = evaluate_generation(
        run, samples, options["out"], tstr=options["tstr"], trainer_overrides=trainer_overrides,
        batch_size=options["batch_size"], seed=options["seed"], device=options["device"],
        floor_repeats=options["floor_repeats"], physics=options["physics"],
        tstr_callbacks=[budget_like(run.config, options["tstr_min_steps"])],
        command=" ".join(["python -m mdvq.evaluate", *map(shlex.quote, argv)]),
    )
    if options["wandb"]:
        from mdvq.evaluation.review import log_evaluation

        log_evaluation(run.model, samples, result, options["out"], options["batch_size"],
                       options["device"])
    print(format_markdown(result))
    print(f"wrote {options['out']}/metrics.json and metrics.md")
    return result


def console() -> None:
    """Console-script entry (`mdvq-evaluate`): exits with the command's status."""
    sys.exit(cli.run(main))


if __name__ == "__main__":
    console()
