"""Sweeps: the summariser (mdvq.sweep) on hand-made and real tiny multiruns, a failing job in a
multirun, and a 2-trial Optuna search (conf/hparams_search/vqvae_optuna.yaml)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_DATA, TINY_MODEL, TINY_TRAINER

from mdvq.runs.sweeps import SweepWarning, collect_runs, rank, summarise
from mdvq.sweep import main

# Tiny real runs (as tests/test_run.py's tiny_overrides, without paths.output_dir, which a
# multirun sets per job): 8 simulated examples per class at 16x16, one short epoch.
TINY = [
    *TINY_DATA,
    *TINY_TRAINER,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "~callbacks.spectrogram_grid",
    *TINY_MODEL,
    "model.vq_embed_dim=4",
]


def multirun(tmp: Path, cache: Path, *overrides: str, timeout: int = 300):
    """`python -m mdvq.run -m` on tiny settings with its sweep in tmp/sweep; returns the process."""
    cmd = [sys.executable, "-m", "mdvq.run", "-m", *TINY, f"paths.output_root={tmp}",
           f"paths.cache_dir={cache}", f"hydra.sweep.dir={tmp / 'sweep'}", *overrides]
    env = dict(os.environ, PYTHONWARNINGS="ignore", WANDB_MODE="disabled")
    return subprocess.run(cmd, check=False, cwd=tmp, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory) -> Path:
    """One simulated data cache shared by the real multiruns of this module."""
    return tmp_path_factory.mktemp("cache")


def write_job(root: Path, job: str, summary: dict | str | None, hydra_dir: bool = True) -> Path:
    """A fake job folder: `.hydra/` and a summary.json (a dict, raw text, or none)."""
    d = root / job
    d.mkdir(parents=True)
    if hydra_dir:
        (d / ".hydra").mkdir()
    if isinstance(summary, dict):
        (d / "summary.json").write_text(json.dumps(summary))
    elif isinstance(summary, str):
        (d / "summary.json").write_text(summary)
    return d


def vq_summary(k, cc, psnr, usage, technique=None, status="finished", wall=10.0, error=None):
    model = {"_target_": "mdvq.models.VQVAEModule", "num_vq_embeddings": k, "commitment_cost": cc}
    if technique:
        model["codebook"] = {"name": technique}
    metrics = {"test/psnr": psnr, "test/ssim": 0.5, "test/codebook_usage": usage,
               "test/perplexity": usage * k, "test/dead_codes": round((1 - usage) * k),
               "val/psnr": psnr - 1} if status == "finished" else {}
    out = {"model": "vqvae", "status": status, "metrics": metrics, "wall_time_s": wall,
           "config": {"model": model}}
    if error:
        out["error"] = error
    return out


def test_summariser_ranks_tabulates_and_reports_failures(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_job(sweep, "0", vq_summary(512, 0.25, 30.0, 0.9, "ema", wall=30.0))
    write_job(sweep, "1", vq_summary(1024, 0.1, 32.5, 0.5, wall=20.0))  # no codebook key: plain
    write_job(sweep, "2", vq_summary(8192, 1.0, None, None, "kmeans", status="failed",
                                     error="ValueError: model.norm_num_groups=3 must divide 8"))
    write_job(sweep, "3", "{not json")
    killed = write_job(sweep, "4", None)  # a Hydra job folder whose job was killed
    (killed / ".hydra" / "config.yaml").write_text(
        "model:\n  num_vq_embeddings: 2048\n  commitment_cost: 0.5\n")
    write_job(sweep, "5", {"model": "klvae", "status": "finished", "wall_time_s": 5.0,
                           "metrics": {"test/psnr": 28.0, "test/ssim": 0.4},
                           "config": {"model": {"_target_": "mdvq.models.KLVAEModule"}}})
    write_job(sweep, "10", vq_summary(8192, 0.25, 31.0, 0.95, "ema", wall=40.0))

    with pytest.warns(SweepWarning) as caught:
        rows = collect_runs(sweep)
    messages = [str(w.message) for w in caught]
    assert any(str(sweep / "3" / "summary.json") in m and "unreadable" in m for m in messages)
    assert any(str(sweep / "4" / "summary.json") in m for m in messages)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "4", "5", "10"]  # 10 after 5

    ranked = rank(rows, "test/psnr")
    assert [r["job"] for r in ranked] == ["1", "10", "0", "5", "2", "3", "4"]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4, None, None, None]
    first = ranked[0]
    assert (first["K"], first["commitment_cost"], first["technique"]) == (1024, 0.1, "plain")
    assert (first["usage"], first["usage_ok"], first["dead_codes"]) == (0.5, False, 512)
    kl = next(r for r in ranked if r["job"] == "5")
    assert kl["K"] is None and kl["technique"] is None and kl["usage_ok"] is None
    # smaller-is-better keys sort ascending by default; columns work as keys too
    assert [r["job"] for r in rank(rows, "test/dead_codes")][:3] == ["0", "10", "1"]  # 51, 410, 512
    assert [r["job"] for r in rank(rows, "wall_time_s")][:4] == ["5", "1", "0", "10"]
    assert next(r["job"] for r in rank(rows, "K", descending=True)) == "10"  # 2 (failed) is last

    with pytest.warns(SweepWarning):
        assert main([str(sweep), f"out={tmp_path / 'out'}"]) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert md in printed
    assert "| 1 | 1 | vqvae | 1024 | 0.100 | plain | 32.50 | 0.500 | 0.500 | 512.0 | 512 | no |" in md
    assert "| 2 | 10 | vqvae | 8192 | 0.250 | ema | 31.00 |" in md and "| yes | 40.0 | finished |" in md
    assert "- job 2 (failed; K=8192, commitment=1.0, technique=kmeans): ValueError: " \
           "model.norm_num_groups=3 must divide 8" in md
    assert "- job 4 (missing; K=2048, commitment=0.5, technique=plain): no summary.json" in md
    with open(tmp_path / "out" / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["job"] for r in table] == ["1", "10", "0", "5", "2", "3", "4"]
    assert table[0]["psnr_db"] == "32.5" and table[0]["technique"] == "plain"
    assert table[3]["model"] == "klvae" and table[3]["K"] == "" and table[3]["technique"] == ""
    assert table[4]["status"] == "failed" and "norm_num_groups" in table[4]["error"]
    # run folders relative to the table's folder: no path of this machine in a shared table
    assert table[0]["run_dir"] == "../sweep/1" and not any(r["run_dir"].startswith("/") for r in table)
    png = (tmp_path / "out" / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_summariser_rejects_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        collect_runs(tmp_path / "nowhere")


@pytest.fixture(scope="module")
def mixed_sweep(tmp_path_factory, data_cache):
    """One real 2x2 multirun (K=8,16 x norm_num_groups=3,4; export=false). Hydra's basic sweeper
    orders the swept keys by name, so jobs 0 and 1 (norm_num_groups=3, which cannot divide the
    channels; K=8 and 16) fail at construction and jobs 2 and 3 (K=8 and 16) train.
    Returns (the process, the sweep folder)."""
    tmp = tmp_path_factory.mktemp("mixed")
    proc = multirun(tmp, data_cache, "model/codebook=plain", "model.commitment_cost=0.1",
                    "model.num_vq_embeddings=8,16", "model.norm_num_groups=3,4", "export=false")
    return proc, tmp / "sweep"


def test_summariser_on_a_real_multirun(mixed_sweep, capsys):
    _, sweep = mixed_sweep
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]

    assert main([str(sweep), "sort=test/psnr"]) == 0  # `python -m mdvq.sweep`, in this process
    assert "Jobs ranked by `test/psnr` (4 jobs)." in capsys.readouterr().out
    with open(sweep / "sweep.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "finished"]
    assert {(r["K"], r["commitment_cost"]) for r in rows} == {("8", "0.1"), ("16", "0.1")}
    assert all(r["technique"] == "plain" for r in rows)
    psnr = [float(r["psnr_db"]) for r in rows]
    assert psnr == sorted(psnr, reverse=True) and all(0 < p < 100 for p in psnr)
    assert len(set(psnr)) == 2, "two different models, two PSNRs: the ranking is not vacuous"
    assert [r["rank"] for r in rows] == ["1", "2"]
    for r in rows:  # the table holds what each job's own summary says
        summary = json.loads((sweep / r["job"] / "summary.json").read_text())
        assert float(r["psnr_db"]) == summary["metrics"]["test/psnr"]
        assert float(r["usage"]) == summary["metrics"]["test/codebook_usage"]
        assert 0 < float(r["usage"]) <= 1 and float(r["wall_time_s"]) > 0
    assert (sweep / "sweep.png").stat().st_size > 10_000 and (sweep / "sweep.md").exists()


def test_failing_job_is_reported_and_the_others_finish(mixed_sweep):
    proc, sweep = mixed_sweep
    assert proc.returncode != 0  # the basic sweeper re-raises after the whole batch
    assert "norm_num_groups" in proc.stderr
    for job in ("0", "1"):
        failed = json.loads((sweep / job / "summary.json").read_text())
        assert failed["status"] == "failed" and "norm_num_groups" in failed["error"]
        assert failed["config"]["model"]["norm_num_groups"] == 3
    for job in ("2", "3"):
        assert json.loads((sweep / job / "summary.json").read_text())["status"] == "finished"

    rows, md = summarise(sweep)
    assert [(r["status"], r["rank"]) for r in rows] == [("finished", 1), ("finished", 2),
                                                        ("failed", None), ("failed", None)]
    assert {r["job"] for r in rows[2:]} == {"0", "1"}
    assert re.search(r"- job 0 \(failed; K=8, .*\): ValueError: .*norm_num_groups", md)
    assert re.search(r"- job 1 \(failed; K=16, .*\): ValueError: .*norm_num_groups", md)


def test_optuna_search_runs_two_trials_on_both_objectives(tmp_path, data_cache):
    proc = multirun(tmp_path, data_cache, "hparams_search=vqvae_optuna",
                    "hydra.sweeper.n_trials=2",
                    "model.num_vq_embeddings=choice(8,16)",  # tiny stand-ins for 512..8192
                    "model/codebook=choice(plain,ema)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and result["solutions"]  # the Pareto front
    summaries = [json.loads((sweep / j / "summary.json").read_text()) for j in ("0", "1")]
    assert not (sweep / "2").exists()
    returned = []
    for s in summaries:
        model = s["config"]["model"]
        assert s["status"] == "finished" and s["config"]["task_name"] == "vqvae_optuna"
        assert model["num_vq_embeddings"] in (8, 16) and model["codebook"]["name"] in ("plain", "ema")
        assert 0.1 <= model["commitment_cost"] <= 1.0
        returned.append([s["metrics"]["val/psnr"], s["metrics"]["val/codebook_usage"]])
    for solution in result["solutions"]:  # what main() returned to Optuna: (val/psnr, val/usage)
        assert list(solution["values"]) in returned
        assert set(solution["params"]) == {"model.commitment_cost", "model.num_vq_embeddings",
                                           "model/codebook"}

    rows, md = summarise(sweep, key="val/psnr")
    assert md.startswith("Jobs ranked by `val/psnr` (2 jobs).")
    assert [r["objective"] for r in rows] == sorted((v[0] for v in returned), reverse=True)
    assert {r["technique"] for r in rows} <= {"plain", "ema"}
