"""The phase-1 decision rule, run summaries and the `python -m mdvq.decide` command line."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mdvq.core.errors import DataError
from mdvq.core.summary import RunSummary, find_runs
from mdvq.decide import main
from mdvq.evaluation.decision import decide, thresholds, uniform_usage, write_decision
from mdvq.utils.cli import run as run_command

REPO = Path(__file__).resolve().parents[1]


def write_summary(run_dir: Path, model: str, metrics: dict, data_key="dk1", finished_at=None):
    """A minimal summary.json as mdvq.run writes it (phase-1 contract)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": model,
        "metrics": metrics,
        "data_key": data_key,
        "run_dir": str(run_dir),
        "finished_at": finished_at or "2025-01-01T00:00:00",
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def rule(*args, **kwargs):
    """`decide` with the project's thresholds (conf/decision/default.yaml) unless given."""
    return decide(*args, **{**thresholds(), **kwargs})


def test_thresholds_come_from_the_config():
    assert thresholds() == {"psnr_margin": 0.10, "usage_threshold": 0.80}


def test_vq_wins_only_when_both_conditions_hold():
    d = rule(psnr_vq=25.0, usage_vq=0.9, psnr_kl=20.0)
    assert d.verdict == "vqvae" and d.continue_vq
    assert d.psnr_required == pytest.approx(22.0)
    assert rule(25.0, 0.5, 20.0).verdict == "klvae"  # usage too low
    assert rule(21.0, 0.9, 20.0).verdict == "klvae"  # better, but by less than 10 %
    assert rule(18.0, 1.0, 20.0).verdict == "klvae"  # worse


def test_boundaries_are_strict():
    assert rule(22.0, 0.9, 20.0).verdict == "klvae"  # exactly +10 %
    assert rule(33.0, 0.9, 30.0).verdict == "klvae"  # exactly +10 % (1.1 * 30 rounds to 33.0)
    assert rule(22.01, 0.9, 20.0).verdict == "vqvae"
    assert rule(25.0, 0.8, 20.0).verdict == "klvae"  # usage exactly 0.8
    assert rule(25.0, 4 / 5, 20.0).verdict == "klvae"
    assert rule(25.0, 0.8 + 1e-15, 20.0).verdict == "klvae"  # 0.8 up to float rounding
    assert rule(25.0, 0.801, 20.0).verdict == "vqvae"


def test_margin_and_threshold_are_arguments():
    assert rule(21.0, 0.6, 20.0, psnr_margin=0.0, usage_threshold=0.5).verdict == "vqvae"
    assert rule(25.0, 0.9, 20.0, psnr_margin=0.3).verdict == "klvae"


def test_reasons_name_the_figures():
    d = rule(21.0, 0.5, 20.0)
    text = " ".join(d.reasons)
    assert "21.00 dB" in text and "22.00 dB" in text and "0.500" in text and "KL-VAE" in text


def test_bad_figures_raise():
    with pytest.raises(ValueError, match="psnr_vq"):
        rule(float("nan"), 0.9, 20.0)
    with pytest.raises(ValueError, match="usage_vq"):
        rule(25.0, 1.5, 20.0)
    with pytest.raises(ValueError, match="psnr_kl"):
        rule(25.0, 0.9, 0.0)


def test_write_decision_writes_every_figure(tmp_path):
    path = write_decision(rule(25.0, 0.9, 20.0), tmp_path)
    assert path == tmp_path / "decision.json"
    data = json.loads(path.read_text())
    assert data["verdict"] == "vqvae" and data["continue_vq"] is True
    assert data["psnr_vq"] == 25.0 and data["psnr_kl"] == 20.0 and data["usage_vq"] == 0.9
    assert data["psnr_margin"] == 0.1 and data["usage_threshold"] == 0.8
    assert data["psnr_required"] == pytest.approx(22.0)
    assert len(data["reasons"]) == 3


def test_usage_on_too_few_selections_is_reported_not_compared():
    # a uniform codebook of K=512 seen through N=512 selections shows 1 - (1 - 1/512)^512 = 0.632
    assert uniform_usage(512, 512) == pytest.approx(1 - (511 / 512) ** 512)
    assert uniform_usage(512, 512) == pytest.approx(0.6325, abs=1e-4)
    d = rule(25.0, 0.95, 20.0, usage_selections=512, num_codes=512)
    assert d.usage_comparable is False and d.verdict == "klvae"
    assert "too few code selections" in " ".join(d.reasons) and "512 code selections" in d.reasons[1]
    # 4096 selections of 512 codes: a uniform codebook shows 0.9997 > 0.8, comparable
    d = rule(25.0, 0.95, 20.0, usage_selections=4096, num_codes=512)
    assert d.usage_comparable is True and d.verdict == "vqvae"
    assert rule(25.0, 0.95, 20.0).usage_comparable is None  # count unknown: not judged


def test_find_runs_picks_kind_data_key_newest_first(tmp_path):
    root = tmp_path / "outputs"
    write_summary(root / "old", "klvae", {"test/psnr": 20}, "dk1", "2025-01-01T10:00:00")
    newest = write_summary(
        root / "d" / "new", "klvae", {"test/psnr": 21}, "dk1", "2025-01-02T09:00:00"
    )
    write_summary(root / "other", "klvae", {"test/psnr": 22}, "dk2", "2025-03-01T00:00:00")
    write_summary(root / "vq", "vqvae", {"test/psnr": 23}, "dk1", "2025-04-01T00:00:00")
    (root / "broken").mkdir()
    (root / "broken" / "summary.json").write_text("{not json")
    found = find_runs(root, model="klvae", data_key="dk1")
    assert [r.run_dir for r in found] == [newest, root / "old"]
    assert [r.run_dir for r in find_runs([tmp_path / "missing", root], data_key="dk2")] == [
        root / "other"]
    assert find_runs(root, model="klvae", data_key="dk3") == []


def test_finished_at_compares_timezones(tmp_path):
    # 10:00+02:00 is 08:00 UTC, earlier than 09:00Z
    write_summary(tmp_path / "a", "klvae", {}, "dk", "2025-01-01T10:00:00+02:00")
    write_summary(tmp_path / "b", "klvae", {}, "dk", "2025-01-01T09:00:00Z")
    assert find_runs(tmp_path)[0].run_dir == tmp_path / "b"


def test_run_summary_errors_name_the_file_and_kind(tmp_path):
    with pytest.raises(DataError, match="summary.json") as err:
        RunSummary.read(tmp_path)
    assert str(tmp_path) in str(err.value)
    write_summary(tmp_path / "kl", "klvae", {})
    with pytest.raises(DataError, match="model.vqvae: this is a 'klvae' run, expected 'vqvae'"):
        RunSummary.read(tmp_path / "kl", model="vqvae", key="model.vqvae")


def test_run_summary_paths_are_relative_to_the_run_and_survive_a_move(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (run / "checkpoints" / "best.ckpt").write_bytes(b"y")
    summary = RunSummary.new(run, "vqvae")
    summary.update(checkpoints={"best": summary.relative(run / "checkpoints" / "best.ckpt"),
                                "last": summary.relative(run / "checkpoints" / "last.ckpt")})
    summary.write()
    assert json.loads((run / "summary.json").read_text())["checkpoints"]["best"] == \
        "checkpoints/best.ckpt"
    moved = run.rename(tmp_path / "elsewhere")
    again = RunSummary.read(moved, model="vqvae")
    assert again.checkpoint("best") == moved / "checkpoints" / "best.ckpt"
    (moved / "checkpoints" / "best.ckpt").unlink()  # best missing: falls back to last
    assert again.checkpoint("best") == moved / "checkpoints" / "last.ckpt"


def test_cli_writes_decision_json(tmp_path, capsys):
    vq = write_summary(tmp_path / "vq", "vqvae", {"test/psnr": 30.0, "test/codebook_usage": 0.95})
    kl = write_summary(tmp_path / "kl", "klvae", {"test/psnr": 25.0})
    assert main([str(vq), str(kl)]) == vq / "decision.json"
    out = capsys.readouterr().out
    assert "decision: vqvae" in out
    data = json.loads((vq / "decision.json").read_text())
    # run folders relative to the decision file's folder (vq/decision.json)
    assert data["verdict"] == "vqvae" and data["kl_run"] == "../kl" and data["vq_run"] == "."
    # thresholds from the command line; out= elsewhere
    target = tmp_path / "d.json"
    argv = [str(vq), str(kl / "summary.json"), f"out={target}", "psnr_margin=0.25"]
    assert main(argv) == target
    assert json.loads(target.read_text())["verdict"] == "klvae"  # 30 is not > 31.25


def test_cli_errors_name_the_missing_file_or_key(tmp_path, capsys):
    vq = write_summary(tmp_path / "vq", "vqvae", {"test/psnr": 30.0})  # no codebook usage
    kl = write_summary(tmp_path / "kl", "klvae", {"test/psnr": 25.0})
    assert run_command(main, [str(vq), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "summary.json" in err
    assert run_command(main, [str(vq), str(kl)]) == 2
    err = capsys.readouterr().err
    assert "test/codebook_usage" in err and str(vq / "summary.json") in err
    assert run_command(main, [str(kl), str(vq)]) == 2  # swapped
    assert "swapped" in capsys.readouterr().err
    assert not (vq / "decision.json").exists()
    assert run_command(main, [str(vq), str(kl), "psnr_margin=ten"]) == 2
    assert "psnr_margin='ten': expected float" in capsys.readouterr().err
    assert run_command(main, ["--help"]) == 0
    assert "    python -m mdvq.decide VQ_RUN KL_RUN" in capsys.readouterr().out


def test_cli_runs_as_a_module(tmp_path):
    vq = write_summary(tmp_path / "vq", "vqvae", {"test/psnr": 21.0, "test/codebook_usage": 0.9})
    kl = write_summary(tmp_path / "kl", "klvae", {"test/psnr": 20.0})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run(
        [sys.executable, "-m", "mdvq.decide", str(vq), str(kl)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "decision: klvae" in run.stdout
    assert json.loads((vq / "decision.json").read_text())["verdict"] == "klvae"
    missing = subprocess.run(
        [sys.executable, "-m", "mdvq.decide", str(tmp_path / "none"), str(kl)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "summary.json" in missing.stderr


def test_runs_on_different_data_are_refused_unless_forced_and_recorded(tmp_path, capsys):
    from mdvq.runs.report import build_report

    vq = write_summary(tmp_path / "vq", "vqvae", {"test/psnr": 30.0, "test/codebook_usage": 0.95},
                       data_key="radar-aaa-64x64-split1")
    kl = write_summary(tmp_path / "kl", "klvae", {"test/psnr": 25.0},
                       data_key="iq-bbb-64x64-split1")
    assert run_command(main, [str(vq), str(kl)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"different data.*'radar-aaa-64x64-split1'.*'iq-bbb-64x64-split1'.*force=true",
                     err), err
    assert not (vq / "decision.json").exists(), "no verdict written for mismatched runs"
    assert run_command(main, [str(vq), str(kl), "force=true"]) == 0
    assert "forced (force=true) on different data" in capsys.readouterr().out
    data = json.loads((vq / "decision.json").read_text())
    assert data["vq_data_key"] == "radar-aaa-64x64-split1"
    assert data["kl_data_key"] == "iq-bbb-64x64-split1" and data["data_key_forced"] is True
    assert any("force=true" in r for r in data["reasons"])
    page = build_report([tmp_path])
    assert ("different data, decided with force=true: VQ radar-aaa-64x64-split1, "
            "KL iq-bbb-64x64-split1") in page
