"""W&B for review, offline: one run per multirun job, grouped by sweep and named by the swept
values, with job type, tags, dashboard summaries and media, read back from the offline files."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_DATA, TINY_MODEL, TINY_TRAINER

from mdvq.utils.loggers import job_name, short_key, swept_keys


def wandb_records(run_file: Path):
    """The records of an offline W&B run file (.wandb), as `wandb_internal_pb2.Record`s.

    The file is W&B's LevelDB-style log: a 7-byte header, then 32 KiB blocks of records
    (crc u32, length u16, type u8, payload; type 1 = full, 2/3/4 = first/middle/last chunk).
    """
    from wandb.proto import wandb_internal_pb2

    raw, pos, block, chunk = run_file.read_bytes(), 7, 32768, b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        chunk += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def read_offline_run(run_file: Path) -> dict:
    """What a dashboard would show of an offline run: its last `run` record (name, group,
    job_type, tags), history keys, the final summary {key: value} (nested keys of media and
    tables joined with "/", e.g. "val/spectrograms/_type"), the artifacts' files and the exit
    code."""
    out = {"run": None, "history": set(), "summary": {}, "exit_code": None, "artifacts": {}}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
        elif kind == "history":
            out["history"].update(i.key or "/".join(i.nested_key) for i in record.history.item)
        elif kind == "summary":
            for item in record.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "artifact":  # e.g. a table's media: {type: [paths in the artifact]}
            out["artifacts"][record.artifact.type] = [e.path for e in
                                                      record.artifact.manifest.contents]
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def read_finished_run(folder: Path, timeout_s: float = 60) -> dict:
    """`read_offline_run` of the run file in `folder` once its exit record is written (W&B's
    service writes the file asynchronously, slowly under load)."""
    deadline = time.time() + timeout_s
    while True:
        files = list(folder.glob("run-*.wandb"))
        info = read_offline_run(files[0]) if files else {"exit_code": None}
        if info["exit_code"] is not None or time.time() > deadline:
            return info
        time.sleep(0.5)


def test_swept_keys_and_job_names():
    given = ["model.block_out_channels=[8,16]", "model.num_vq_embeddings=256,1024",
             "model.commitment_cost=0.25,0.5", "model/codebook=plain,healthy", "logger=wandb"]
    keys = swept_keys(given)
    assert keys == ["model.num_vq_embeddings", "model.commitment_cost", "model/codebook"]
    job = ["model.block_out_channels=[8,16]", "model.num_vq_embeddings=1024",
           "model.commitment_cost=0.25", "model/codebook=healthy", "logger=wandb"]
    assert job_name(job, keys) == "K=1024,commitment=0.25,codebook=healthy"
    # an Optuna search space names its keys in the sweeper's params
    assert swept_keys(["logger=wandb"], {"model.lr": "interval(1e-4, 1e-3)"}) == ["model.lr"]
    assert job_name(["logger=wandb"], []) is None
    assert short_key("+trainer.max_epochs") == "max_epochs"


TINY = [*TINY_DATA, *TINY_TRAINER, *TINY_MODEL, "model.vq_embed_dim=4", "trainer.max_epochs=2",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.log_every_n_steps=1"]


def test_multirun_jobs_are_separate_grouped_named_wandb_runs(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "mdvq.run", "-m", *TINY, "logger=wandb",
           "model.num_vq_embeddings=8,16", f"paths.output_root={tmp_path}",
           f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"]
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    env.update(NETRC=str(tmp_path / "no-netrc"), WANDB_SILENT="true", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # stdout is a pipe, not a terminal: one plain line per epoch instead of a progress bar
    assert "epoch 2/2 | train/loss " in proc.stdout and "| remaining 0:00:00" in proc.stdout
    runs = {}
    for job, k in (("0", 8), ("1", 16)):
        folders = list((sweep / job / "wandb").glob("offline-run-*"))
        assert len(folders) == 1, f"job {job}: one W&B run of its own, got {folders}"
        info = runs[job] = read_finished_run(folders[0])
        assert info["exit_code"] == 0, f"job {job}'s run was finished by the job itself"
        run = info["run"]
        assert run.display_name == f"K={k}"
        assert run.run_group == "train/sweep" and run.job_type == "autoencoder"
        data_key = json.loads((sweep / job / "summary.json").read_text())["data_key"]
        assert {"model:vqvae", f"data:{data_key}"} <= set(run.tags), run.tags
        summary = info["summary"]
        assert set(summary["val/psnr"]) == {"max"}, "best val/psnr for the dashboard to sort on"
        assert 0 < summary["val/psnr"]["max"] < 60  # dB
        assert 0 <= summary["val/codebook_usage"]["last"] <= 1
        assert 1 <= summary["val/perplexity"]["last"] <= k
        for key in ("test/psnr", "test/codebook_usage", "test/perplexity"):
            assert isinstance(summary[key], (int, float)), key
        # media: reconstruction grid and code-use figure (images), code counts (a histogram)
        # a list of one picture each (Lightning's log_image), W&B type "images/separated"
        for key in ("val/spectrograms", "val/code_use"):
            assert summary[f"{key}/_type"] == "images/separated" and summary[f"{key}/count"] == 1
        assert summary["val/code_counts/_type"] == "histogram"
        assert len(summary["val/code_counts/values"]) == k, "one bin per code"
        assert list(folders[0].glob("files/media/images/val/spectrograms_*.png"))
        assert {"epoch", "train/loss", "val/psnr", "test/psnr"} <= info["history"]
    assert runs["0"]["run"].run_id != runs["1"]["run"].run_id


def test_wandb_logger_without_a_sweep_is_named_by_the_task(tmp_path, monkeypatch):
    """The run as W&B records it (the offline run file): named by the task, job type and tag
    from the model kind, no group outside a sweep."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    from mdvq.utils.loggers import close_loggers, wandb_logger

    logger = wandb_logger(save_dir=str(tmp_path), task_name="prior", offline=True,
                          model_target="mdvq.models.vqdiffusion.VQDiffusionModule")
    assert logger.experiment is not None  # starts the offline run
    close_loggers([logger])
    folders = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(folders) == 1, folders
    run = read_finished_run(folders[0])["run"]
    assert run.display_name == "prior" and run.job_type == "prior"
    assert list(run.tags) == ["model:vqdiffusion"] and run.run_group == ""


def test_epoch_line_without_a_terminal():
    from mdvq.callbacks.progress import EpochLines, epoch_line

    line = epoch_line(3, 8, {"train/loss": 0.12345, "val/psnr": 21.5}, elapsed_s=90.0)
    # 30 s per epoch, 5 epochs left
    assert line == ("epoch 3/8 | train/loss 0.1235 | val/psnr 21.5 | elapsed 0:01:30 | "
                    "remaining 0:02:30")
    # a resumed run timed 2 of its 3 epochs: 45 s each
    assert epoch_line(3, 4, {}, 90.0, epochs_timed=2).endswith("remaining 0:00:45")
    assert epoch_line(2, -1, {}, 5.0) == "epoch 2 | elapsed 0:00:05"  # no max_epochs
    with pytest.raises(ValueError, match="callbacks.epoch_lines.when"):
        EpochLines(when="sometimes")


def test_decision_and_samples_tables_offline(tmp_path, monkeypatch):
    import math

    import numpy as np
    import torch

    from mdvq.core.samples import SampleSet
    from mdvq.evaluation.decision import decide
    from mdvq.evaluation.review import log_evaluation
    from mdvq.utils.loggers import log_review_run, wandb_rows_table

    monkeypatch.setenv("WANDB_SILENT", "true")
    decision = decide(24.5, 0.9, 21.5, psnr_margin=0.1, usage_threshold=0.8).to_dict()
    folder = log_review_run(tmp_path / "phase1", "decision", "evaluation",
                            {"decision": wandb_rows_table([decision])}, {"continue_vq": 1},
                            offline=True)
    info = read_finished_run(folder)
    assert info["run"].job_type == "evaluation" and info["run"].display_name == "decision"
    assert info["summary"]["continue_vq"] == 1
    assert info["summary"]["decision/_type"] == "table-file"
    (table_file,) = folder.glob("files/media/table/decision_*.table.json")
    table = json.loads(table_file.read_text())
    row = dict(zip(table["columns"], table["data"][0]))
    assert row["verdict"] == "vqvae" and math.isclose(row["psnr_required"], 23.65)

    class Judge(torch.nn.Module):  # always class 0 with logits (2, 0): confidence e^2/(e^2+1)
        def forward(self, x):
            assert x.min() >= -1 and x.max() <= 1, "model space [-1, 1]"
            return torch.tensor([2.0, 0.0]).expand(len(x), 2)

    rng = np.random.default_rng(0)
    samples = SampleSet(images=rng.uniform(0, 1, (4, 1, 8, 8)).astype(np.float32),
                        labels=np.array([0, 1, 0, 1]), meta={"class_names": ["walking", "falling"]},
                        directory=tmp_path / "samples")
    result = {"metrics": {"conditional_accuracy": 0.5, "tstr_acc": None}}
    folder = log_evaluation(Judge(), samples, result, tmp_path / "eval", offline=True)
    info = read_finished_run(folder)
    assert info["run"].job_type == "evaluation"
    assert info["summary"]["conditional_accuracy"] == 0.5 and "tstr_acc" not in info["summary"]
    (table_file,) = folder.glob("files/media/table/samples_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["image", "asked", "classified", "confidence", "correct"]
    rows = [dict(zip(table["columns"], r)) for r in table["data"]]
    assert [r["asked"] for r in rows] == ["walking", "falling", "walking", "falling"]
    assert all(r["classified"] == "walking" for r in rows)
    assert all(math.isclose(r["confidence"], math.exp(2) / (math.exp(2) + 1), rel_tol=1e-6)
               for r in rows)
    assert [r["correct"] for r in rows] == [True, False, True, False]
    # the pictures travel in the table's artifact (W&B stages its files under WANDB_DATA_DIR)
    files = info["artifacts"]["run_table"]
    assert "samples.table.json" in files
    assert len([f for f in files if f.startswith("media/images/") and f.endswith(".png")]) == 4
