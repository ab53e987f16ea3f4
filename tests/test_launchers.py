"""Hydra launchers (conf/hydra/launcher/): a 2-job sweep through submitit's local executor with
one job preempted, requeued and resumed from its own last.ckpt; a 2-job sweep through joblib;
the SLURM launcher with `trainer=multinode` composed and rendered to its sbatch script (no
cluster needed). docs/scaling.md explains the requeue path these tests follow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_cfg, run_cli, tiny_overrides

# The key a requeueable job carries: "auto" resumes from the run folder's last.ckpt and starts
# fresh when there is none (mdvq.runs.training.resolve_ckpt_path).
RESUME = "auto"

# Short runs: 2 training batches per epoch, no figure grid, nothing exported or tested.
SHORT = [
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "~callbacks.spectrogram_grid",
    "test=false",
    "export=false",
]


def sweep_args(tmp: Path, cache: Path, *extra: str) -> list[str]:
    """`mdvq.run -m` arguments for a tiny sweep in tmp/sweep (each job its own folder)."""
    base = [o for o in tiny_overrides(tmp, data_cache=cache) if not o.startswith("paths.output_dir=")]
    return ["mdvq.run", "-m", *base, *SHORT, f"hydra.sweep.dir={tmp / 'sweep'}", *extra]


def summaries(sweep: Path, n: int) -> list[dict]:
    """The summary.json of jobs 0..n-1 of a sweep folder."""
    return [json.loads((sweep / str(i) / "summary.json").read_text()) for i in range(n)]


@pytest.fixture
def job_path(monkeypatch):
    """Job processes import this checkout's mdvq and tests/preempt_once.py."""
    parts = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in parts if p))


@pytest.mark.slow  # several processes, 40-120 s: `make test-slow` (CI runs it)
def test_submitit_local_sweep_requeues_a_preempted_job_which_resumes_from_last_ckpt(
        tmp_path, data_cache, job_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher not installed (pip install mdvq[slurm])")
    marker = tmp_path / "preempted"
    # job 0 runs 3 epochs and gets submitit's preemption signal (USR2) as epoch 2 starts; job 1
    # runs 1 epoch and is left alone. Every job carries ckpt_path=auto, as on SLURM.
    proc = run_cli(sweep_args(
        tmp_path, data_cache, "hydra/launcher=submitit_local", f"ckpt_path={RESUME}",
        "+callbacks.preempt._target_=preempt_once.PreemptOnce",
        f"+callbacks.preempt.marker={marker}", "+callbacks.preempt.epoch=2",
        "trainer.max_epochs=3,1"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Submitit 'local' sweep output dir" in out
    sweep = tmp_path / "sweep"
    runs = summaries(sweep, 2)
    assert [r["status"] for r in runs] == ["finished", "finished"]
    assert [r["config"]["trainer"]["max_epochs"] for r in runs] == [3, 1]
    # one submitit job (job 0) was preempted and requeued by submitit itself
    logs = {d.name: "".join(p.read_text() for p in d.glob("*_log.*"))
            for d in (sweep / ".submitit").iterdir() if d.is_dir()}
    requeued = [text for text in logs.values() if "Requeued job" in text]
    assert len(requeued) == 1 and "this job is preempted" in requeued[0], logs
    # ... and its second run found its own folder's last.ckpt: it started at epoch 2, step 4
    assert (tmp_path / "preempted.resumed").read_text() == "2 4"
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    assert f"Restoring states from the checkpoint path at {last}" in requeued[0]
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert (state["epoch"], state["global_step"]) == (2, 6)  # 3 epochs x 2 batches, none repeated


@pytest.mark.slow  # several processes, 40-120 s: `make test-slow` (CI runs it)
def test_joblib_sweep_runs_two_jobs_in_parallel_workers(tmp_path, data_cache, job_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher",
                        reason="hydra-joblib-launcher not installed (pip install mdvq[joblib])")
    proc = run_cli(sweep_args(tmp_path, data_cache, "hydra/launcher=local_parallel",
                              "trainer.max_epochs=1", "seed=1,2"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in out, out[-3000:]
    runs = summaries(tmp_path / "sweep", 2)
    assert [r["status"] for r in runs] == ["finished", "finished"]
    assert [r["config"]["seed"] for r in runs] == [1, 2]


class DryRun(Exception):
    """Raised instead of calling sbatch; carries the sbatch script."""


def test_slurm_launcher_with_multinode_composes_and_renders_the_sbatch_script(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher not installed (pip install mdvq[slurm])")
    from hydra.utils import instantiate
    from submitit.slurm.slurm import SlurmExecutor

    cfg = compose_config_with_hydra([
        "hydra/launcher=slurm", "trainer=multinode", "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu", "ckpt_path=auto", f"paths.output_root={tmp_path}"])
    launcher_cfg = cfg.hydra.launcher
    assert (launcher_cfg.nodes, launcher_cfg.tasks_per_node, launcher_cfg.gpus_per_node) == (2, 4, 4)
    assert cfg.trainer.strategy == "ddp" and cfg.ckpt_path == "auto"
    assert launcher_cfg.partition == "gpu" and launcher_cfg.max_num_timeout == 3

    def dry_run(self, command):
        raise DryRun(self._make_submission_file_text(command, "dryrun"))

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun exists"
    monkeypatch.setattr(SlurmExecutor, "_submit_command", dry_run)
    launcher = instantiate(launcher_cfg)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(DryRun) as sbatch:
        launcher.launch([["seed=1"], ["seed=2"]], initial_job_idx=0)
    script = str(sbatch.value)
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--time=240", "--signal=USR2@120", "--array=0-1%2", "--cpus-per-task=4",
                 "--mem=32GB", "--requeue"):
        assert f"#SBATCH {line}\n" in script, script
    assert "srun " in script and "submitit.core._submit" in script  # one task per GPU, via srun


def compose_config_with_hydra(overrides: list[str]):
    """The project config with its `hydra` node (launcher settings), as a multirun sees it."""
    from mdvq.core.compose import compose_config

    return compose_config(overrides, return_hydra_config=True)


def test_local_parallel_launcher_config_composes():
    cfg = compose_config_with_hydra(["hydra/launcher=local_parallel"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert (cfg.hydra.launcher.n_jobs, cfg.hydra.launcher.backend) == (2, "loky")
    assert compose_cfg(["hydra/launcher=local_parallel"]).ckpt_path is None  # launcher-only delta


@pytest.mark.parametrize("devices", ["-1", "auto", "[0,1]"])
def test_slurm_launcher_refuses_a_device_count_slurm_cannot_request(devices):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher not installed (pip install mdvq[slurm])")
    cfg = compose_config_with_hydra(["hydra/launcher=slurm", "trainer=ddp",
                                     f"trainer.devices={devices}"])
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    with pytest.raises(InterpolationResolutionError, match=r"trainer\.devices=.*must be a count >= 1"):
        OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # as the launcher does
    cfg = compose_config_with_hydra(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=2"])
    assert (cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.gpus_per_node) == (2, 2)
