"""No command destroys a finished run's record: attempts are kept, a fresh start over a finished
run is refused, a run is visible while it runs, a full disk leaves the earlier record, and a
moved or copied run folder resumes with its own best checkpoint (issue: reliability)."""

from __future__ import annotations

import csv
import errno
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_cfg, interrupted_stage, tiny_overrides

from mdvq.callbacks.checkpoint import RunFolderCheckpoint
from mdvq.core.summary import RunSummary
from mdvq.runs import training
from mdvq.runs.experiments import train_stage
from mdvq.runs.training import train

SHORT = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "~callbacks.spectrogram_grid",
         "callbacks.codebook_monitor.log_histogram=false", "trainer.deterministic=true"]


def tiny(tmp: Path, cache: Path, *extra: str) -> list[str]:
    return tiny_overrides(tmp, data_cache=cache) + SHORT + list(extra)


@pytest.fixture
def finished(tmp_path, data_cache):
    """A finished tiny run (1 epoch) and its summary as written."""
    overrides = tiny(tmp_path, data_cache, "trainer.max_epochs=1", "export=false")
    train(compose_cfg(overrides))
    run = tmp_path / "run"
    return {"overrides": overrides, "run": run, "summary": json.loads((run / "summary.json").read_text())}


def test_a_failed_resume_keeps_the_finished_record(finished):
    run, before = finished["run"], finished["summary"]
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="ckpt_path: not a PyTorch checkpoint, or truncated"):
        train(compose_cfg(finished["overrides"] + ["ckpt_path=last"]))
    kept = RunSummary.read(run)
    assert kept.finished and kept.metrics == RunSummary(run, before).metrics
    assert kept.data["checkpoints"] == before["checkpoints"] and kept.data_key == before["data_key"]
    assert [a["status"] for a in kept.data["attempts"]] == ["failed"]
    assert "truncated" in kept.data["attempts"][0]["error"]
    # a resume with no checkpoint at all: recorded beside, the finished record still on top
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(FileNotFoundError, match="ckpt_path=last: no checkpoint"):
        train(compose_cfg(finished["overrides"] + ["ckpt_path=last"]))
    kept = RunSummary.read(run)
    assert kept.finished and kept.metrics == RunSummary(run, before).metrics
    assert [a["status"] for a in kept.data["attempts"]] == ["failed", "failed"]


def test_a_fresh_run_over_a_finished_one_is_refused_unless_overwrite(finished):
    run = finished["run"]
    files = {p: p.read_bytes() for p in [run / "summary.json", run / "checkpoints" / "last.ckpt"]}
    with pytest.raises(FileExistsError, match=r"holds a finished vqvae run.*ckpt_path=last.*"
                                              r"hydra\.run\.dir.*overwrite=true"):
        train(compose_cfg(finished["overrides"]))
    assert all(p.read_bytes() == data for p, data in files.items()), "nothing was touched"
    again = train(compose_cfg(finished["overrides"] + ["overwrite=true"]))
    assert again["status"] == "finished"
    record = RunSummary.read(run)
    assert record.data["started_at"] == again["started_at"]
    assert [a["started_at"] for a in record.data["attempts"]] == [finished["summary"]["started_at"]]
    assert record.data["attempts"][0]["metrics"] == finished["summary"]["metrics"]


def test_the_summary_says_running_with_its_start_time_while_the_run_runs(tmp_path, data_cache,
                                                                       monkeypatch):
    seen = {}

    def fit_and_test(cfg, out_dir, summary, state):
        seen.update(json.loads((out_dir / "summary.json").read_text()))
        raise MemoryError("killed")  # what an OOM looks like from inside

    monkeypatch.setattr(training, "_fit_and_test", fit_and_test)
    with pytest.raises(MemoryError):
        train(compose_cfg(tiny(tmp_path, data_cache)))
    assert seen["status"] == "running" and seen["model"] == "vqvae" and seen["started_at"]
    assert RunSummary.read(tmp_path / "run").status == "failed"


def test_an_unreadable_summary_is_kept_aside_not_overwritten(tmp_path, data_cache, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{half a summ")
    monkeypatch.setattr(training, "_fit_and_test", lambda *a: None)
    train(compose_cfg(tiny(tmp_path, data_cache)))
    assert (run / "summary.json.unreadable-1").read_text() == "{half a summ"


def test_a_full_disk_leaves_the_earlier_record_and_no_temporary_file(finished, monkeypatch,
                                                                   caplog):
    run = finished["run"]
    before = (run / "summary.json").read_bytes()
    real_write = Path.write_text

    def full_disk(self, data, *args, **kwargs):
        if self.name.endswith(".json.tmp"):
            real_write(self, data[:10])  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    caplog.set_level(logging.ERROR)
    with pytest.raises(OSError, match="No space left"):
        train(compose_cfg(finished["overrides"] + ["ckpt_path=last", "trainer.max_epochs=2"]))
    assert (run / "summary.json").read_bytes() == before
    assert not list(run.glob("*.tmp"))
    assert "the run's record" in caplog.text and '"status"' in caplog.text


def test_a_partial_checkpoint_is_never_named_as_kept(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    good, cut = run / "checkpoints" / "epoch_000.ckpt", run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {}}, good)
    cut.write_bytes(good.read_bytes()[:-40])  # what a full disk leaves
    callback = SimpleNamespace(best_model_path=str(good), last_model_path=str(cut), monitor="x",
                               dirpath=str(run / "checkpoints"), CHECKPOINT_NAME_LAST="last",
                               FILE_EXTENSION=".ckpt")
    trainer = SimpleNamespace(checkpoint_callback=callback, checkpoint_callbacks=[callback])
    found = training._checkpoints(trainer, RunSummary(run))
    assert found == {"best": str(good), "last": None}
    assert "checkpoints kept: best" in training._kept(found) and "last" not in training._kept(found)
    elsewhere = tmp_path / "other" / "epoch_003.ckpt"  # a path recorded by a copied folder
    elsewhere.parent.mkdir()
    shutil.copy(good, elsewhere)
    callback.best_model_path = str(elsewhere)
    assert training._checkpoints(trainer, RunSummary(run))["best"] is None


def test_checkpoint_state_is_rebased_into_the_moved_or_copied_folder(tmp_path):
    old, new = tmp_path / "run" / "checkpoints", tmp_path / "run2" / "checkpoints"
    for folder in (old, new):
        folder.mkdir(parents=True)
        for name in ("epoch_001.ckpt", "last.ckpt"):
            (folder / name).write_bytes(b"x")
    saved = {"monitor": "val/psnr", "best_model_score": torch.tensor(18.95),
             "best_model_path": str(old / "epoch_001.ckpt"), "current_score": None,
             "dirpath": str(old), "best_k_models": {str(old / "epoch_001.ckpt"): 18.95},
             "kth_best_model_path": str(old / "epoch_001.ckpt"), "kth_value": 18.95,
             "last_model_path": str(old / "last.ckpt")}
    callback = RunFolderCheckpoint(dirpath=new, monitor="val/psnr", mode="max")
    callback.load_state_dict(saved)
    assert float(callback.best_model_score) == pytest.approx(18.95), "the best score survives"
    assert callback.best_model_path == str(new / "epoch_001.ckpt")  # not the original folder's
    assert list(callback.best_k_models) == [str(new / "epoch_001.ckpt")]
    assert callback.last_model_path == str(new / "last.ckpt")
    # a checkpoint from another folder whose best file is not here: no best is claimed
    (new / "epoch_001.ckpt").unlink()
    fresh = RunFolderCheckpoint(dirpath=new, monitor="val/psnr", mode="max")
    fresh.load_state_dict(saved)
    assert fresh.best_model_score is None and fresh.best_model_path == ""


def test_resuming_a_moved_and_a_copied_run_gives_the_uninterrupted_result(tmp_path, data_cache):
    full = train(compose_cfg(tiny(tmp_path / "full", data_cache, "trainer.max_epochs=2",
                                  "export=false")))
    train(compose_cfg(tiny(tmp_path / "part", data_cache, "trainer.max_epochs=1", "export=false")))
    part = tmp_path / "part" / "run"
    shutil.copytree(part, tmp_path / "copied")
    part.rename(tmp_path / "moved")  # the original folder is gone
    for folder in (tmp_path / "moved", tmp_path / "copied"):
        overrides = tiny(tmp_path / "x", data_cache, "trainer.max_epochs=2", "export=false",
                         f"paths.output_dir={folder}", "ckpt_path=last")
        resumed = train(compose_cfg(overrides))
        assert resumed["metrics"]["test/psnr"] == pytest.approx(full["metrics"]["test/psnr"],
                                                               abs=1e-4), folder.name
        run = RunSummary.read(folder)
        for which in ("best", "last"):
            assert run.data["checkpoints"][which] is not None
            assert run.contains(run.resolve(run.data["checkpoints"][which])), which
        assert Path(full["checkpoints"]["best"]).name == Path(run.data["checkpoints"]["best"]).name


def test_an_interrupted_stage_resumes_and_another_config_is_moved_aside(tmp_path, data_cache,
                                                                       caplog):
    """SIGTERM inside a stage, then the stage again: it resumes from its last.ckpt (one set of
    checkpoints, the CSV log continues); a stage of another config is moved aside, not lost."""
    status, err, stage, overrides = interrupted_stage(tmp_path, data_cache, SHORT)
    assert status == 143, err[-2000:]
    assert RunSummary.read(stage).status == "interrupted"
    resumed = train_stage("vqvae", overrides, stage)
    run = RunSummary.read(stage)
    assert resumed["reused"] is False and run.finished and run.config["ckpt_path"] == "last"
    assert sorted(p.name for p in (stage / "csv").iterdir()) == ["version_0", "version_1"]
    rows = list(csv.DictReader((stage / "csv" / "version_1" / "metrics.csv").open()))
    assert min(int(r["epoch"]) for r in rows if r.get("epoch")) >= 1, "continues, not epoch 0"
    assert len(list((stage / "checkpoints").glob("epoch_*.ckpt"))) == 1, "one best checkpoint"
    assert train_stage("vqvae", overrides, stage)["reused"] is True
    # a finished stage copied to another folder (a renamed or copied comparison) is reused there
    copied = tmp_path / "elsewhere" / "vqvae"
    shutil.copytree(stage, copied)
    assert train_stage("vqvae", overrides, copied)["reused"] is True
    # another config: the finished stage is moved aside, not overwritten or refused, and the
    # log says which key differs
    other = [o.replace("trainer.max_epochs=12", "trainer.max_epochs=1") for o in overrides]
    with caplog.at_level("INFO", logger="mdvq.runs.experiments"):
        assert train_stage("vqvae", other, stage)["status"] == "finished"
    assert "of another config (stage vs run: trainer.max_epochs: 1 vs 12)" in caplog.text
    aside = RunSummary.read(tmp_path / "stages" / "vqvae.replaced-1")
    assert aside.finished and aside.metrics == run.metrics


def test_an_old_run_config_names_todays_reader_classes(tmp_path):
    """Runs recorded before the `data/formats.py` facade went still rebuild their data."""
    old = {"data": {"datamodule": {"source": {"_target_": "mdvq.data.formats.IQSource",
                                              "root": "x"}}}, "model": {"_target_": "a.B"}}
    run = RunSummary(tmp_path, {"model": "classifier", "config": old})
    assert run.config["data"]["datamodule"]["source"]["_target_"] == "mdvq.data.iq.IQSource"
    assert run.config["model"]["_target_"] == "a.B"
    assert old["data"]["datamodule"]["source"]["_target_"] == "mdvq.data.formats.IQSource"


def test_a_stage_without_the_step_budget_is_not_reused():
    """The fingerprint that decides reuse counts the training budget, not other callbacks: a
    prior trained before it had a step budget is trained again."""
    from mdvq.runs.experiments import config_fingerprint

    base = {"model": {"lr": 1e-3}, "callbacks": {"spectrogram_grid": {"every": 1}}}
    budgeted = {**base, "callbacks": {**base["callbacks"], "training_budget": {"min_steps": 504}}}
    assert config_fingerprint(base) != config_fingerprint(budgeted)
    other_figures = {**budgeted, "callbacks": {**budgeted["callbacks"],
                                               "spectrogram_grid": {"every": 5}}}
    assert config_fingerprint(other_figures) == config_fingerprint(budgeted)
