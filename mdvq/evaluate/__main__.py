"""Command line: generation metrics of a samples directory against the in-domain classifier.

    python -m mdvq.evaluate classifier=CLS_RUN samples=SAMPLES_DIR out=DIR [key=value ...]

Keys:
  classifier   classifier run folder (python -m mdvq.run model=classifier), its summary.json,
               or a .ckpt (outside a run folder: add data=NAME and data.* overrides)
  samples      samples directory (samples.npy, labels.npy, meta.json; see mdvq.evaluate.samples)
  out          output folder: metrics.json, metrics.md, tstr/ (the TSTR run)
  cache_dir    where the real data are cached, if not where the classifier run's config says
  tstr         true | false: train the train-on-synthetic classifier (default true)
  seed         seed of the floor's train subsets and of the TSTR run (default: the run's seed)
  floor_repeats  random train subsets the FD floor is averaged over (default 5)
  batch_size   images per forward pass for predictions and features (default 256)
  device       cpu | cuda for predictions and features (default cpu; TSTR uses the trainer's)
  trainer.KEY  overrides of the TSTR trainer, e.g. trainer.max_epochs=5
  data, data.KEY, paths.KEY   Hydra overrides giving the data of a bare .ckpt
Exit status 0 on success, 2 on bad input.
"""

from __future__ import annotations

import logging
import shlex
import sys

from omegaconf import OmegaConf

KEYS = ("classifier", "samples", "out", "cache_dir", "tstr", "seed", "batch_size", "device",
        "floor_repeats")
REQUIRED = ("classifier", "samples", "out")


def parse_args(argv: list[str]) -> tuple[dict, dict, list[str]]:
    """Split ``key=value`` arguments into (options, TSTR trainer overrides, data overrides)."""
    options: dict = {}
    trainer: list[str] = []
    data: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise ValueError(f"arguments are key=value, got {arg!r} (keys: {', '.join(KEYS)})")
        if key.startswith("trainer."):
            trainer.append(f"{key[len('trainer.'):]}={value}")
        elif key == "data" or key.startswith(("data.", "paths.")):
            data.append(arg)
        elif key in KEYS:
            options[key] = value
        else:
            raise ValueError(f"unknown key {key!r}; accepted: {', '.join(KEYS)}, trainer.*, "
                             "data, data.*, paths.*")
    missing = [k for k in REQUIRED if k not in options]
    if missing:
        raise ValueError(f"missing {', '.join(k + '=...' for k in missing)}")
    tstr = options.get("tstr", "true").lower()
    if tstr not in ("true", "false"):
        raise ValueError(f"tstr must be true or false, got {options['tstr']!r}")
    options["tstr"] = tstr == "true"
    for key in ("seed", "batch_size", "floor_repeats"):
        if key in options:
            try:
                options[key] = int(options[key])
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {options[key]!r}") from None
    overrides = OmegaConf.to_container(OmegaConf.from_dotlist(trainer)) if trainer else {}
    return options, overrides, data


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options, trainer_overrides, data_overrides = parse_args(argv)
    except ValueError as err:
        print(f"error: {err}\n\n{__doc__}", file=sys.stderr)
        return 2
    from mdvq.evaluate.classifier_run import load_classifier_run
    from mdvq.evaluate.report import evaluate_generation, format_markdown
    from mdvq.evaluate.samples import load_samples

    try:
        samples = load_samples(options["samples"])
        run = load_classifier_run(options["classifier"], cache_dir=options.get("cache_dir"),
                                  overrides=data_overrides)
        result = evaluate_generation(
            run, samples, options["out"], tstr=options["tstr"],
            trainer_overrides=trainer_overrides, batch_size=options.get("batch_size", 256),
            seed=options.get("seed"), device=options.get("device", "cpu"),
            floor_repeats=options.get("floor_repeats", 5),
            command=" ".join(["python -m mdvq.evaluate", *map(shlex.quote, argv)]),
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_markdown(result))
    print(f"wrote {options['out']}/metrics.json and metrics.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
