"""Tests of the phase-2 generation metrics (mdvq.evaluate): known inputs, checks, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import classifier_run_overrides
from torch import nn

from mdvq.core.samples import check_compatible, load_samples, write_samples
from mdvq.core.summary import RunSummary
from mdvq.evaluate import main as evaluate_main
from mdvq.evaluate import parse_args
from mdvq.evaluation.accuracy import conditional_accuracy
from mdvq.evaluation.classifier_run import load_classifier_run
from mdvq.evaluation.frechet import ClassifierFeatures, frechet_distance
from mdvq.evaluation.generation import evaluate_generation
from mdvq.utils.cli import run as run_command


class Flatten(nn.Module):
    """Identity features: an image's pixels (hand-checkable Frechet distances)."""

    num_features = 4

    def forward(self, x):
        return x.flatten(1).double()


# --------------------------------------------------------------------------- Frechet distance
def test_frechet_distance_of_identical_sets_is_zero_and_of_a_shift_is_its_squared_norm():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(300, 1, 2, 2, generator=g) * 0.5
    assert abs(frechet_distance(Flatten(), a, a)) < 1e-9
    # same covariance, means 0.5 apart in each of 4 features: FD = 4 * 0.5^2 = 1
    assert frechet_distance(Flatten(), a, a + 0.5) == pytest.approx(1.0, abs=1e-6)
    # covariance only: x -> 2x doubles the std: FD = ||mu||^2 + sum(s^2 + 4 s^2 - 2 * 2 s^2)
    var = a.flatten(1).double().var(0).sum().item()
    mean = a.flatten(1).double().mean(0).square().sum().item()
    assert frechet_distance(Flatten(), a, 2 * a) == pytest.approx(mean + var, rel=1e-3)
    assert frechet_distance(Flatten(), a, 2 * a) == pytest.approx(frechet_distance(Flatten(), 2 * a, a))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(Flatten(), a[:1], a)


def test_frechet_distance_on_classifier_features_separates_classes(classifier_run):
    x = classifier_run.datamodule.datasets["train"].tensors
    images01, labels = ((x[0] + 1) / 2).numpy(), x[1].numpy()
    extractor = ClassifierFeatures(classifier_run.model)
    rng = np.random.default_rng(0)
    same = rng.permutation(np.flatnonzero(labels == 0))
    half = len(same) // 2
    fd_same = frechet_distance(extractor, images01[same[:half]], images01[same[half:]])
    fd_apart = frechet_distance(extractor, images01[labels == 0], images01[labels == 1])
    assert frechet_distance(extractor, images01, images01) == pytest.approx(0.0, abs=1e-6 * fd_apart)
    assert fd_apart > 3 * fd_same > 0


# --------------------------------------------------------------------------- accuracy
def test_conditional_accuracy_on_a_hand_checked_example():
    out = conditional_accuracy(np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 2]), ["a", "b", "c", "d"])
    assert out["overall"] == pytest.approx(3 / 5)
    assert out["per_class"] == {"a": 1.0, "b": 1.0, "c": pytest.approx(1 / 3), "d": None}
    assert out["counts"] == {"a": 1, "b": 1, "c": 3, "d": 0}
    assert out["confusion"][2] == [1, 1, 1, 0]


# --------------------------------------------------------------------------- samples checks
def good_samples(tmp: Path, n=6, size=(16, 16), classes=("a", "b", "c")) -> Path:
    rng = np.random.default_rng(0)
    return write_samples(tmp / "s", rng.uniform(0, 1, (n, 1, *size)).astype(np.float32),
                         np.arange(n) % len(classes), {"class_names": list(classes), "steps": 20})


@pytest.mark.parametrize("problem, file, message", [
    ("nan", "samples.npy", "NaN"),
    ("range", "samples.npy", r"\[0, 1\]"),
    ("shape", "samples.npy", r"\(N, 1, F, T\)"),
    ("int_images", "samples.npy", "dtype"),
    ("float_labels", "labels.npy", "int64"),
    ("label_count", "labels.npy", r"shape \(6,\)"),
    ("label_range", "labels.npy", r"\[0, 3\)"),
    ("no_classes", "meta.json", "class_names"),
    ("missing", "labels.npy", "missing"),
])
def test_bad_samples_directory_is_named(tmp_path, problem, file, message):
    d = good_samples(tmp_path)
    images, labels = np.load(d / "samples.npy"), np.load(d / "labels.npy")
    if problem == "nan":
        images[2, 0, 3, 3] = np.nan
    elif problem == "range":
        images[0, 0, 0, 0] = 1.5
    elif problem == "shape":
        images = images[:, 0]
    elif problem == "int_images":
        images = (images * 255).astype(np.uint8)
    elif problem == "float_labels":
        labels = labels.astype(np.float32)
    elif problem == "label_count":
        labels = labels[:4]
    elif problem == "label_range":
        labels[1] = 3
    elif problem == "no_classes":
        (d / "meta.json").write_text(json.dumps({"steps": 20}))
    np.save(d / "samples.npy", images)
    np.save(d / "labels.npy", labels)
    if problem == "missing":
        (d / "labels.npy").unlink()
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        load_samples(d)
    assert str(d / file) in str(err.value)


def test_samples_must_match_the_classifier_data(tmp_path):
    samples = load_samples(good_samples(tmp_path))
    check_compatible(samples, ["a", "b", "c"], (16, 16))
    with pytest.raises(ValueError, match=r"meta.json: class_names .*\(3 classes\).*\(4 classes\)"):
        check_compatible(samples, ["a", "b", "c", "d"], (16, 16))
    with pytest.raises(ValueError, match=r"samples.npy: samples are \(F, T\) = \(16, 16\)"):
        check_compatible(samples, ["a", "b", "c"], (32, 16))


def test_command_line_arguments():
    options, trainer, data = parse_args(["classifier=r", "samples=s", "out=o", "tstr=false",
                                         "trainer.max_epochs=2", "data=radar", "seed=3"])
    assert {k: options[k] for k in ("classifier", "samples", "out", "tstr", "seed")} == {
        "classifier": "r", "samples": "s", "out": "o", "tstr": False, "seed": 3}
    assert options["floor_repeats"] == 5 and options["device"] == "cpu"  # defaults
    assert trainer == {"max_epochs": 2} and data == ["data=radar"]
    for bad, message in ((["samples=s", "out=o"], "classifier="), (["x", "samples=s"], "positional"),
                         (["classifier=r", "samples=s", "out=o", "colour=red"], "unknown argument"),
                         (["classifier=r", "samples=s", "out=o", "tstr=maybe"], "tstr='maybe'")):
        with pytest.raises(ValueError, match=message):
            parse_args(bad)


# --------------------------------------------------------------------------- end to end
# `classifier_dir`: the session fixture of tests/conftest.py (shared with test_classifier.py)
@pytest.fixture(scope="module")
def classifier_run(classifier_dir):
    return load_classifier_run(classifier_dir)


def real_test_samples(run, directory: Path, shuffle: bool = False) -> Path:
    """The real test split written as a samples directory (labels shuffled if asked)."""
    x, y = run.datamodule.datasets["test"].tensors
    labels = y.numpy().copy()
    if shuffle:
        labels = np.random.default_rng(1).permutation(labels)
    return write_samples(directory, ((x + 1) / 2).clamp(0, 1).numpy(), labels,
                         {"class_names": run.datamodule.class_names, "steps": 0, "guidance": 1.0,
                          "seed": 0, "prior": "real test split"})


def test_run_is_reloaded_with_the_same_data_and_split(classifier_dir, classifier_run, tmp_path):
    summary = json.loads((classifier_dir / "summary.json").read_text())
    assert classifier_run.datamodule.data_key == summary["data_key"]
    best = RunSummary.read(classifier_dir).checkpoint("best")
    assert classifier_run.checkpoint == best
    # a bare checkpoint, given the data by Hydra overrides, finds the same data and split
    ckpt = shutil.copy(best, tmp_path / "c.ckpt")
    data = [o for o in classifier_run_overrides(classifier_dir.parent)
            if o.startswith(("data", "paths.cache_dir"))]
    bare = load_classifier_run(ckpt, overrides=data)
    assert bare.datamodule.data_key == summary["data_key"]
    assert list(bare.config.model.channels) == [16, 32, 64]
    with pytest.raises(ValueError, match="needs the data"):
        load_classifier_run(ckpt)


def test_a_run_of_another_model_is_refused(tmp_path, classifier_dir):
    summary = json.loads((classifier_dir / "summary.json").read_text())
    summary["model"] = "vqvae"  # the run's kind is one field of its summary
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="classifier: this is a 'vqvae' run, expected 'classifier'"):
        load_classifier_run(tmp_path)


def test_real_test_split_as_samples_scores_like_real_data(classifier_run, tmp_path):
    """Samples = the real test split: conditional accuracy = TRTR, FD ~ 0; shuffled labels: chance."""
    true = load_samples(real_test_samples(classifier_run, tmp_path / "true"))
    result = evaluate_generation(classifier_run, true, tmp_path / "eval_true", tstr=False)
    m = result["metrics"]
    assert m["trtr_acc"] > 2 * m["chance_acc"]
    assert m["conditional_accuracy"] == pytest.approx(m["trtr_acc"])
    assert abs(m["fd_samples_test"]) < 1e-4 * m["fd_train_test_floor"]  # eigvals rounding
    assert m["fd_train_test_floor"] > 0 and m["tstr_acc"] is None
    assert result["counts"]["samples"] == result["counts"]["real_test"] == len(true)
    assert result["counts"]["floor_train_subset"] == min(len(true), result["counts"]["real_train"])
    floors = result["frechet"]["floor_values"]
    assert len(floors) == 5 and m["fd_train_test_floor"] == pytest.approx(np.mean(floors))
    assert m["fd_floor_std"] == pytest.approx(np.std(floors)) and len(set(floors)) == 5
    shuffled = load_samples(real_test_samples(classifier_run, tmp_path / "shuf", shuffle=True))
    m2 = evaluate_generation(classifier_run, shuffled, tmp_path / "eval_shuf", tstr=False)["metrics"]
    assert m2["conditional_accuracy"] < m["conditional_accuracy"] - 0.2
    assert m2["fd_samples_test"] == pytest.approx(m["fd_samples_test"], abs=1e-6)  # labels-blind


def test_command_line_writes_metrics_with_tstr(classifier_dir, classifier_run, tmp_path, capsys):
    samples = real_test_samples(classifier_run, tmp_path / "samples")
    out = tmp_path / "eval"
    args = [f"classifier={classifier_dir}", f"samples={samples}", f"out={out}",
            "trainer.max_epochs=20", "seed=7"]
    status = run_command(evaluate_main, args)  # the command's entry, in this process
    assert status == 0, capsys.readouterr().err[-3000:]
    result = json.loads((out / "metrics.json").read_text())
    m = result["metrics"]
    # the "samples" are the real test images with their labels: a classifier trained on them
    # and tested on the same images (20 epochs) beats chance well
    assert m["tstr_acc"] > m["chance_acc"] + 0.2, (m["tstr_acc"], m["chance_acc"])
    assert m["tstr_trtr_ratio"] == pytest.approx(m["tstr_acc"] / m["trtr_acc"])
    assert result["tstr"]["train_count"] == len(np.load(samples / "labels.npy"))
    assert result["tstr"]["epochs"] == 20 and (out / result["tstr"]["checkpoint"]).exists()
    assert result["command"].startswith("python -m mdvq.evaluate classifier=")
    assert result["samples"]["dir"] == "../samples" and result["seed"] == 7  # relative paths
    md = (out / "metrics.md").read_text()
    assert "TSTR accuracy" in md and "FD(samples, real test)" in md and "python -m mdvq.evaluate" in md
    for name in classifier_run.datamodule.class_names:
        assert f"| {name} |" in md
    # a second call into the same out keeps the finished record: refused, or moved aside
    before = (out / "metrics.json").read_text()
    again = [a for a in args if not a.startswith("trainer.")] + ["tstr=false"]
    assert run_command(evaluate_main, again) == 2
    assert "already holds an evaluation" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == before
    assert run_command(evaluate_main, again + ["overwrite=true"]) == 0
    assert (tmp_path / "eval.replaced-1" / "metrics.json").read_text() == before
    assert json.loads((out / "metrics.json").read_text())["metrics"].get("tstr_acc") is None


def test_tstr_classifier_trains_to_its_budget(classifier_dir, classifier_run, tmp_path, capsys):
    """The TSTR trainer carries the judge's training budget: the judge of these tests has
    min_steps=0 (2 epochs stay 2), `tstr_min_steps=30` raises the epochs of the few samples."""
    samples = real_test_samples(classifier_run, tmp_path / "samples")
    n = len(np.load(samples / "labels.npy"))
    per_epoch = -(-n // classifier_run.datamodule.batch_size)
    for extra, out in (([], tmp_path / "plain"), (["tstr_min_steps=30"], tmp_path / "budget")):
        args = [f"classifier={classifier_dir}", f"samples={samples}", f"out={out}",
                "trainer.max_epochs=2", "seed=7", "floor_repeats=1", *extra]
        assert run_command(evaluate_main, args) == 0, capsys.readouterr().err[-3000:]
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())["tstr"]
    assert plain["epochs"] == 2 and plain["steps"] == 2 * per_epoch
    tstr = json.loads((tmp_path / "budget" / "metrics.json").read_text())["tstr"]
    assert 2 * per_epoch < 30 <= tstr["steps"] == tstr["epochs"] * per_epoch


def test_command_line_reports_bad_samples_by_file(classifier_dir, classifier_run, tmp_path, capsys):
    samples = real_test_samples(classifier_run, tmp_path / "samples")
    meta = json.loads((samples / "meta.json").read_text())
    meta["class_names"] = meta["class_names"][:-1]
    (samples / "meta.json").write_text(json.dumps(meta))
    labels = np.load(samples / "labels.npy")
    np.save(samples / "labels.npy", np.minimum(labels, len(meta["class_names"]) - 1))
    status = run_command(evaluate_main, [f"classifier={classifier_dir}", f"samples={samples}",
                                         f"out={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert status == 2 and str(samples / "meta.json") in err and "classes" in err
    assert not (tmp_path / "o" / "metrics.json").exists()
