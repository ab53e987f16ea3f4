"""Reload a trained in-domain classifier with the data and split it was trained on.

A classifier run folder (``python -m mdvq.run experiment=classifier ...``) holds ``summary.json``:
its ``config`` rebuilds the same datamodule (same data, same split: the rebuilt ``data_key``
must match the run's), its ``checkpoints.best`` is the classifier. A bare ``.ckpt`` works
too: inside a run folder (``<run>/checkpoints/x.ckpt``) it uses that run's config, otherwise
the data come from the project's ``conf/`` composed with ``data=...`` overrides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mdvq.core.artifacts import load_module, resolve_artifact
from mdvq.core.compose import build, compose_config
from mdvq.models.classifier import SpectrogramClassifier

log = logging.getLogger(__name__)

KEY = "classifier"
"""The command-line key of `mdvq.evaluate` that names the classifier (in every error message)."""


@dataclass
class ClassifierRun:
    """A trained classifier and what it was trained on.

    ``model`` (eval mode, CPU), ``datamodule`` (set up: ``datasets``, ``class_names``, ...),
    ``config`` (the run's resolved config: ``model``, ``trainer``, ``data``, ``seed``),
    ``checkpoint`` (the weights' path), ``summary`` (the run's summary.json, or None) and
    ``source`` (the path the user gave).
    """

    model: SpectrogramClassifier
    datamodule: object
    config: DictConfig
    checkpoint: Path
    summary: dict | None
    source: Path


def _compose(overrides: list[str]) -> DictConfig:
    """The project config with ``experiment=classifier`` and ``overrides``, resolved."""
    cfg = compose_config(["experiment=classifier", "paths.output_dir=.", *overrides])
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def load_classifier_run(
    path: str | Path, cache_dir: str | None = None, overrides: list[str] | None = None
) -> ClassifierRun:
    """Load the classifier at ``path`` (run folder, its summary.json, or a ``.ckpt``).

    ``cache_dir`` replaces the data source's cache folder (where the simulated/processed data
    were cached, if not where the run's config says). ``overrides`` (Hydra overrides such as
    ``data=radar``, ``data.image_size=[32,32]``) give the data for a ``.ckpt`` outside a run
    folder. Raises ``FileNotFoundError``/``ValueError`` naming the file on bad input.
    """
    source = Path(path)
    artifact = resolve_artifact(source, "classifier", KEY)
    run = artifact.run
    if artifact.form == "checkpoint" and source.suffix == ".ckpt" and overrides:
        run = None  # the data come from the overrides, not the run folder around the file
    if run is None and not overrides:
        raise ValueError(f"{KEY}: {source}: a checkpoint outside a run folder needs the data it "
                         "was trained on, e.g. data=radar (plus data.* overrides)")
    config = OmegaConf.create(run.config) if run is not None else _compose(list(overrides))
    checkpoint = artifact.path
    model = load_module(SpectrogramClassifier, checkpoint, KEY)
    summary = run.data if run is not None else None
    summary_path = run.path if run is not None else None
    if summary is None:  # the yaml's optimiser with the checkpoint's architecture
        config.model = OmegaConf.merge(config.model, dict(model.hparams))
    if cache_dir is not None and OmegaConf.select(config, "data.datamodule.source.cache_dir"):
        config.data.datamodule.source.cache_dir = str(cache_dir)
    datamodule = _build_datamodule(config)
    if summary is not None and summary.get("data_key") and datamodule.data_key != summary["data_key"]:
        raise ValueError(
            f"{summary_path}: the data rebuilt from this run's config (data_key "
            f"{datamodule.data_key}) differ from those it was trained on ({summary['data_key']})"
        )
    if model.class_names and list(model.class_names) != list(datamodule.class_names):
        raise ValueError(f"{checkpoint}: trained on classes {model.class_names}, the data have "
                         f"{datamodule.class_names}")
    if model.num_classes != len(datamodule.class_names):
        raise ValueError(f"{checkpoint}: model.num_classes={model.num_classes} but the data have "
                         f"{len(datamodule.class_names)} classes {datamodule.class_names}")
    return ClassifierRun(model=model, datamodule=datamodule, config=config, checkpoint=checkpoint,
                         summary=summary, source=source)


def _build_datamodule(config: DictConfig):
    datamodule = build(config.data.datamodule)
    datamodule.setup("test")
    return datamodule
