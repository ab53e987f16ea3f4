"""A preempted DDP job resumes: `trainer=ddp_cpu` (2 spawned processes) stopped by SIGTERM
after its first checkpoint exits 143 with an `interrupted` summary, and the same command with
`ckpt_path=last` in the same run folder continues from that checkpoint and finishes."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from conftest import compose_cfg, sigterm_after_first_checkpoint, tiny_overrides

from mdvq.core.summary import RunSummary
from mdvq.runs.training import resolve_ckpt_path, train

SHORT = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
         "~callbacks.spectrogram_grid", "callbacks.codebook_monitor.log_histogram=false",
         "trainer=ddp_cpu", "export=false", "test=false"]


@pytest.mark.slow  # several processes, 40-120 s: `make test-slow` (CI runs it)
def test_sigterm_stops_a_ddp_run_and_ckpt_path_last_resumes_it(tmp_path):
    overrides = tiny_overrides(tmp_path) + SHORT + ["trainer.max_epochs=1000"]
    status, err, last = sigterm_after_first_checkpoint(overrides, tmp_path / "run", timeout=240)
    assert status == 128 + signal.SIGTERM, err[-3000:]  # SIGTERM to the main process only
    run = RunSummary.read(tmp_path / "run")
    assert run.status == "interrupted" and run.signal == "SIGTERM", run.data["error"]
    assert run.data["checkpoints"]["last"] == "checkpoints/last.ckpt"
    stopped = torch.load(last, map_location="cpu", weights_only=False)
    assert stopped["epoch"] < 998, "stopped long before max_epochs"
    # the same command in the same run folder, with ckpt_path=last
    cfg = compose_cfg(tiny_overrides(tmp_path) + SHORT + [
        f"trainer.max_epochs={stopped['epoch'] + 2}", "ckpt_path=last"])
    assert train(cfg)["status"] == "finished"
    resumed = torch.load(last, map_location="cpu", weights_only=False)
    assert resumed["epoch"] == stopped["epoch"] + 1
    assert resumed["global_step"] == stopped["global_step"] + 1  # one batch per epoch
    assert RunSummary.read(tmp_path / "run").status == "finished"


def test_ckpt_path_last_and_auto_resolve_in_the_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last: no checkpoint .*hydra.run.dir"):
        resolve_ckpt_path("last", tmp_path)
    assert resolve_ckpt_path("auto", tmp_path) is None  # a requeued job's first start
    (tmp_path / "checkpoints").mkdir()
    torch.save({"epoch": 3}, tmp_path / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path("last", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    time.sleep(0.05)
    torch.save({"epoch": 3, "hpc": True}, tmp_path / "hpc_ckpt_1.ckpt")  # SLURM requeue signal
    assert resolve_ckpt_path("auto", tmp_path) == str(tmp_path / "hpc_ckpt_1.ckpt")
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"truncated")
    os.utime(tmp_path / "hpc_ckpt_1.ckpt", (time.time() + 5, time.time() + 5))
    with pytest.raises(Exception, match="ckpt_path: not a PyTorch checkpoint"):
        resolve_ckpt_path("last", tmp_path)
    assert resolve_ckpt_path(None, tmp_path) is None
    assert resolve_ckpt_path("hpc", tmp_path) == "hpc"
