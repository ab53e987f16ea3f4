"""Fault injection: each test provokes one way a run can lose its results or misreport them and
checks what the user is left with (exit status, summary.json, metrics file, error message)."""

from __future__ import annotations

import csv
import logging
import os
import signal
import stat
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import compose_cfg, sigterm_after_first_checkpoint, tiny_overrides
from PIL import Image

from mdvq.core.errors import DataError
from mdvq.core.summary import RunSummary
from mdvq.data.dataset import atomic_save_npz
from mdvq.runs.prior_sampling import sample_prior
from mdvq.runs.training import check_checkpoint, train

SHORT = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "~callbacks.spectrogram_grid",
         "callbacks.codebook_monitor.log_histogram=false"]


def csv_rows(run) -> list[dict]:
    (path,) = (run / "csv").glob("version_*/metrics.csv")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---- DDP with the default loggers and callbacks --------------------------------------------
@pytest.mark.slow  # several processes (DDP on CPU): `make test-slow` (CI runs it)
def test_ddp_cpu_default_run_keeps_fit_and_test_metrics(tmp_path, data_cache):
    """`trainer=ddp_cpu` spawns fresh workers for `test`; the CSV log must keep the fit rows."""
    cfg = compose_cfg(tiny_overrides(tmp_path, data_cache=data_cache)
                      + ["trainer=ddp_cpu", "trainer.max_epochs=1", *SHORT[:3]])
    summary = train(cfg)
    assert summary["status"] == "finished"
    rows = csv_rows(tmp_path / "run")
    assert any(r["val/psnr"] for r in rows), "fit-stage rows kept"
    assert any(r["test/psnr"] for r in rows), "test rows appended"
    assert summary["checkpoints"] == {"best": "checkpoints/epoch_000.ckpt",
                                      "last": "checkpoints/last.ckpt"}
    assert float(next(r["test/psnr"] for r in rows if r["test/psnr"])) == pytest.approx(
        summary["metrics"]["test/psnr"], rel=1e-5)


# ---- SIGTERM (scheduler time limit, preemption) -----------------------------------------------
def test_sigterm_exits_143_with_a_summary_that_says_where_to_resume(tmp_path, data_cache):
    overrides = tiny_overrides(tmp_path, data_cache=data_cache) + SHORT + [
        "trainer.max_epochs=1000", "export=false"]
    status, err, last = sigterm_after_first_checkpoint(overrides, tmp_path / "run")
    assert status == 128 + signal.SIGTERM, err[-2000:]
    run = RunSummary.read(tmp_path / "run")
    assert run.status == "interrupted" and run.signal == "SIGTERM"
    assert run.data["checkpoints"]["last"] == "checkpoints/last.ckpt"
    assert "stopped by SIGTERM" in run.data["error"]
    assert f"resume with ckpt_path={last}" in run.data["error"]
    stopped = torch.load(last, map_location="cpu", weights_only=False)
    # resume: the run continues from the saved epoch and finishes
    cfg = compose_cfg(tiny_overrides(tmp_path, data_cache=data_cache) + SHORT + [
        f"trainer.max_epochs={stopped['epoch'] + 2}", "export=false", "test=false",
        f"ckpt_path={last}"])
    assert train(cfg)["status"] == "finished"
    resumed = torch.load(last, map_location="cpu", weights_only=False)
    assert resumed["epoch"] == stopped["epoch"] + 1
    assert resumed["global_step"] == stopped["global_step"] + 1  # one batch per epoch


def test_sigterm_before_training_still_writes_the_summary(tmp_path, monkeypatch):
    import lightning as L

    def signalled(*args, **kwargs):  # e.g. while the simulator generates the data
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(L, "seed_everything", signalled)
    with pytest.raises(SystemExit) as info:
        train(compose_cfg(tiny_overrides(tmp_path)))
    assert info.value.code == 143
    run = RunSummary.read(tmp_path / "run")
    assert run.status == "interrupted" and run.signal == "SIGTERM"
    assert "no checkpoint was written yet" in run.data["error"]
    assert run.data["checkpoints"] == {"best": None, "last": None}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


# ---- the summary's checkpoint paths after testing ---------------------------------------------
def test_summary_names_last_checkpoint_when_the_best_is_from_epoch_0(tmp_path, data_cache):
    # PSNR rises while training, so with mode=min the first epoch is the "best" one
    cfg = compose_cfg(tiny_overrides(tmp_path, data_cache=data_cache) + SHORT + [
        "trainer.max_epochs=2", "callbacks.model_checkpoint.mode=min", "export=false",
        "trainer.limit_train_batches=3"])
    summary = train(cfg)
    assert summary["checkpoints"]["best"] == "checkpoints/epoch_000.ckpt"  # the premise
    assert summary["checkpoints"]["last"] == "checkpoints/last.ckpt"
    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", map_location="cpu",
                      weights_only=False)["epoch"] == 1


# ---- corrupt checkpoints -------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}, "epoch": 3}, path)
    return path


def test_truncated_checkpoint_is_named_before_anything_runs(tmp_path, checkpoint):
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(checkpoint.read_bytes()[:5000])
    cfg = compose_cfg(tiny_overrides(tmp_path) + [f"ckpt_path={bad}"])
    with pytest.raises(DataError, match="truncated") as info:
        train(cfg)
    assert str(bad) in str(info.value) and "ckpt_path" in str(info.value)
    assert "weights_only" not in str(info.value)
    assert not (tmp_path / "cache").exists(), "failed before generating data"
    run = RunSummary.read(tmp_path / "run")
    assert run.status == "failed" and str(bad) in run.data["error"]


def test_corrupted_and_missing_checkpoints_are_named(tmp_path, checkpoint):
    raw = bytearray(checkpoint.read_bytes())
    with zipfile.ZipFile(checkpoint) as z:  # flip a byte inside the tensor data
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    raw[info.header_offset + info.file_size // 2] ^= 0xFF  # past the local header
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="fails its CRC check") as err:
        check_checkpoint(flipped)
    assert str(flipped) in str(err.value)
    with pytest.raises(FileNotFoundError, match="ckpt_path: no checkpoint at .*nothing.ckpt"):
        check_checkpoint(tmp_path / "nothing.ckpt")
    with pytest.raises(DataError, match="is a folder"):
        check_checkpoint(tmp_path)
    assert check_checkpoint(checkpoint) == checkpoint


# ---- sampling arguments ----------------------------------------------------------------------
def test_negative_guidance_is_refused_before_sampling():
    calls = []
    prior = SimpleNamespace(
        data_info={"class_names": ["walk", "fall"]}, num_classes=2,
        hparams=SimpleNamespace(sample_steps=4, sample_guidance=1.0, get=lambda k: 10),
        max_sample_steps=10, device=torch.device("cpu"),
        generate=lambda *a: calls.append(a), decode=lambda x: x)
    with pytest.raises(ValueError, match="guidance must be a finite scale >= 0.*got -2.0"):
        sample_prior(prior, n_per_class=1, guidance=-2)
    with pytest.raises(ValueError, match="guidance.*got nan"):
        sample_prior(prior, n_per_class=1, guidance=float("nan"))
    prior.model_kind = "latentdiffusion"
    with pytest.raises(ValueError, match="temperature applies to masked-token priors only; "
                                         "this is a latentdiffusion prior"):
        sample_prior(prior, n_per_class=1, sampler="dpm", temperature=0.5)
    assert calls == [], "nothing was generated"


# ---- data faults: skipped files, odd aspect ratios, shared caches ------------------------------
def test_skipped_files_are_counted_in_the_summary_and_odd_aspect_warned(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for c in ("fall", "walk"):
        for i in range(6):
            pic = (rng.uniform(0, 255, (16, 16))).astype(np.uint8)
            (tmp_path / "pics" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pic).save(tmp_path / "pics" / c / f"{i}.png")
    Image.fromarray(np.zeros((16, 40), np.uint8)).save(tmp_path / "pics/walk/wide.png")
    (tmp_path / "pics/fall/broken.png").write_bytes(b"\x89PNG not really")
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith(("data", "model="))]
    cfg = compose_cfg(["data=folder", f"data.root={tmp_path / 'pics'}", "data.on_error=skip",
                       "data.image_size=[16,16]", "data.datamodule.batch_size=4", *overrides,
                       *SHORT, "trainer.max_epochs=1", "export=false", "test=false"])
    with caplog.at_level(logging.WARNING):
        summary = train(cfg)
    assert summary["skipped_files"] == 1 and RunSummary.read(tmp_path / "run").skipped_files == 1
    assert "1 of 13 examples have another aspect ratio" in caplog.text
    assert "wide.png" in caplog.text


def test_cache_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_save_npz(tmp_path / "c.npz", {"x": np.zeros(3)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.npz").stat().st_mode) == 0o644


def test_nan_message_does_not_promise_a_checkpoint(tmp_path, data_cache, monkeypatch, caplog):
    from mdvq.models import VQVAEModule

    original = VQVAEModule.training_step

    def poisoned(self, batch, batch_idx):  # NaN in the very first step: nothing was saved
        return original(self, (torch.full_like(batch[0], float("nan")), batch[1]), batch_idx)

    monkeypatch.setattr(VQVAEModule, "training_step", poisoned)
    with caplog.at_level(logging.ERROR), pytest.raises(FloatingPointError) as err:
        train(compose_cfg(tiny_overrides(tmp_path, data_cache=data_cache) + SHORT))
    assert "last good checkpoint" not in str(err.value)
    assert "no checkpoint was written" in caplog.text
    run = RunSummary.read(tmp_path / "run")
    assert run.status == "failed" and run.data["checkpoints"] == {"best": None, "last": None}


def test_ctrl_c_exits_130_and_is_recorded(tmp_path, data_cache, monkeypatch):
    from mdvq.models import VQVAEModule

    def interrupted(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(VQVAEModule, "training_step", interrupted)
    with pytest.raises(SystemExit) as info:  # Lightning turns Ctrl-C inside fit into exit(1)
        train(compose_cfg(tiny_overrides(tmp_path, data_cache=data_cache) + SHORT))
    assert info.value.code == 130
    run = RunSummary.read(tmp_path / "run")
    assert run.status == "interrupted" and run.signal == "SIGINT"
    assert run.data["error"].startswith("stopped by SIGINT at epoch 0, step 0")
